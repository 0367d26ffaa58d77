"""Training metrics: console, JSONL and TensorBoard writers, FLOP counting and MFU.

One `MetricsWriter.write(step, metrics)` call emits the same scalars to three sinks:

* the console, as one compact line (`step 120 | loss 2.314 | lr 3.0e-04 | ...`);
* `WORKDIR/metrics.jsonl`, one JSON object per call (`{"step": 120, "loss": 2.314, ...}`),
  with `null` for values that are not defined (e.g. MFU on CPU);
* TensorBoard event files under `WORKDIR/tensorboard` (tensorboardX), one scalar per key.

Only JAX process 0 writes, so a multi-host run produces one set of logs.

FLOP accounting follows the PaLM convention (Chowdhery et al. 2022, appendix B): the model
FLOPs of one training token are

    6 * N  +  12 * L * D * T

where N is the number of parameters the token flows through (trainable and frozen alike: the
convention counts the algorithmic forward + backward work of a full training step, so MFU
stays comparable across fine-tuning recipes), L the number of transformer layers, D the
attention width (heads * head_dim), and T the sequence length (the attention score and value
matmuls, forward and backward, not halved for causality). MFU = achieved model FLOP/s divided
by the aggregate peak FLOP/s of the devices in use.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import jax

from wavepose_jax.files import write_atomic

# Peak dense bf16 FLOP/s per chip, keyed by a lowercase substring of `jax.Device.device_kind`.
# Ordered: the first matching substring wins, so more specific names come first.
PEAK_FLOPS_BY_DEVICE_KIND: tuple[tuple[str, float], ...] = (
    ("h200", 989e12),
    ("h100", 989e12),
    ("gh200", 989e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("a10g", 70e12),
    ("v100", 125e12),
    ("tpu v6", 918e12),
    ("tpu v5p", 459e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v4", 275e12),
    ("tpu v3", 123e12),
)


def peak_flops_per_device(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind, or None when unknown (e.g. CPU)."""
    kind = device_kind.lower()
    for key, flops in PEAK_FLOPS_BY_DEVICE_KIND:
        if key in kind:
            return flops
    return None


def peak_flops(devices: list[jax.Device] | None = None) -> float | None:
    """Aggregate peak FLOP/s of `devices` (default: all devices), or None if any is unknown."""
    devices = jax.devices() if devices is None else devices
    per_device = [peak_flops_per_device(d.device_kind) for d in devices]
    if not per_device or any(p is None for p in per_device):
        return None
    return float(sum(per_device))


def flops_per_token(*, num_params: int, num_layers: int, attention_dim: int, seq_len: int) -> float:
    """Model FLOPs of one training token: 6 * N + 12 * L * D * T (see the module docstring).

    Args:
      num_params: every parameter a token flows through, trainable and frozen.
      num_layers: transformer layers of the language model.
      attention_dim: heads * head_dim of the language model's attention.
      seq_len: length of the training sequence (soft tokens + text tokens).
    """
    return 6.0 * num_params + 12.0 * num_layers * attention_dim * seq_len


def model_flops_per_token(llm_config: Any, num_params: int, seq_len: int) -> float:
    """`flops_per_token` of a WaveLLM whose language model has `llm_config` (a Phi3Config).

    `num_params` counts every parameter of the composed model (base, LoRA, encoder, bridge);
    `seq_len` is soft tokens + text tokens.
    """
    return flops_per_token(
        num_params=num_params, num_layers=llm_config.num_hidden_layers,
        attention_dim=llm_config.num_attention_heads * llm_config.head_dim, seq_len=seq_len)


def mfu(tokens_per_s: float, flops_per_token_: float, peak_flops_: float | None) -> float | None:
    """Model FLOP utilisation in [0, 1], or None when the peak is unknown (CPU)."""
    if not peak_flops_ or not math.isfinite(tokens_per_s):
        return None
    return tokens_per_s * flops_per_token_ / peak_flops_


def _to_float(value: Any) -> float | None:
    """A scalar metric as a Python float; None stays None, NaN/inf become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _format(key: str, value: float | None) -> str:
    if value is None:
        return f"{key} -"
    if key in ("lr",) or (value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6)):
        return f"{key} {value:.2e}"
    if value == int(value) and abs(value) < 1e6:
        return f"{key} {int(value)}"
    return f"{key} {value:.4g}"


def _drop_records_after(path: str, step: int) -> None:
    """Rewrites a metrics.jsonl without the records of steps after `step` (atomically)."""
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, TypeError, AttributeError):
                continue  # a line cut short by a crash
    write_atomic(path, "".join(kept))


class MetricsWriter:
    """Writes scalar metrics to the console, `WORKDIR/metrics.jsonl` and TensorBoard."""

    def __init__(self, workdir: str | os.PathLike, use_tensorboard: bool = True,
                 console: TextIO | None = None, use_console: bool = True,
                 resume_step: int | None = None):
        """`console`: where the line goes (default stdout); `use_console=False`: no line.

        `resume_step`: the step a resumed run continues from; records of later steps (written
        before the run was interrupted, and about to be written again) are dropped, from
        metrics.jsonl and from TensorBoard, so every step appears once.
        """
        self._active = jax.process_index() == 0
        self._console = (console or sys.stdout) if use_console else None
        self._jsonl = None
        self._tb = None
        if not self._active:
            return
        os.makedirs(workdir, exist_ok=True)
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        if resume_step is not None and os.path.exists(self.jsonl_path):
            _drop_records_after(self.jsonl_path, resume_step)
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        if use_tensorboard:
            from tensorboardX import SummaryWriter  # Imported lazily: slow import.

            purge = {} if resume_step is None else {"purge_step": int(resume_step) + 1}
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), **purge)

    def write(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Emits `metrics` (name -> scalar) for `step`; `prefix` namespaces the keys ('val/')."""
        if not self._active:
            return
        values = {f"{prefix}{k}": _to_float(v) for k, v in metrics.items()}
        line = " | ".join([f"step {int(step)}"] + [_format(k, v) for k, v in values.items()])
        if self._console is not None:
            print(line, file=self._console, flush=True)
        record = {"step": int(step), "time": round(time.time(), 3), **values}
        try:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        except OSError as e:
            raise OSError(e.errno, f"{self.jsonl_path}: cannot write metrics "
                                   f"({e.strerror or e})") from None
        if self._tb is not None:
            for key, value in values.items():
                if value is not None:
                    self._tb.add_scalar(key, value, int(step))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
