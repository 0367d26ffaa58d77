#!/usr/bin/env bash
# Renders the HTML report of clips in headless Chromium, as a coach would open it.
#
#   tools/render_report.sh [--ckpt RUN] [--input CLIPS] [--html REPORT.html] [--out DIR]
#                          [--height PX]
#
# Writes the report of CLIPS (default examples/) with `infer.py --report`, using the run RUN
# (default runs/tiny), or takes an existing REPORT.html; then, in headless Chromium (Debian's
# `chromium` package), screenshots the page 1300 px wide into DIR (default /tmp/wavepose-report):
# report.png (its top PX, default 4000) and report-full.png (all of it); and fails when:
#   * the page logs anything to the browser console (errors, failed resources);
#   * the DOM Chromium built lacks the overview, a clip section's warnings or check box, its
#     per-rep table or its stick figures (or the no-keypoints note), or holds a <script>;
#   * the file is 2 MB or more.
# The test suite checks the same HTML with Python's parser (tests/test_report.py); this script
# is the check with a real browser, which CI cannot rely on.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CKPT="$ROOT/runs/tiny" INPUT="$ROOT/examples" HTML="" OUT="/tmp/wavepose-report" HEIGHT=4000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ckpt) CKPT="$2"; shift 2 ;;
    --input) INPUT="$2"; shift 2 ;;
    --html) HTML="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --height) HEIGHT="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v chromium >/dev/null || { echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2; }
mkdir -p "$OUT"
PYTHON="${PYTHON:-python}"
[[ -x "$ROOT/.venv/bin/python" ]] && PYTHON="$ROOT/.venv/bin/python"

if [[ -z "$HTML" ]]; then
  HTML="$OUT/report.html"
  # Exit status 1 means some clips were skipped (each said on stderr); the report is written.
  rc=0
  (cd "$ROOT" && "$PYTHON" infer.py --input "$INPUT" --ckpt "$CKPT" --report "$HTML" >/dev/null) \
    || rc=$?
  [[ $rc -le 1 ]] || exit "$rc"
fi
HTML="$(cd "$(dirname "$HTML")" && pwd)/$(basename "$HTML")"
size=$(stat -c %s "$HTML")
echo "report: $HTML ($((size / 1024)) KiB)"

PROFILE="$(mktemp -d)"
trap 'rm -rf "$PROFILE"' EXIT
chrome() {  # chrome URL ARGS...: headless Chromium, its log on stderr
  local url="$1"; shift
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$PROFILE" --enable-logging=stderr --v=0 "$@" "$url"
}

status=0
# One screenshot as tall as Chromium is asked for, trimmed to the page; its top HEIGHT px too.
chrome "file://$HTML" --window-size=1300,32000 --screenshot="$OUT/report-full.png" \
  2>"$OUT/chromium.log" >/dev/null
chrome "file://$HTML" --dump-dom 2>>"$OUT/chromium.log" >"$OUT/dom.html"
"$PYTHON" - "$OUT" "$HEIGHT" <<'EOF' || status=1
"""Trims the full-page screenshot to the page and writes its top as report.png."""
import sys

import numpy as np
from PIL import Image

out, height = sys.argv[1], int(sys.argv[2])
image = Image.open(f"{out}/report-full.png").convert("RGB")
ink = np.flatnonzero((np.asarray(image.convert("L")) < 250).any(axis=1))
bottom = int(ink.max()) + 40 if ink.size else 1
if bottom >= image.height:
    print(f"note: the page is taller than {image.height} px; the screenshot stops there")
image = image.crop((0, 0, image.width, min(bottom, image.height)))
image.save(f"{out}/report-full.png", optimize=True)
image.crop((0, 0, image.width, min(height, image.height))).save(f"{out}/report.png",
                                                                 optimize=True)
print(f"screenshots: {out}/report.png (the top {min(height, image.height)} px), "
      f"{out}/report-full.png (all {image.height} px)")
EOF

if grep -E ':CONSOLE(\([0-9]+\))?[:\]]' "$OUT/chromium.log"; then
  echo "FAIL: the page wrote to the browser console (above)" >&2
  status=1
fi
"$PYTHON" - "$OUT/dom.html" "$size" <<'EOF' || status=1
"""Checks the DOM Chromium built from the report."""
import html.parser
import sys

dom, size = open(sys.argv[1], encoding="utf-8").read(), int(sys.argv[2])


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.current, self.scripts, self.overview = [], None, 0, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "script":
            self.scripts += 1
        if tag == "table" and "overview" in classes:
            self.overview = True
        if tag == "section" and "clip" in classes:
            self.current = {"id": a.get("id"), "checks": False, "reps": False, "svg": 0,
                            "no_keypoints": False}
            self.sections.append(self.current)
        elif self.current is not None:
            self.current["checks"] |= bool({"warnings", "passed"} & set(classes))
            self.current["reps"] |= "reps" in classes
            self.current["svg"] += tag == "svg"
            self.current["no_keypoints"] |= "no-keypoints" in classes


page = Page()
page.feed(dom)
problems = []
if page.scripts:
    problems.append(f"{page.scripts} <script> elements")
if len(page.sections) > 1 and not page.overview:
    problems.append("no overview table")
for s in page.sections:
    missing = [k for k in ("checks", "reps") if not s[k]]
    if not s["svg"] and not s["no_keypoints"]:
        missing.append("stick figures or the no-keypoints note")
    if missing:
        problems.append(f"{s['id']}: no {', '.join(missing)}")
if size >= 2 * 1024 * 1024:
    problems.append(f"{size / 2**20:.2f} MB, not under 2 MB")
print(f"DOM: {len(page.sections)} clip sections, overview {'yes' if page.overview else 'no'}")
for p in problems:
    print(f"FAIL: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
[[ $status -eq 0 ]] && echo "OK: no console messages; every section has its checks, rep table and figures"
exit $status
