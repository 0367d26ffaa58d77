#!/usr/bin/env bash
# The real recipe at real size on this machine, end to end, measured (minutes; not a test).
#
#   benchmarks/realsize.sh [ROOT]        ROOT default /tmp/wavepose-realsize (~8 GB of files)
#
# Stages, each its own process, each under /usr/bin/time (peak resident memory, wall time):
#   base     python -m wavepose_jax.random_base --shape phi-3.5-mini   (random weights, no download;
#            kept in ROOT/base and reused by later runs)
#   train    train.py --config configs/base.py on examples/ (the clips and their own prompts,
#            unmodified): 2 steps of batch 1, a checkpoint at step 2
#   resume   the same command with train.steps=3: restores step 2, trains 1 more step, saves
#   infer    infer.py on one example clip, 8 new tokens
#   export   python -m wavepose_jax.export --peft (LoRA adapter + motion weights)
#
# Fails (exit 1) when a stage fails or its peak resident memory exceeds LIMIT_GB (18). The
# figures go to ROOT/summary.md (the table of benchmarks/README.md); every stage's full log
# is ROOT/<stage>.log, each line stamped with the seconds since the stage started.
set -euo pipefail

ROOT=${1:-/tmp/wavepose-realsize}
LIMIT_GB=${LIMIT_GB:-18}
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-python}
BASE=${BASE:-$ROOT/base}  # another directory: an existing base to use instead
RUN=$ROOT/run
PEFT=$ROOT/peft
CLIP=examples/synth-s27-00000.json
mkdir -p "$ROOT"
rm -rf "$RUN" "$PEFT"

# Lines stamped with the seconds since the stage started.
stamp() { "$PY" -u -c 'import sys, time
t0 = time.time()
for line in sys.stdin:
    print(f"{time.time() - t0:8.1f}s {line}", end="", flush=True)'; }

# stage NAME COMMAND...: runs COMMAND under /usr/bin/time; records peak RSS (kB) and wall (s).
stage() {
  local name=$1; shift
  echo "== $name: $*"
  if ! /usr/bin/time -f "%M %e" -o "$ROOT/$name.time" "$@" 2>&1 | stamp > "$ROOT/$name.log"; then
    tail -20 "$ROOT/$name.log"; echo "stage $name failed"; exit 1
  fi
  read -r kb secs < "$ROOT/$name.time"
  echo "   peak RSS $(awk -v k="$kb" 'BEGIN {printf "%.2f GB", k * 1024 / 1e9}'), wall ${secs}s"
  if awk -v k="$kb" -v l="$LIMIT_GB" 'BEGIN {exit !(k * 1024 > l * 1e9)}'; then
    echo "stage $name: peak resident memory above ${LIMIT_GB} GB"; exit 1
  fi
}

TRAIN=("$PY" train.py --config configs/base.py --workdir "$RUN" --config.llm.path="$BASE"
       --config.data.dir=examples --config.data.val_fraction=0 --config.train.batch_size=1
       --config.train.log_every=1 --config.train.eval_every=0 --config.train.ckpt_every=1000
       --config.train.num_eval_samples=0 --config.eval.synthetic_n=0 --config.eval.ood_n=0)

if [ -f "$BASE/model.safetensors.index.json" ]; then
  echo "== base: reusing $BASE"
else
  stage base "$PY" -m wavepose_jax.random_base --shape phi-3.5-mini --out "$BASE"
fi
stage train "${TRAIN[@]}" --config.train.steps=2
stage resume "${TRAIN[@]}" --config.train.steps=3
stage infer "$PY" infer.py --input "$CLIP" --ckpt "$RUN" --max_new_tokens 8
stage export "$PY" -m wavepose_jax.export --ckpt "$RUN" --peft "$PEFT"

"$PY" - "$ROOT" "$LIMIT_GB" <<'EOF'
"""ROOT/summary.md: one row per stage, from the time files, the stamped logs and metrics."""
import json, os, re, sys

root, limit = sys.argv[1], float(sys.argv[2])


def size(path):
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return f"{total / 1e9:.2f} GB" if total > 1e9 else f"{total / 1e6:.0f} MB"


def log(name):
    return open(os.path.join(root, f"{name}.log"), encoding="utf-8").read()


steps = {}
path = os.path.join(root, "run", "metrics.jsonl")
for line in open(path, encoding="utf-8"):
    record = json.loads(line)
    if "step_time_s" in record:
        steps[record["step"]] = record["step_time_s"]
rows = []
for name in ("base", "train", "resume", "infer", "export"):
    if not os.path.exists(os.path.join(root, f"{name}.time")):
        continue
    kb, wall = open(os.path.join(root, f"{name}.time")).read().split()
    text, load, compile_s, step, out = log(name), "", "", "", ""
    if name == "base":
        out = size(os.path.join(root, "base"))
    if name in ("train", "resume"):
        m = re.search(r"loaded in ([\d.]+)s", text)
        load = f"{float(m.group(1)):.0f} s" if m else ""
        m = re.search(r"train step compiled for (\d+) x (\d+) tokens in ([\d.]+)s", text)
        compile_s = f"{float(m.group(3)):.0f} s ({m.group(1)} x {m.group(2)})" if m else ""
        # train: step 2 (step 1 compiled); resume: its only step 3 less the compile before it
        last = 2 if name == "train" else 3
        if last in steps:
            step = steps[last] - (float(m.group(3)) if name == "resume" and m else 0.0)
            step = f"{step:.1f} s"
        ckpt = os.path.join(root, "run", "checkpoints", str(last))
        out = f"checkpoint {size(ckpt)}" if os.path.isdir(ckpt) else ""
    if name == "infer":  # stamps: the clip's summary is printed once the run is restored
        stamps = [float(m.group(1)) for m in re.finditer(r"^\s*([\d.]+)s ", text, re.M)]
        load = f"{stamps[0]:.0f} s (to the summary)" if stamps else ""
        out = f"8 new tokens, done at {stamps[-1]:.0f} s" if stamps else ""
    if name == "export":
        out = f"adapter {size(os.path.join(root, 'peft'))}"
    rows.append(f"| {name} | {int(kb) * 1024 / 1e9:.2f} GB | {float(wall):.0f} s | {load} | "
                f"{compile_s} | {step} | {out} |")
table = "\n".join(["| stage | peak RSS | wall | base load | train step compile | step time | output |",
                   "|---|---|---|---|---|---|---|", *rows])
open(os.path.join(root, "summary.md"), "w").write(table + "\n")
print(table)
EOF
echo "all stages passed within ${LIMIT_GB} GB; table in $ROOT/summary.md"
