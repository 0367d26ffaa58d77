"""A run's settings, typed: frozen dataclasses made once from the config at the command line.

    spec = RunSpec.from_config(config)   # a ConfigDict from `configs/*.py` (+ overrides) or a dict
    spec.data.seq_len                    # typed fields; no lookups with a fallback anywhere
    spec.model                           # what models/ is built from (`wavellm.WaveLLMSpec`)
    spec.to_dict()                       # what a checkpoint stores: the config's own layout

`configs/*.py` set every field's default and say what it means; `--config.group.field=value`
overrides one on the command line. `from_config` checks that every field is given, of its
type, and that no unknown field is: a mistake is one line naming the field. Below the command
line each part gets only its group: models the model spec, training the train spec
(`training/spec.py`), data loading the data spec.

A checkpoint written before a field existed reads with the value that field's absence meant
(`SAVED_BEFORE`), the one place such history is kept.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from wavepose_jax.data.faults import FAULT_CHANNELS, FAULTS
from wavepose_jax.data.schema import NUM_SIGNALS
from wavepose_jax.data.waves import REP_CHANNELS
from wavepose_jax.models.bridge import BridgeConfig
from wavepose_jax.models.encoder import EncoderConfig
from wavepose_jax.models.lora import LoraConfig
from wavepose_jax.models.wavellm import WaveLLMSpec
from wavepose_jax.sharding import MeshSpec
from wavepose_jax.training.distributed import DistributedSpec
from wavepose_jax.training.spec import TrainSpec

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str, field: str) -> Any:
    """'bfloat16' -> jnp.bfloat16; a ValueError naming the config field otherwise."""
    try:
        return DTYPES[str(name)]
    except KeyError:
        raise ValueError(f"config field '{field}': unknown dtype {name!r} "
                         f"(choose from {sorted(DTYPES)})") from None


@dataclasses.dataclass(frozen=True)
class LLMSpec:
    """The `llm` group: which base language model, and how it computes."""

    path: str  # HF directory, hub id (`id@revision`) or `wavepose_jax:assets/...`
    dtype: str  # compute dtype name
    param_dtype: str  # storage dtype name of the frozen base weights
    remat: bool
    scan_layers: bool
    attention_impl: str | None
    adapter: str  # PEFT adapter directory to start from ("" = fresh LoRA)

    def compute(self) -> dict[str, Any]:
        """The Phi3Config compute settings (`models.phi3.Phi3Config` fields) of this spec."""
        return dict(dtype=dtype_from_name(self.dtype, "llm.dtype"),
                    param_dtype=dtype_from_name(self.param_dtype, "llm.param_dtype"),
                    remat=self.remat, attention_impl=self.attention_impl or None,
                    scan_layers=self.scan_layers)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The `data` group: where clips come from and what the model sees of each."""

    dir: str
    synthetic_n: int
    synthetic_seed: int
    synthetic_keypoints: bool
    synthetic_workers: int
    val_fraction: float
    seq_len: int
    target_fps: float | None
    normalization: str
    rep_channels: bool
    fault_channels: bool
    max_prompt_tokens: int
    max_target_tokens: int
    buckets: tuple[int, ...]
    compact_prompt: bool

    @property
    def num_channels(self) -> int:
        """Encoder input channels: the 7 signals, then the rep and the fault channels if on."""
        return (NUM_SIGNALS + (len(REP_CHANNELS) if self.rep_channels else 0)
                + (len(FAULT_CHANNELS) if self.fault_channels else 0))


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """The `eval` group: generation budget and the end-of-run evaluation sets."""

    max_new_tokens: int
    batch_size: int
    heldout_dir: str
    synthetic_n: int
    synthetic_seed: int
    ood_n: int
    ood_seed: int


# Fields of a group that are not settings but set from the others (`RunSpec.model`).
_DERIVED = {EncoderConfig: ("num_signals", "max_len", "dtype", "param_dtype"),
            BridgeConfig: ("llm_dim", "num_faults", "dtype", "param_dtype")}

# Checkpoints written before a field existed: the value its absence meant.
SAVED_BEFORE: dict[str, Any] = {"llm.scan_layers": False, "data.rep_channels": False,
                                "data.fault_channels": False, "bridge.fault_tokens": False,
                                "encoder.input_gain": 1.0, "encoder.conv_kernel": 1}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Every setting of a run, by group (the groups of `configs/base.py`)."""

    llm: LLMSpec
    lora: LoraConfig
    encoder: EncoderConfig  # its num_signals / max_len are set by `model`, not configured
    bridge: BridgeConfig  # its llm_dim / num_faults / dtypes are set by `model` and the base
    data: DataSpec
    train: TrainSpec
    mesh: MeshSpec
    distributed: DistributedSpec
    eval: EvalSpec

    def __post_init__(self):
        for name in ("d_model", "state_dim"):  # the bridge reads the encoder's outputs
            if getattr(self.bridge, name) != getattr(self.encoder, name):
                raise ValueError(f"config field 'bridge.{name}': {getattr(self.bridge, name)} "
                                 f"differs from encoder.{name} "
                                 f"{getattr(self.encoder, name)}; the bridge reads the "
                                 "encoder's outputs")

    @classmethod
    def from_config(cls, config: Any) -> RunSpec:
        """The spec of a config (a ConfigDict or a nested mapping, e.g. a checkpoint's).

        Raises:
          ValueError: a field is missing, unknown or of the wrong type (one line naming it).
        """
        tree = json.loads(config.to_json_best_effort()) if hasattr(
            config, "to_json_best_effort") else config
        if not isinstance(tree, Mapping):
            raise ValueError(f"config: expected groups of fields, got {type(tree).__name__}")
        unknown = sorted(set(tree) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"config field '{unknown[0]}': unknown group")
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _group(hints[f.name], tree.get(f.name), f.name)
                      for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """The config's layout (JSON-ready), as a checkpoint stores it."""
        return {f.name: {k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(getattr(self, f.name)).items()
                         if k not in _DERIVED.get(type(getattr(self, f.name)), ())}
                for f in dataclasses.fields(self)}

    @property
    def model(self) -> WaveLLMSpec:
        """What the composed model is built from: the encoder reads `data.num_channels`, the
        bridge has a fault head iff the fault loss is on, new parameters draw from the seed."""
        return WaveLLMSpec(
            encoder=dataclasses.replace(self.encoder, num_signals=self.data.num_channels),
            bridge=dataclasses.replace(
                self.bridge, num_faults=len(FAULTS) if self.train.fault_loss_weight > 0 else 0),
            lora=self.lora, seed=self.train.seed)

    def replace(self, **groups: Mapping[str, Any]) -> RunSpec:
        """A copy with some fields of some groups changed: `spec.replace(train={"steps": 3})`."""
        return dataclasses.replace(self, **{
            name: dataclasses.replace(getattr(self, name), **fields)
            for name, fields in groups.items()})


def _group(cls: type, values: Any, name: str) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"config field '{name}': missing group")
    derived = _DERIVED.get(cls, ())
    fields = [f for f in dataclasses.fields(cls) if f.name not in derived]
    unknown = sorted(set(values) - {f.name for f in fields})
    if unknown:
        raise ValueError(f"config field '{name}.{unknown[0]}': unknown field")
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields:
        key = f"{name}.{f.name}"
        if f.name in values:
            out[f.name] = _typed(hints[f.name], values[f.name], key)
        elif key in SAVED_BEFORE:
            out[f.name] = SAVED_BEFORE[key]
        else:
            raise ValueError(f"config field '{key}': missing")
    return cls(**out)


def _typed(kind: Any, value: Any, key: str) -> Any:
    """`value` as the annotated type `kind`; ValueError naming `key` otherwise."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _typed(kind, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config field '{key}': expected a list, got {value!r}")
        return tuple(_typed(args[0], v, key) for v in value)
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}.get(kind)
    if ok is None:
        return value
    if not ok:
        raise ValueError(f"config field '{key}': expected {kind.__name__}, got {value!r}")
    return kind(value)
