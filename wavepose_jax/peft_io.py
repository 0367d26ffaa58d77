"""PEFT LoRA adapters <-> the LoRA deltas of the Flax Phi-3, and the motion weights beside them.

An adapter directory, as PEFT writes and reads it (``PeftModel.from_pretrained``):

    adapter_config.json         peft_type LORA, r, lora_alpha, target_modules, base model, ...
    adapter_model.safetensors   base_model.model.<HF module>.lora_A.weight  [r, in]
                                base_model.model.<HF module>.lora_B.weight  [out, r]

The Flax ``Linear`` keeps ``lora_a`` [in, r] and ``lora_b`` [r, out] beside its kernel [in, out],
so a tensor maps to its PEFT counterpart by a transpose; the scale is ``lora_alpha / r`` (or
``lora_alpha / sqrt(r)`` for rsLoRA adapters). Only Phi-3's fused projections carry adapters:
``qkv_proj``, ``o_proj``, ``gate_up_proj``, ``down_proj``; PyTorch-style names such as
``q_proj`` match nothing in Phi-3 and are refused.

Both forms of the decoder stack read and write the same adapter: in a scanned stack one
stacked Linear ([L, in, out], deltas [L, in, r] / [L, r, out]) serves the L modules
``model.layers.{i}.<name>``, slot i each (`module_slots`). A scanned stack adapts every layer
of a module or none, so an adapter of only some layers loads into the unrolled form only.

The motion side of a WaveLLM (encoder and bridge) travels in the same directory:

    motion.safetensors          encoder/... and bridge/... parameters by flattened NNX path
    motion_config.json          {"encoder": EncoderConfig, "bridge": BridgeConfig, "embed_rms"}
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from wavepose_jax.files import read_json_object
from wavepose_jax.models.bridge import BridgeConfig, WaveBridge
from wavepose_jax.models.encoder import EncoderConfig, WavePoseEncoder
from wavepose_jax.models.lora import LoraConfig, apply_lora, path_str
from wavepose_jax.models.phi3 import Linear, Phi3ForCausalLM, in_stacked_layers

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MOTION_CONFIG = "motion_config.json"
MOTION_WEIGHTS = "motion.safetensors"
PEFT_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")  # Phi-3's fused projections
_PREFIX = "base_model.model."  # PEFT's prefix before the transformers module name
# adapter_config.json fields whose non-default values this implementation cannot honour.
_UNSUPPORTED = {"use_dora": False, "lora_bias": False, "fan_in_fan_out": False,
                "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {},
                "alpha_pattern": {}, "target_parameters": None, "layer_replication": None,
                "trainable_token_indices": None}


class AdapterError(ValueError):
    """An adapter problem, reported as one line naming the file and the field."""


@dataclasses.dataclass(frozen=True)
class AdapterSpec:
    """What `adapter_config.json` says about a LoRA adapter."""

    rank: int
    alpha: float
    dropout: float
    use_rslora: bool
    target_modules: tuple[str, ...] | str  # PEFT form: module-name suffixes, or one regex
    base_model_name_or_path: str | None

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)


# ------------------------------------------------------------------------------------------------
# Module names


def linear_modules(llm: Phi3ForCausalLM) -> dict[str, Linear]:
    """Every Linear of the language model by its transformers module name (dots)."""
    return {path_str(path).replace("/", "."): module for path, module in nnx.iter_modules(llm)
            if isinstance(module, Linear)}


def adapted_modules(llm: Phi3ForCausalLM) -> dict[str, Linear]:
    """The Linear layers that carry LoRA deltas, by transformers module name."""
    return {name: m for name, m in linear_modules(llm).items() if m.lora_a is not None}


@dataclasses.dataclass(frozen=True)
class Slot:
    """One transformers module: a Linear, or layer `layer` of a stacked (scanned) Linear."""

    path: str  # module path of the Linear in the model ('model/layers/mlp/down_proj')
    linear: Linear
    layer: int | None  # slot on the leading layer axis; None for an unstacked Linear

    @property
    def shape(self) -> tuple[int, int]:
        """(in, out) features of this module's kernel."""
        return tuple(self.linear.kernel.shape[-2:])

    @property
    def rank(self) -> int | None:
        return None if self.linear.lora_a is None else int(self.linear.lora_a.shape[-1])


def module_slots(llm: Phi3ForCausalLM) -> dict[str, Slot]:
    """Every transformers module name of the language model's Linears -> its `Slot`; in a
    scanned stack `model.layers.3.mlp.down_proj` is slot 3 of the stacked `down_proj`."""
    slots = {}
    for path, module in nnx.iter_modules(llm):
        if not isinstance(module, Linear):
            continue
        name = path_str(path)
        if in_stacked_layers(name + "/kernel"):
            for i in range(module.kernel.shape[0]):
                dotted = name.replace("layers/", f"layers/{i}/", 1).replace("/", ".")
                slots[dotted] = Slot(name, module, i)
        else:
            slots[name.replace("/", ".")] = Slot(name, module, None)
    return slots


def _adapted_slots(llm: Phi3ForCausalLM) -> dict[str, Slot]:
    return {name: s for name, s in module_slots(llm).items() if s.linear.lora_a is not None}


def _peft_matches(target_modules: tuple[str, ...] | str, names) -> set[str]:
    """Module names PEFT adapts: a regex fully matching, or a listed name equal / dot-suffix."""
    if isinstance(target_modules, str):
        return {n for n in names if re.fullmatch(target_modules, n)}
    return {n for n in names if any(n == t or n.endswith("." + t) for t in target_modules)}


def _tensor_names(module: str) -> tuple[str, str]:
    return f"{_PREFIX}{module}.lora_A.weight", f"{_PREFIX}{module}.lora_B.weight"


def _host(x: jax.Array) -> np.ndarray:
    return np.ascontiguousarray(multihost_utils.process_allgather(x, tiled=True))


# ------------------------------------------------------------------------------------------------
# Export


def save_peft_adapter(llm: Phi3ForCausalLM, directory, *, base_model_name_or_path: str | None,
                      lora_dropout: float = 0.0) -> Path:
    """Writes the LoRA deltas of `llm` as a PEFT adapter directory (see module docstring).

    Args:
      llm: a Flax Phi-3 with LoRA attached (`lora.apply_lora`).
      directory: output directory (created).
      base_model_name_or_path: where transformers loads the base from (HF directory or hub id).
      lora_dropout: recorded in the config (training setting; no effect on the weights).

    Raises:
      ValueError: the model has no LoRA, LoRA sits outside the fused projections, or the
        layers disagree on rank or scale (PEFT's config holds one of each).
    """
    modules = _adapted_slots(llm)
    if not modules:
        raise ValueError("model has no LoRA deltas to export")
    outside = sorted(n for n in modules if n.rsplit(".", 1)[-1] not in PEFT_TARGETS)
    if outside:
        raise ValueError(f"LoRA on {outside[0]}: PEFT export supports {list(PEFT_TARGETS)} only")
    ranks = {s.rank for s in modules.values()}
    scales = {float(s.linear.lora_scale) for s in modules.values()}
    if len(ranks) > 1 or len(scales) > 1:
        raise ValueError(f"LoRA layers differ in rank {sorted(ranks)} or scale {sorted(scales)}")
    rank, scale = ranks.pop(), scales.pop()

    kinds = sorted({n.rsplit(".", 1)[-1] for n in modules})
    if _peft_matches(tuple(kinds), module_slots(llm)) == set(modules):
        target_modules: list[str] | str = kinds  # every layer: PEFT's plain list form
    else:  # a subset of layers: one regex naming exactly the adapted modules
        target_modules = "|".join(re.escape(n) for n in sorted(modules))

    tensors, hosts = {}, {}  # hosts: each Linear's deltas copied to the host once
    for name, slot in modules.items():
        if slot.path not in hosts:
            hosts[slot.path] = (_host(slot.linear.lora_a[...]), _host(slot.linear.lora_b[...]))
        a, b = (x if slot.layer is None else x[slot.layer] for x in hosts[slot.path])
        a_name, b_name = _tensor_names(name)
        tensors[a_name] = a.T  # [r, in]
        tensors[b_name] = b.T  # [out, r]
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": int(rank),
        "lora_alpha": scale * rank,
        "lora_dropout": float(lora_dropout),
        "target_modules": target_modules,
        "bias": "none",
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "revision": None,
        "layers_pattern": None,
        **_UNSUPPORTED,
    }
    directory = Path(directory)
    if jax.process_index() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                  str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


# ------------------------------------------------------------------------------------------------
# Import


def read_adapter_config(directory) -> AdapterSpec:
    """Parses and checks `adapter_config.json`; AdapterError names the offending field."""
    file = Path(directory) / ADAPTER_CONFIG
    cfg = read_json_object(file, AdapterError)
    if cfg.get("peft_type") != "LORA":
        raise AdapterError(f"{file}: peft_type: expected 'LORA', got {cfg.get('peft_type')!r}")
    for field in _UNSUPPORTED:
        value = cfg.get(field)
        if value is not None and value is not False and value != {} and value != []:
            raise AdapterError(f"{file}: {field}: {cfg[field]!r} is not supported")
    if cfg.get("bias", "none") != "none":
        raise AdapterError(f"{file}: bias: {cfg['bias']!r} is not supported (only 'none')")
    rank, alpha = cfg.get("r"), cfg.get("lora_alpha", 8)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise AdapterError(f"{file}: r: expected a positive integer, got {rank!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise AdapterError(f"{file}: lora_alpha: expected a number, got {alpha!r}")
    targets = cfg.get("target_modules")
    if isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
        targets = tuple(targets)
    elif not (isinstance(targets, str) and targets):
        raise AdapterError(f"{file}: target_modules: expected module names or a regex, "
                           f"got {targets!r}")
    return AdapterSpec(rank=rank, alpha=float(alpha), dropout=float(cfg.get("lora_dropout", 0.0)),
                       use_rslora=bool(cfg.get("use_rslora", False)), target_modules=targets,
                       base_model_name_or_path=cfg.get("base_model_name_or_path"))


def _resolve_targets(spec: AdapterSpec, llm: Phi3ForCausalLM, file: Path) -> list[str]:
    """The transformers module names the adapter adapts in `llm`; refuses unknown targets."""
    names = module_slots(llm)
    fused = {n for n in names if n.rsplit(".", 1)[-1] in PEFT_TARGETS}
    # Each listed name (or the one regex) must hit fused projections and nothing else.
    patterns = ([spec.target_modules] if isinstance(spec.target_modules, str)
                else [(t,) for t in spec.target_modules])
    for pattern in patterns:
        hit = _peft_matches(pattern, names)
        if not hit or not hit <= fused:
            shown = pattern if isinstance(pattern, str) else pattern[0]
            raise AdapterError(
                f"{file}: target_modules: {shown!r} is not a Phi-3 projection with LoRA support "
                f"(known: {list(PEFT_TARGETS)})")
    return sorted(_peft_matches(spec.target_modules, names))


def load_peft_adapter(llm: Phi3ForCausalLM, directory) -> AdapterSpec:
    """Loads a PEFT LoRA adapter into `llm` in place; returns its parsed config.

    Without LoRA on `llm`, LoRA is attached (`lora.apply_lora`) with the adapter's rank,
    alpha, dropout and modules. With LoRA already attached (a model built from a run config),
    the adapted modules and the rank must agree; the adapter's scale is used. `lora_a` /
    `lora_b` keep their dtype and sharding; values are transposed from PEFT's layout.

    Raises:
      AdapterError: missing files, unsupported or unknown settings, rank mismatch, or tensors
        that do not fit the base model (a different base).
    """
    directory = Path(directory)
    spec = read_adapter_config(directory)
    config_file, weights_file = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise AdapterError(f"{weights_file}: missing")
    targets = _resolve_targets(spec, llm, config_file)
    modules = module_slots(llm)
    linears = {modules[t].path: modules[t].linear for t in targets}
    for path in sorted(linears):  # a stacked Linear is adapted in all of its layers or none
        names = {n for n, slot in modules.items() if slot.path == path}
        if modules[min(names)].layer is not None and not names <= set(targets):
            raise AdapterError(f"{config_file}: target_modules: adapts only some layers of the "
                               f"scanned {path.replace('/', '.')}; load it with "
                               "llm.scan_layers=False")
    existing = _adapted_slots(llm)
    if existing:
        ranks = {s.rank for s in existing.values()}
        if ranks != {spec.rank}:
            raise AdapterError(f"{config_file}: r: rank mismatch, adapter has r={spec.rank}, "
                               f"the model's LoRA has rank {sorted(ranks)}")
        if sorted(existing) != targets:
            extra = sorted(set(existing) ^ set(targets))[0]
            raise AdapterError(f"{config_file}: target_modules: module {extra} is adapted in "
                               "only one of the adapter and the model's LoRA")

    expected = {t: _tensor_names(t) for t in targets}
    try:
        with safe_open(str(weights_file), framework="numpy") as f:
            present = set(f.keys())
            wanted = {n for pair in expected.values() for n in pair}
            unexpected = sorted(present - wanted)
            if unexpected:
                raise AdapterError(f"{weights_file}: unexpected tensor {unexpected[0]!r} (no such "
                                   f"adapted module in the base; a different base model?)")
            missing = sorted(wanted - present)
            if missing:
                raise AdapterError(f"{weights_file}: missing tensor {missing[0]!r}")
            values = {}
            for module, (a_name, b_name) in expected.items():
                a, b = f.get_tensor(a_name), f.get_tensor(b_name)  # [r, in], [out, r]
                d_in, d_out = modules[module].shape
                if a.ndim != 2 or b.ndim != 2 or a.shape[0] != spec.rank or b.shape[1] != spec.rank:
                    raise AdapterError(f"{weights_file}: {a_name}: rank mismatch, shapes "
                                       f"{a.shape} / {b.shape}, adapter_config.json r={spec.rank}")
                if a.shape[1] != d_in or b.shape[0] != d_out:
                    raise AdapterError(
                        f"{weights_file}: {a_name}: base mismatch, adapter maps {a.shape[1]} -> "
                        f"{b.shape[0]} features, the base layer {d_in} -> {d_out}")
                values[module] = (a.T, b.T)  # [in, r], [r, out]
    except SafetensorError as e:
        raise AdapterError(f"{weights_file}: unreadable ({e})") from None

    if not existing:
        lora_cfg = LoraConfig(rank=spec.rank, alpha=spec.alpha, dropout=spec.dropout,
                              targets=tuple(re.escape(p) for p in sorted(linears)))
        apply_lora(llm, lora_cfg, nnx.Rngs(0))
    for path, linear in linears.items():
        layers = sorted((modules[n].layer, n) for n in values if modules[n].path == path)
        if layers[0][0] is None:  # an unstacked Linear
            a, b = values[layers[0][1]]
        else:  # every layer of a stacked Linear, in layer order: [L, in, r], [L, r, out]
            a = np.stack([values[n][0] for _, n in layers])
            b = np.stack([values[n][1] for _, n in layers])
        _assign(linear.lora_a, a)
        _assign(linear.lora_b, b)
        linear.lora_scale = spec.scale
    return spec


def _assign(variable: nnx.Variable, value: np.ndarray) -> None:
    """Sets a variable's value, keeping its dtype and sharding."""
    current = variable.get_value()
    variable.set_value(jax.device_put(np.asarray(value).astype(current.dtype), current.sharding))


# ------------------------------------------------------------------------------------------------
# Motion encoder and bridge


def _config_json(config) -> dict[str, Any]:
    return {k: (jnp.dtype(v).name if k in ("dtype", "param_dtype") else v)
            for k, v in dataclasses.asdict(config).items()}


def save_motion(encoder: WavePoseEncoder, bridge: WaveBridge, directory) -> Path:
    """Writes encoder and bridge parameters and configs (see module docstring)."""
    tensors = {}
    for prefix, module in (("encoder", encoder), ("bridge", bridge)):
        for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
            tensors[f"{prefix}/{path_str(path)}"] = _host(var.get_value())
    config = {"encoder": _config_json(encoder.config), "bridge": _config_json(bridge.config),
              "embed_rms": float(bridge.embed_rms[...])}
    directory = Path(directory)
    if jax.process_index() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(directory / MOTION_WEIGHTS))
        (directory / MOTION_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def _config_from_json(cls, fields: Any, file: Path, group: str):
    if not isinstance(fields, dict):
        raise AdapterError(f"{file}: {group}: expected an object")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise AdapterError(f"{file}: {group}.{unknown[0]}: unknown field")
    kwargs = {k: (jnp.dtype(v) if k in ("dtype", "param_dtype") else v) for k, v in fields.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise AdapterError(f"{file}: {group}: {e}") from None


def load_motion(directory) -> tuple[WavePoseEncoder, WaveBridge]:
    """The encoder and bridge written by `save_motion`."""
    directory = Path(directory)
    config_file, weights_file = directory / MOTION_CONFIG, directory / MOTION_WEIGHTS
    if not weights_file.is_file():
        raise AdapterError(f"{weights_file}: missing")
    cfg = read_json_object(config_file, AdapterError)
    encoder_cfg = _config_from_json(EncoderConfig, cfg.get("encoder"), config_file, "encoder")
    bridge_cfg = _config_from_json(BridgeConfig, cfg.get("bridge"), config_file, "bridge")
    embed_rms = cfg.get("embed_rms")
    if not isinstance(embed_rms, (int, float)) or not embed_rms > 0:
        raise AdapterError(f"{config_file}: embed_rms: expected a positive number, "
                           f"got {embed_rms!r}")
    rngs = nnx.Rngs(0)
    modules = {"encoder": WavePoseEncoder(encoder_cfg, rngs=rngs),
               "bridge": WaveBridge(bridge_cfg, embed_rms=float(embed_rms), rngs=rngs)}
    try:
        with safe_open(str(weights_file), framework="numpy") as f:
            present = set(f.keys())
            for prefix, module in modules.items():
                flat = []
                for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
                    name, shape = f"{prefix}/{path_str(path)}", var.get_value().shape
                    if name not in present:
                        raise AdapterError(f"{weights_file}: missing tensor {name!r}")
                    value = f.get_tensor(name)
                    if value.shape != shape:
                        raise AdapterError(f"{weights_file}: tensor {name!r}: shape {value.shape}, "
                                           f"{config_file.name} implies {shape}")
                    present.discard(name)
                    flat.append((path, var.replace(jnp.asarray(value, var.get_value().dtype))))
                nnx.update(module, nnx.from_flat_state(flat))
    except SafetensorError as e:
        raise AdapterError(f"{weights_file}: unreadable ({e})") from None
    if present:
        raise AdapterError(f"{weights_file}: unexpected tensor {sorted(present)[0]!r}")
    return modules["encoder"], modules["bridge"]
