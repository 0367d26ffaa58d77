"""LoRA as low-rank deltas on the language model's Linear layers, and the trainable predicate.

A targeted Linear (phi3.Linear, `kernel` [in, out]) gains

    lora_a [in, r]  ~ U(-1/sqrt(in), 1/sqrt(in))   (PEFT's kaiming-uniform with a = sqrt(5))
    lora_b [r, out] = 0
    lora_scale = alpha / r,   lora_dropout = Dropout(p) on the LoRA branch input
                              (deterministic unless viewed with deterministic=False)

so y = x @ kernel + lora_scale * (dropout(x) @ lora_a) @ lora_b, which equals the base layer
until B moves. Base parameter paths are unchanged: the deltas sit beside the kernel
(`.../self_attn/qkv_proj/lora_a`), so Hugging Face weights load and PEFT adapters export
without renaming.

Targets are regexes over module paths relative to the language model; the defaults hit
Phi-3's fused projections (`qkv_proj`, `o_proj`, `gate_up_proj`, `down_proj`) in every layer.
In a scanned (stacked) decoder stack a Linear's kernel is [L, in, out]; its deltas are stacked
the same way (`lora_a` [L, in, r], `lora_b` [L, r, out], one dropout RNG stream per layer),
and a target adapts all L layers of the module it names.

`is_trainable(path, trainable)` is the one predicate deciding what trains (`trainable`: the
run's `train.trainable` regexes over the flattened parameter path of the composed model, e.g.
`llm/model/layers/3/mlp/down_proj/lora_b`); `trainable_filter(trainable)` turns it into an NNX
filter for `nnx.split`, and the optimizer labels (training/optim.py) are derived from it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# Fused Phi-3 projections of every decoder layer.
DEFAULT_TARGETS: tuple[str, ...] = (
    r".*self_attn/(qkv_proj|o_proj)",
    r".*mlp/(gate_up_proj|down_proj)",
)
# Names of the LoRA parameters beside a kernel (the only place they are spelled).
LORA_A, LORA_B = "lora_a", "lora_b"
LORA_PARAMS: tuple[str, ...] = (LORA_A, LORA_B)
# Encoder, bridge and the LoRA deltas; `(".*",)` trains everything (full fine-tuning).
DEFAULT_TRAINABLE: tuple[str, ...] = (r"encoder/.*", r"bridge/.*", rf".*/({LORA_A}|{LORA_B})")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Hyper-parameters of the LoRA deltas."""

    rank: int = 32  # r; 0 disables LoRA
    alpha: float = 64.0  # scale = alpha / r
    dropout: float = 0.05  # dropout on the LoRA branch input (training only)
    targets: tuple[str, ...] = DEFAULT_TARGETS  # regexes over module paths of the LLM


def path_str(path: Sequence[Any]) -> str:
    """('llm', 'model', 'layers', 0, 'mlp') -> 'llm/model/layers/0/mlp'.

    Accepts NNX paths (strings and ints) and JAX key paths (DictKey / SequenceKey / GetAttrKey;
    the trailing `.value` of an NNX Variable is dropped).
    """
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            key = key.key
        elif isinstance(key, jax.tree_util.SequenceKey):
            key = key.idx
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name == "value":
                continue
            key = key.name
        parts.append(str(key))
    return "/".join(parts)


def is_lora_path(path: Sequence[Any] | str) -> bool:
    """Whether a parameter path (keys, or a '/'- or '.'-joined string) names a LoRA delta."""
    if isinstance(path, str):
        path = path.replace(".", "/").split("/")
    return any(str(getattr(k, "key", getattr(k, "name", k))) in LORA_PARAMS for k in path)


def _has_lora_hook(module: Any) -> bool:
    return isinstance(module, nnx.Module) and hasattr(module, "kernel") and hasattr(module, LORA_A)


def lora_modules(model: nnx.Module, targets: Sequence[str]) -> list[tuple[str, nnx.Module]]:
    """(path, module) of every Linear with the LoRA hook whose path fully matches a target."""
    patterns = [re.compile(t) for t in targets]
    found = []
    for path, module in nnx.iter_modules(model):
        name = path_str(path)
        if _has_lora_hook(module) and any(p.fullmatch(name) for p in patterns):
            found.append((name, module))
    return found


def apply_lora(model: nnx.Module, cfg: LoraConfig, rngs: nnx.Rngs) -> int:
    """Attaches LoRA deltas in place to the targeted Linear layers of `model`.

    Args:
      model: the language model (e.g. phi3.Phi3ForCausalLM); its Linear layers expose the hook.
      cfg: the LoRA hyper-parameters.
      rngs: `params` draws A; `dropout` seeds the LoRA dropout streams.

    Returns:
      The number of LoRA parameters added (0 when rank is 0).

    Raises:
      ValueError: the targets match no Linear layer, or rank/alpha/dropout are out of range.
    """
    if cfg.rank < 0:
        raise ValueError(f"config field 'lora.rank': must be >= 0, got {cfg.rank}")
    if cfg.rank == 0:
        return 0
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"config field 'lora.dropout': must be in [0, 1), got {cfg.dropout}")
    modules = lora_modules(model, cfg.targets)
    if not modules:
        raise ValueError(f"config field 'lora.targets': {list(cfg.targets)} match no Linear "
                         "layer of the language model")
    added = 0
    for _, linear in modules:
        *stack, d_in, d_out = linear.kernel.shape  # [in, out], or [L, in, out] when stacked
        bound = 1.0 / math.sqrt(d_in)
        linear.lora_a = nnx.Param(jax.random.uniform(
            rngs.params(), (*stack, d_in, cfg.rank), jnp.float32, -bound, bound))  # [in, r]
        linear.lora_b = nnx.Param(jnp.zeros((*stack, cfg.rank, d_out), jnp.float32))  # [r, out]
        linear.lora_scale = cfg.alpha / cfg.rank
        # Off unless a caller views the model with deterministic=False (WaveLLM training).
        linear.lora_dropout = (_dropout(cfg.dropout, rngs, tuple(stack))
                               if cfg.dropout > 0 else None)
        added += math.prod(stack) * cfg.rank * (d_in + d_out)
    return added


def _dropout(rate: float, rngs: nnx.Rngs, stack: tuple[int, ...]) -> nnx.Dropout:
    """A Dropout (deterministic until viewed otherwise) whose `dropout` RNG stream has one key
    per layer of a stacked Linear (`stack` = (L,)), or a single key (`stack` = ())."""
    dropout = nnx.Dropout(rate, deterministic=True, rngs=rngs)
    if stack:
        dropout.rngs = nnx.RngStream(jax.random.split(rngs.dropout(), stack), tag="dropout")
    return dropout


def is_trainable(path: Sequence[Any] | str, trainable: Sequence[str]) -> bool:
    """Whether the parameter at `path` trains: one of the `trainable` regexes (a run's
    `train.trainable`) fully matches it.

    `path` is a flattened parameter path of the composed model (`encoder/...`, `bridge/...`,
    `llm/model/layers/0/self_attn/qkv_proj/lora_a`) as a string or a tuple of keys.
    """
    name = path if isinstance(path, str) else path_str(path)
    return any(re.fullmatch(p, name) for p in trainable)


def trainable_filter(trainable: Sequence[str]) -> nnx.All:
    """NNX filter selecting the trainable parameters: `nnx.Param` and `is_trainable`."""
    return nnx.All(nnx.Param, lambda path, _: is_trainable(path, trainable))
