"""What the benchmarks share: the machine's description and ceilings, and where a step's time
goes, op by op, on each side.

* `PHI3_CPU_SHAPE` / `PHI3_TINY_SHAPE`: the language model the CPU benchmarks race.
* `machine()`: CPU model, ISA extensions (AVX-512, AMX), core count, load.
* `quiet_openmp()`: set before torch is imported. Both frameworks share the same cores in one
  process; torch's OpenMP threads otherwise keep spinning after each of its ops and take the
  cores from XLA's next op (measured: the JAX train step 10-25% slower right after a torch step).
* `matmul_ceiling()`: the FLOP/s of a large fp32 matmul in JAX and in torch.
* `read_bandwidth()`: bytes/s of a sum over a 256 MiB array (the decode roofline's rate).
* `jax_profile()` / `torch_profile()`: a JAX trace (jax.profiler; XLA:CPU records one event per
  executed thunk, named after its HLO instruction) and torch.profiler's self time per operator,
  both per step. Ops that XLA runs concurrently overlap in the trace, so the JAX column can sum to
  a little more than the step. With `OPPROFILE_DETAIL=FILE` the 60 slowest instructions (with
  their HLO text) go to FILE and the compiled program to FILE.hlo.

The JAX events are grouped by kind: the instruction name without its numeric suffix, and for a
fusion also the operation at its root (a `dot` fusion is a matmul with its fused epilogue; a
`ynn_fusion` is a matmul or elementwise block run by the YNNPACK library), read from the
compiled program's text.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from typing import Callable

import numpy as np

# The Phi-3-shaped language model every CPU benchmark races (random fp32 weights built by
# transformers): Phi-3's vocabulary and layout at hidden 512, 8 layers; and a tiny one that
# only checks that a script runs.
PHI3_CPU_SHAPE = dict(vocab_size=32064, hidden_size=512, intermediate_size=1536,
                      num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                      max_position_embeddings=4096, original_max_position_embeddings=4096,
                      pad_token_id=0, eos_token_id=None)
PHI3_TINY_SHAPE = dict(PHI3_CPU_SHAPE, vocab_size=512, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)

# peft's names of the four projections the project adapts (lora.DEFAULT_TARGETS)
PEFT_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


def quiet_openmp() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def machine() -> dict:
    """CPU model, the ISA extensions that matter for matmuls, cores, load average."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("Flags"):
                flags = set(line.split(":", 1)[1].split())
    except (OSError, subprocess.CalledProcessError):
        pass
    isa = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"),
                                     ("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX-BF16"),
                                     ("amx_int8", "AMX-INT8")) if flag in flags]
    return {"cpu": name, "isa": ", ".join(isa) or "unknown", "cores": len(os.sched_getaffinity(0)),
            "load": os.getloadavg()}


def versions() -> str:
    import flax
    import jax
    import torch
    import transformers

    text = (f"jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}")
    try:
        import peft

        text += f", peft {peft.__version__}"
    except ImportError:
        pass
    return text


def matmul_ceiling(n: int, repeats: int) -> dict[str, float]:
    """FLOP/s of an n x n fp32 matmul in JAX and in torch (median of `repeats` after a warm-up)."""
    import jax
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), np.float32)
    b = rng.standard_normal((n, n), np.float32)
    mm = jax.jit(jnp.matmul)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    times = interleaved({"jax": lambda: mm(ja, jb).block_until_ready(),
                         "torch": lambda: torch.matmul(ta, tb)}, repeats)
    return {k: 2.0 * n ** 3 / statistics.median(v) for k, v in times.items()}


def read_bandwidth(mib: float = 256, repeats: int = 10) -> float:
    """Bytes/s that XLA:CPU reads in a sum over a `mib` MiB float32 array, read again and
    again (median): a working set that fits the last-level cache reads faster than DRAM's."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((int(mib * 2 ** 20) // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    times = interleaved({"sum": lambda: total(x).block_until_ready()}, repeats)["sum"]
    return x.nbytes / statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call, the functions taking turns (so they see the same background load)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


_SUFFIX = re.compile(r"(\.\d+)+$")


def _fusion_kinds(hlo_text: str) -> dict[str, str]:
    """Instruction name -> a short kind for every instruction of the compiled program text."""
    kinds: dict[str, str] = {}
    roots: dict[str, str] = {}
    comp = None
    for line in hlo_text.splitlines():
        line = line.strip()
        head = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{$", line)
        if head and "=" not in line.split("{")[0]:
            comp = head.group(1)
            continue
        m = re.match(r"^(ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+\s+([\w\-]+)\(", line)
        if not m:
            continue
        name, op = m.group(2), m.group(3)
        if m.group(1) and comp:
            roots[comp] = op
        if op == "fusion":
            called = re.search(r"calls=%?([\w.\-]+)", line)
            kind = re.search(r"kind=(\w+)", line)
            kinds[name] = f"fusion[{called.group(1) if called else ''}|{kind.group(1) if kind else ''}]"
        else:
            kinds[name] = op
    for name, kind in list(kinds.items()):
        if kind.startswith("fusion["):
            called, fkind = kind[7:-1].split("|")
            root = roots.get(called, "?")
            kinds[name] = f"fusion({fkind}, root {root})"
    return kinds


def jax_profile(step: Callable[[], object], compiled_text: str, repeats: int = 2,
                top: int = 15) -> list[tuple[str, float, float]]:
    """Runs `step` `repeats` times under jax.profiler; returns (kind, ms per step, share)."""
    import jax

    kinds = _fusion_kinds(compiled_text)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(repeats):
                step()
        path = sorted(glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"),
                                recursive=True))[-1]
        with gzip.open(path) as f:
            data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    totals: collections.Counter = collections.Counter()
    per_inst: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e["name"].startswith(("$", "end: ")):
            continue
        name = e["name"]
        kind = kinds.get(name) or kinds.get(_SUFFIX.sub("", name))
        if kind is None:
            continue  # runtime bookkeeping, not an op of the program
        totals[kind] += e.get("dur", 0.0) / 1e3 / repeats
        per_inst[name] += e.get("dur", 0.0) / 1e3 / repeats
    if os.environ.get("OPPROFILE_DETAIL"):
        lines = {re.match(r"^(?:ROOT\s+)?%?([\w.\-]+)", l.strip()).group(1): l.strip()
                 for l in compiled_text.splitlines() if re.match(r"^\s*(ROOT\s+)?%?[\w.\-]+\s*=", l)}
        with open(os.environ["OPPROFILE_DETAIL"], "w") as f:
            for name, ms in per_inst.most_common(60):
                f.write(f"{ms:9.1f} ms  {lines.get(name, name)[:400]}\n")
        with open(os.environ["OPPROFILE_DETAIL"] + ".hlo", "w") as f:
            f.write(compiled_text)
    return _table(totals, top)


def torch_profile(step: Callable[[], object], repeats: int = 2,
                  top: int = 15) -> list[tuple[str, float, float]]:
    """Runs `step` `repeats` times under torch.profiler; returns (op, self ms per step, share)."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    totals: collections.Counter = collections.Counter()
    for avg in prof.key_averages():
        totals[avg.key] += avg.self_cpu_time_total / 1e3 / repeats
    return _table(totals, top)


def _table(totals: collections.Counter, top: int) -> list[tuple[str, float, float]]:
    total = sum(totals.values()) or 1.0
    rows = [(k, v, v / total) for k, v in totals.most_common(top)]
    rest = total - sum(v for _, v, _ in rows)
    rows.append(("(all other ops)", rest, rest / total))
    rows.append(("total", total, 1.0))
    return rows


def markdown(title: str, rows: list[tuple[str, float, float]]) -> str:
    lines = [f"| {title} | ms per step | share |", "|---|---|---|"]
    lines += [f"| `{k}` | {v:.1f} | {100 * s:.0f}% |" for k, v, s in rows]
    return "\n".join(lines)
