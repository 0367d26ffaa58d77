"""The real train step's memory and compile time from shapes alone, for several settings.

    python benchmarks/aot_table.py [--write-readme]

runs `python -m wavepose_jax.training.aot --config configs/base.py` (Phi-3.5-mini-instruct
shapes, bf16, LoRA r=32, no weights read) once per row below, each in its own process, and
prints one markdown table: batch x text tokens in {1 x 512, 4 x 1024}, `llm.remat` on and
off, the scanned stack (`llm.scan_layers`, the default) and, for compile time, the unrolled
stack of 32 layers at 1 x 512. With --write-readme the table replaces the one between the
`aot-results` markers of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parent.parent
ROWS = [  # (batch, tokens, remat, scan_layers)
    (1, 512, True, True), (1, 512, False, True), (4, 1024, True, True), (4, 1024, False, True),
    (1, 512, True, False), (1, 512, False, False),
]
GiB = 2**30


def measure(batch: int, tokens: int, remat: bool, scan: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "aot.json")
        cmd = [sys.executable, "-m", "wavepose_jax.training.aot", "--config",
               str(ROOT / "wavepose_jax" / "configs" / "base.py"), f"--tokens={tokens}",
               f"--json={out}", f"--config.train.batch_size={batch}",
               f"--config.llm.remat={remat}", f"--config.llm.scan_layers={scan}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "JAX_PLATFORMS": "cpu"})
        if proc.returncode != 0:
            sys.exit(f"aot failed for {batch} x {tokens}, remat {remat}, scan {scan}:\n"
                     f"{proc.stderr[-2000:]}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"XLA:CPU (jax {jax.__version__}); the compiled program of one device, "
             "bytes from `compiled.memory_analysis()`.", "",
             "| batch x tokens | stack | remat | argument | output | temp | peak | compile |",
             "|---|---|---|---|---|---|---|---|"]
    for batch, tokens, remat, scan in ROWS:
        r = measure(batch, tokens, remat, scan)
        row = (f"| {batch} x {tokens} | {'scanned' if scan else 'unrolled'} | "
               f"{'on' if remat else 'off'} | {r['argument'] / GiB:.2f} GiB | "
               f"{r['output'] / GiB:.2f} GiB | {r['temp'] / GiB:.2f} GiB | "
               f"{r['peak'] / GiB:.2f} GiB | {r['lower_s'] + r['compile_s']:.0f} s |")
        print(row, flush=True)
        lines.append(row)
    table = "\n".join(lines)
    print(table)
    if args.write_readme:
        readme = ROOT / "benchmarks" / "README.md"
        text = readme.read_text(encoding="utf-8")
        new, n = re.subn(r"(<!-- aot-results -->\n).*?(<!-- /aot-results -->)",
                         lambda m: m.group(1) + table + "\n" + m.group(2), text, flags=re.S)
        if n != 1:
            sys.exit(f"{readme}: no <!-- aot-results --> markers")
        readme.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
