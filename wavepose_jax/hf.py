"""Hugging Face Phi-3 checkpoints <-> Flax ``Phi3ForCausalLM``.

Loading reads ``config.json`` and ``model.safetensors`` (or sharded files with
``model.safetensors.index.json``) tensor by tensor through safetensors' numpy API, transposes
dense kernels from HF's [out, in] to Flax's [in, out], casts, and places every tensor straight
onto its target sharding. The model is built abstractly (``nnx.eval_shape``), so the full model
never exists in host memory. Saving writes the same format back for transformers.

Every weight file read is also hashed (SHA-256 of its bytes, computed in a background thread
while the loader reads the file, `base_record.Digester`; hashlib releases the GIL, so this costs
next to no time): `load_weights` returns the digests with the model (`LoadedWeights`), and a
checkpoint records them so that a changed base is refused (base_record.py,
training/checkpoint.py). A truncated or damaged safetensors file is a one-line `WeightsError`
naming it.

Both forms of the decoder stack (``Phi3Config.scan_layers``) read and write the same files: a
scanned stack keeps ``model.layers.{i}.<name>`` in slot i of one stacked leaf [L, ...] (as raw
uint16 bits for a 16-bit dtype, see models/phi3.py). Loading allocates each stacked leaf once,
on its sharding, and writes every layer's tensor into its slot in place (a donated update), so
no leaf exists twice and nothing is widened on the way. Which leaf, slot and transpose each HF
tensor has is `hf_layout.py`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from wavepose_jax import sharding as sharding_lib
from wavepose_jax.base_record import Digester, UnreadableFileError
from wavepose_jax.files import read_json_object
from wavepose_jax.hf_layout import TensorEntry, hf_entries
from wavepose_jax.models.lora import is_lora_path
from wavepose_jax.models.phi3 import (BITS, Linear, Phi3Config, Phi3ForCausalLM, from_bits,
                                      to_bits)

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SHARD_RE = re.compile(r"model-\d+-of-\d+\.safetensors$")
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")  # non-persistent buffers in old checkpoints
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


class WeightsError(ValueError):
    """A checkpoint problem, reported as one line naming the file and the field."""


# ------------------------------------------------------------------------------------------------
# Locating files


# A base inside this package (the tiny demo base) is named relative to the package, so a run
# that records it stays valid wherever the package is installed: "wavepose_jax:assets/tiny-phi3".
PACKAGE_PREFIX = "wavepose_jax:"
_PACKAGE_DIR = Path(__file__).resolve().parent


def _is_repo_id(s: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w.-]+)?", s)) and not s.startswith((".", "~"))


def resolve(path_or_repo_id: str | os.PathLike) -> Path:
    """The local directory of a base model.

    Accepts a local directory; a package path `wavepose_jax:<path inside the package>`; or a
    hub id, optionally pinned to a revision (`org/name@<commit>`), fetched through the Hugging
    Face cache (offline aware).
    """
    text = str(path_or_repo_id)
    if text.startswith(PACKAGE_PREFIX):
        path = _PACKAGE_DIR / text[len(PACKAGE_PREFIX):]
        if not path.is_dir():
            raise WeightsError(f"{text}: not in this installation of wavepose_jax ({path})")
        return path
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise WeightsError(f"{path}: not a directory")
    if not _is_repo_id(text):
        raise WeightsError(f"{path}: directory not found")
    from huggingface_hub import snapshot_download

    repo_id, _, revision = text.partition("@")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None,
                                      allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # network, auth, offline cache miss: one line for the user
        first = str(e).splitlines()[0] if str(e) else ""
        raise WeightsError(f"{text}: no such local directory and hub download failed "
                           f"({type(e).__name__}: {first})") from None


def portable(path_or_repo_id: str | os.PathLike) -> str:
    """How a run records its base so that the run can move: a directory inside this package as
    `wavepose_jax:<relative path>`; a hub id pinned to the revision it resolved to
    (`org/name@<commit>`); another local directory as its absolute path."""
    text = str(path_or_repo_id)
    if text.startswith(PACKAGE_PREFIX):
        return text
    local = Path(text).expanduser()
    if local.is_dir():
        local = local.resolve()
        if _PACKAGE_DIR in local.parents:
            return PACKAGE_PREFIX + local.relative_to(_PACKAGE_DIR).as_posix()
        return str(local)
    if _is_repo_id(text) and "@" not in text:
        snapshot = resolve(text)
        if snapshot.parent.name == "snapshots":  # the cache's folder name is the commit
            return f"{text}@{snapshot.name}"
    return text


def load_config(path_or_repo_id, **overrides) -> Phi3Config:
    """Reads ``config.json`` into a ``Phi3Config`` (overrides: compute settings or HF fields)."""
    file = resolve(path_or_repo_id) / CONFIG_FILE
    hf = read_json_object(file, WeightsError)
    try:
        return Phi3Config.from_hf(hf, **overrides)
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{file}: {e}") from None


# Files of a saved transformers tokenizer.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")


def load_tokenizer(path_or_repo_id, required: bool = True):
    """transformers' tokenizer (AutoTokenizer) stored with the checkpoint.

    With `required=False`, None when the directory holds no tokenizer files.
    """
    from transformers import AutoTokenizer

    directory = resolve(path_or_repo_id)
    if not required and not any((directory / f).is_file() for f in TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as e:
        raise WeightsError(f"{directory}: no usable tokenizer ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None


GENERATION_CONFIG_FILE = "generation_config.json"
# Phi-3's stop tokens, looked up in the tokenizer when the base has no generation_config.json.
STOP_TOKENS = ("<|end|>", "<|assistant|>", "<|endoftext|>")


def load_generation_config(path_or_repo_id) -> dict:
    """The base's `generation_config.json` as a dict ({} when it has none)."""
    file = resolve(path_or_repo_id) / GENERATION_CONFIG_FILE
    return read_json_object(file, WeightsError) if file.is_file() else {}


def stop_ids(path_or_repo_id, tokenizer=None) -> tuple[int, ...]:
    """Token ids that end generation: the `eos_token_id` of the base's generation config (an id
    or a list, as Phi-3.5 ships [32007, 32001, 32000]); without one, the ids of Phi-3's stop
    tokens in `tokenizer`, else the config.json's eos."""
    eos = load_generation_config(path_or_repo_id).get("eos_token_id")
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids and tokenizer is not None:
        for token in STOP_TOKENS:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != tokenizer.unk_token_id:
                ids.append(int(token_id))
    if not ids:
        eos = load_config(path_or_repo_id).eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise WeightsError(f"{resolve(path_or_repo_id) / GENERATION_CONFIG_FILE}: eos_token_id: "
                           f"expected token ids, got {eos!r}")
    return tuple(dict.fromkeys(int(i) for i in ids))


def generation_config_for(path_or_repo_id, stop_token_ids) -> dict:
    """generation_config.json content for a model derived from this base: the base's own, with
    `eos_token_id` naming every stop id (so transformers' generate() stops where we stop)."""
    config = dict(load_generation_config(path_or_repo_id))
    config["eos_token_id"] = list(stop_token_ids)
    return config


def _tensor_files(directory: Path) -> dict[str, Path]:
    """Maps every tensor name of the checkpoint to the safetensors file holding it."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise WeightsError(f"{index}: weight_map: unreadable ({e!r})") from None
        files = {name: directory / f for name, f in weight_map.items()}
        for name, f in files.items():
            if not f.is_file():
                raise WeightsError(f"{index}: weight_map[{name!r}]: file {f.name} missing")
        return files
    shards = sorted(p for p in directory.glob("*.safetensors")
                    if p.name == SINGLE_FILE or _SHARD_RE.match(p.name))
    if not shards:
        pickles = list(directory.glob("*.bin")) + list(directory.glob("*.pt"))
        hint = (" (PyTorch pickle weights are not read; convert them to safetensors)"
                if pickles else "")
        raise WeightsError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
    files = {}
    for shard in shards:
        with _reading(shard), safe_open(str(shard), framework="numpy") as f:
            files.update({name: shard for name in f.keys()})
    return files


@contextlib.contextmanager
def _reading(file: Path):
    """Turns safetensors' errors about `file` (truncated, damaged header, unreadable) into one
    `WeightsError` line naming the file."""
    try:
        yield
    except (SafetensorError, OSError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(f"{file}: not a readable safetensors file ({reason}); truncated or "
                           "damaged? copy or download it again") from None


def _zeros(shape: tuple[int, ...], dtype, sharding) -> jax.Array:
    """A zero array made directly on `sharding` (default device when None)."""
    return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)()


@functools.partial(jax.jit, donate_argnums=0)
def _write_slot(stacked: jax.Array, value: jax.Array, layer: jax.Array) -> jax.Array:
    """stacked [L, ...] with slot `layer` set to value [...], in place (the input is donated)."""
    return jax.lax.dynamic_update_index_in_dim(stacked, value.astype(stacked.dtype), layer, 0)


def _slot_sharding(sharding):
    """The sharding of one slot of a stacked leaf (its spec without the layer axis)."""
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh,
                                          jax.sharding.PartitionSpec(*sharding.spec[1:]))
    return sharding


# ------------------------------------------------------------------------------------------------
# Loading


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """What `load_weights` read: the model, and the SHA-256 of every weight file it was read
    from ({file name relative to the model directory: hex}, sorted), for its base-model record
    (`base_record.base_record_of(model, path=..., files=digests)`)."""

    model: Phi3ForCausalLM
    digests: dict[str, str]


def load_pretrained(path_or_repo_id, dtype=jnp.bfloat16, mesh=None,
                    **config_overrides) -> Phi3ForCausalLM:
    """Loads a Hugging Face Phi-3 checkpoint into a Flax ``Phi3ForCausalLM`` (the model of
    `load_weights`, whose arguments it takes)."""
    return load_weights(path_or_repo_id, dtype, mesh, **config_overrides).model


def load_weights(path_or_repo_id, dtype=jnp.bfloat16, mesh=None,
                 **config_overrides) -> LoadedWeights:
    """Loads a Hugging Face Phi-3 checkpoint into a Flax ``Phi3ForCausalLM``, hashing each
    weight file while it is read.

    Args:
      path_or_repo_id: a local directory (never touches the network) or a hub repo id.
      dtype: parameter and compute dtype (override either with ``param_dtype=`` / ``dtype=``).
      mesh: when given, each tensor is placed directly onto its ``param_shardings`` sharding.
      **config_overrides: extra ``Phi3Config`` fields (e.g. ``remat=True``).
    """
    directory = resolve(path_or_repo_id)
    config = load_config(directory, **{"dtype": dtype, "param_dtype": dtype, **config_overrides})
    abstract = nnx.eval_shape(lambda: Phi3ForCausalLM(config, rngs=nnx.Rngs(0)))
    graphdef, abs_state = nnx.split(abstract)
    shardings = (nnx.to_flat_state(sharding_lib.param_shardings(abs_state, mesh))
                 if mesh is not None else None)
    flat = nnx.to_flat_state(abs_state)
    targets = {entry.name: entry for entry in hf_entries(flat)}

    files = _tensor_files(directory)
    ignored = {n for n in files if _IGNORED.search(n)}
    if config.tie_word_embeddings:
        ignored.add("lm_head.weight")  # tied: the embedding serves as output projection
    unexpected = sorted(set(files) - set(targets) - ignored)
    if unexpected:
        raise WeightsError(f"{files[unexpected[0]]}: unexpected tensor {unexpected[0]!r} "
                           f"({len(unexpected)} unexpected in total; "
                           "is config.json the right one?)")
    missing = sorted(set(targets) - set(files))
    if missing:
        where = directory / (INDEX_FILE if (directory / INDEX_FILE).is_file() else SINGLE_FILE)
        raise WeightsError(f"{where}: missing tensor {missing[0]!r} "
                           f"({len(missing)} missing in total)")

    values: list = [None] * len(flat)
    by_file: dict[Path, list[TensorEntry]] = {}
    for entry in targets.values():
        by_file.setdefault(files[entry.name], []).append(entry)
    # Each file is hashed in a background thread while it is read here (in the order the loader
    # reads them, so the two readers share the page cache).
    digester = Digester([*by_file, *sorted(set(files.values()) - set(by_file))], directory)
    digester.start()
    try:
        for file, entries in by_file.items():
            _load_file(file, entries, values, flat, shardings, config)
        try:
            digests = digester.result()  # an error of the hashing thread surfaces here
        except UnreadableFileError as e:
            raise WeightsError(str(e)) from None
    finally:
        digester.cancel()
    state = nnx.from_flat_state([(path, var.replace(v)) for (path, var), v in zip(flat, values)])
    return LoadedWeights(model=nnx.merge(graphdef, state), digests=digests)


def _load_file(file: Path, entries: list[TensorEntry], values: list, flat, shardings,
               config: Phi3Config) -> None:
    """Reads the tensors `entries` of one safetensors file into `values` (see load_weights)."""
    with _reading(file):
        handle = safe_open(str(file), framework="numpy")
    with handle as f:
        for entry in entries:
            i, name = entry.index, entry.name
            with _reading(file):
                array = f.get_tensor(name)
            if tuple(array.shape) != entry.hf_shape:
                raise WeightsError(f"{file}: tensor {name!r}: shape {tuple(array.shape)}, "
                                   f"config.json implies {entry.hf_shape}")
            array = np.ascontiguousarray(array.T if entry.transpose else array)
            if entry.dtype == BITS:  # a 16-bit stacked weight, stored as its bits
                array = array.astype(jnp.dtype(config.param_dtype), copy=False).view(BITS)
            array = array.astype(entry.dtype, copy=False)
            sharding = None if shardings is None else shardings[i][1].get_value()
            if entry.layer is None:
                values[i] = sharding_lib.place(array, sharding)
            else:  # one slot of a stacked leaf, allocated on first use and filled in place
                if values[i] is None:
                    leaf = flat[i][1].get_value()
                    values[i] = _zeros(tuple(leaf.shape), leaf.dtype, sharding)
                values[i] = _write_slot(values[i],
                                        sharding_lib.place(array, _slot_sharding(sharding)),
                                        jnp.int32(entry.layer))
            del array


# ------------------------------------------------------------------------------------------------
# Saving


def _parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as '5GB', '200MB', '10KiB'."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*", str(size).upper())
    if not m:
        raise ValueError(f"max_shard_size: cannot parse {size!r}")
    unit = m.group(2) or "B"
    power = " KMGT".index(unit[0]) if unit != "B" else 0
    base = 1024 if "I" in unit else 1000
    return int(float(m.group(1)) * base**power)


def _to_host(x: jax.Array) -> np.ndarray:
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def save_pretrained(model: Phi3ForCausalLM, path, tokenizer=None, max_shard_size=None,
                    generation_config: dict | None = None) -> Path:
    """Writes ``model`` in Hugging Face format (config.json + safetensors, sharded when large).

    LoRA adapters are not written: only base kernels (fold them first with ``merge_lora``).
    ``max_shard_size``: bytes or a string like '5GB' (default 5GB).
    """
    path = Path(path)
    limit = _parse_size(max_shard_size if max_shard_size is not None else "5GB")
    flat = [(p, var) for p, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
            if not is_lora_path(p)]
    shards, current, current_size = [], [], 0
    for entry in hf_entries(flat):
        size = math.prod(entry.shape) * entry.dtype.itemsize
        if current and current_size + size > limit:
            shards.append(current)
            current, current_size = [], 0
        current.append(entry)
        current_size += size
    if current:
        shards.append(current)

    is_writer = jax.process_index() == 0
    if is_writer:
        path.mkdir(parents=True, exist_ok=True)
        for old in list(path.glob("model*.safetensors")) + [path / INDEX_FILE]:
            if old.name == INDEX_FILE or old.name == SINGLE_FILE or _SHARD_RE.match(old.name):
                old.unlink(missing_ok=True)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = (SINGLE_FILE if len(shards) == 1
                 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors")
        tensors = {}
        for entry in shard:
            value = flat[entry.index][1].get_value()
            host = _to_host(value if entry.layer is None else value[entry.layer])
            if host.dtype == BITS:  # stored bits of a 16-bit stacked weight
                host = host.view(jnp.dtype(model.config.param_dtype))
            tensors[entry.name] = np.ascontiguousarray(host.T if entry.transpose else host)
            weight_map[entry.name] = fname
            total += host.nbytes
        if is_writer:
            save_file(tensors, str(path / fname), metadata={"format": "pt"})
        del tensors
    if is_writer:
        if len(shards) > 1:
            (path / INDEX_FILE).write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (path / CONFIG_FILE).write_text(json.dumps(model.config.to_hf(), indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(path))
        if generation_config is not None:
            (path / GENERATION_CONFIG_FILE).write_text(json.dumps(generation_config, indent=2))
    return path


@functools.partial(jax.jit, static_argnames="param_dtype")
def _merged_kernel(w, a, b, scale, param_dtype):
    """w + scale * a @ b in float32, back in w's dtype (bits stay bits); a stacked kernel
    [L, in, out] is merged one layer at a time, so only one layer is ever widened."""
    def merge(args):
        w, a, b = args
        stored = w.dtype
        w = from_bits(w, param_dtype)
        delta = scale * (a.astype(jnp.float32) @ b.astype(jnp.float32))
        merged = (w.astype(jnp.float32) + delta).astype(w.dtype)
        return to_bits(merged) if stored == BITS else merged

    return merge((w, a, b)) if w.ndim == 2 else jax.lax.map(merge, (w, a, b))


def merge_lora(model: Phi3ForCausalLM) -> Phi3ForCausalLM:
    """A new model without adapters whose kernels are ``W + lora_scale * A @ B``.

    The input model is left unchanged; unadapted parameters are shared, not copied.
    """
    merged_kernels = {}
    for path, module in nnx.iter_modules(model):
        if isinstance(module, Linear) and module.lora_a is not None:
            merged_kernels[tuple(path) + ("kernel",)] = _merged_kernel(
                module.kernel[...], module.lora_a[...], module.lora_b[...],
                jnp.float32(module.lora_scale), param_dtype=jnp.dtype(model.config.param_dtype))
    abstract = nnx.eval_shape(lambda: Phi3ForCausalLM(model.config, rngs=nnx.Rngs(0)))
    graphdef, abs_state = nnx.split(abstract)
    current = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    flat = [(p, var.replace(merged_kernels.get(tuple(p), current[p].get_value())))
            for p, var in nnx.to_flat_state(abs_state)]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def num_params(model) -> int:
    """Number of base (non-LoRA) parameters."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return sum(math.prod(v.get_value().shape) for p, v in flat if not is_lora_path(p))
