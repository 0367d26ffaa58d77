"""Which base model a run was trained on, and its fingerprint: the record a checkpoint keeps.

A checkpoint never stores the frozen base weights (billions of parameters for Phi-3.5-mini).
It stores a `BaseModelRecord` of them instead: where the base comes from (a directory or hub
id; a randomly initialised base by its init seed), a fingerprint -- a SHA-256 over the base
config fields that shape the weights plus every base tensor's name, shape and dtype -- and the
SHA-256 of each safetensors file the base was loaded from.

The file digests are computed while the loader reads the files: `hf.load_weights` runs a
`Digester` beside its own reads (hashlib releases the GIL, so this costs next to no time) and
returns them with the model (`hf.LoadedWeights.digests`), to be passed to `base_record_of`.
Nothing is cached between calls. The digest of a file equals `sha256sum FILE` and the hub's LFS
object id. `training/checkpoint.py` saves the record with every step and refuses a base whose
record differs (`check_base`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from wavepose_jax.models.lora import is_lora_path

# Fields of an HF config.json that do not change the base weights (dtypes, runtime switches,
# dropout rates, bookkeeping); every other field enters the fingerprint.
_IGNORED_CONFIG_KEYS = frozenset({
    "_name_or_path", "name_or_path", "architectures", "auto_map", "transformers_version",
    "torch_dtype", "dtype", "param_dtype", "remat", "attention_impl", "attn_implementation",
    "_attn_implementation", "use_cache", "attention_dropout", "embd_pdrop", "resid_pdrop",
    "initializer_range", "model_type",
})

_CHUNK = 8 << 20  # bytes per read; hashlib releases the GIL on buffers this large


# ------------------------------------------------------------------------------------------------
# File digests


class UnreadableFileError(OSError):
    """A weight file that could not be read to hash it; `str()` is one line naming it."""

    def __init__(self, file: Path, reason: str):
        super().__init__(f"{file}: cannot be read ({reason})")
        self.file = file


def file_sha256(file: Path, stop: threading.Event | None = None) -> str | None:
    """SHA-256 (hex) of a file's bytes, read once in large chunks; None if `stop` was set before
    the end. Raises UnreadableFileError when the file cannot be read."""
    try:
        digest = hashlib.sha256()
        view = memoryview(bytearray(_CHUNK))
        with open(Path(file).resolve(), "rb", buffering=0) as f:
            while n := f.readinto(view):
                if stop is not None and stop.is_set():
                    return None
                digest.update(view[:n])
    except OSError as e:
        raise UnreadableFileError(file, str(e.strerror or e)) from None
    return digest.hexdigest()


def file_name(file: Path, directory: Path) -> str:
    """How a weight file is named in a record: relative to its model directory."""
    return Path(file).relative_to(directory).as_posix()


class Digester(threading.Thread):
    """Hashes files one after another in the background, while a loader reads the same files
    (in the same order, so the two readers share the page cache); `result()` waits for the
    digests: {file name relative to `directory`: SHA-256 hex}, sorted by name."""

    def __init__(self, files: Iterable[Path], directory: Path):
        super().__init__(name="wavepose-sha256", daemon=True)
        self._files, self._directory = list(files), directory
        self._cancelled = threading.Event()
        self._digests: dict[str, str] = {}
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            for file in self._files:
                digest = file_sha256(file, self._cancelled)
                if digest is None:
                    return
                self._digests[file_name(file, self._directory)] = digest
        except BaseException as e:  # pylint: disable=broad-except  # re-raised by result()
            self._error = e

    def cancel(self) -> None:
        """Stops hashing at the next chunk (the digests are then incomplete)."""
        self._cancelled.set()

    def result(self) -> dict[str, str]:
        """The digests of every file, once all are hashed; re-raises the thread's error (an
        `UnreadableFileError`)."""
        self.join()
        if self._error is not None:
            raise self._error
        return dict(sorted(self._digests.items()))


# ------------------------------------------------------------------------------------------------
# Fingerprint and record


def tensor_signature(tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """Sorted (name, shape, dtype) of every array leaf of `tree`, adapter tensors excluded.

    `tree` may hold concrete arrays or `jax.ShapeDtypeStruct`s (e.g. `nnx.eval_shape` output),
    so the signature of a multi-billion-parameter model costs nothing to compute.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    signature = []
    for path, leaf in leaves:
        if is_lora_path(path) or not hasattr(leaf, "shape"):
            continue
        name = jax.tree_util.keystr(path)
        signature.append((name, tuple(int(d) for d in leaf.shape), str(np.dtype(leaf.dtype))))
    return sorted(signature)


def base_fingerprint(hf_config: Mapping[str, Any], signature: Iterable[tuple]) -> str:
    """SHA-256 of the weight-shaping config fields and the tensor signature."""
    config = {k: v for k, v in sorted(hf_config.items()) if k not in _IGNORED_CONFIG_KEYS}
    payload = json.dumps({"config": config, "tensors": [list(t) for t in signature]},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class BaseModelRecord:
    """What a checkpoint needs to find and verify its frozen base model.

    Attributes:
      path: HF directory or hub id of the base weights; None for a randomly initialised base.
      init_seed: seed of a randomly initialised base (None when loaded from `path`).
      fingerprint: `base_fingerprint` of the base config and tensors (shapes, not values).
      num_params: number of base parameters (informational).
      files: {safetensors file name: SHA-256 hex of its bytes} of a base loaded from `path`
        (`hf.LoadedWeights.digests`); None for a random base, and in records written before
        the file hashes were recorded.
    """

    path: str | None
    init_seed: int | None
    fingerprint: str
    num_params: int
    files: dict[str, str] | None = dataclasses.field(default=None, hash=False)

    @classmethod
    def from_model(cls, base_state: Any, hf_config: Mapping[str, Any], *, path: str | None,
                   init_seed: int | None = None,
                   files: Mapping[str, str] | None = None) -> BaseModelRecord:
        """Record of a base model given its (abstract or concrete) parameter state and, for a
        base loaded from `path`, the digests of its files."""
        signature = tensor_signature(base_state)
        config = dict(hf_config)
        if path is None:
            config["__init_seed__"] = init_seed
        return cls(path=None if path is None else str(path),
                   init_seed=None if path is not None else init_seed,
                   fingerprint=base_fingerprint(config, signature),
                   num_params=int(sum(int(np.prod(s)) for _, s, _ in signature)),
                   files=None if path is None or files is None else dict(sorted(files.items())))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BaseModelRecord:
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    def describe(self) -> str:
        origin = self.path if self.path is not None else f"random init (seed {self.init_seed})"
        return f"{origin} [fingerprint {self.fingerprint[:12]}]"


def base_record_of(llm: Any, *, path: str | None, init_seed: int | None = None,
                   files: Mapping[str, str] | None = None) -> BaseModelRecord:
    """Record of a Flax Phi-3 language model (`models.phi3.Phi3ForCausalLM`, LoRA or not)
    loaded from `path` (None: randomly initialised with `init_seed`).

    The record describes the weights, not their layout: a scanned (stacked) decoder stack is
    fingerprinted as its unrolled twin of the same config and dtypes (the same tensors, one
    per layer), so both forms of one base share a fingerprint. The content of a base loaded
    from `path` is `files`, the digests of its weight files as the loader computed them
    (`hf.load_weights(path).digests`); without them the record holds none (`files` None).
    """
    if getattr(llm.config, "scan_layers", False):
        twin = dataclasses.replace(llm.config, scan_layers=False)
        abstract = nnx.state(nnx.eval_shape(lambda: type(llm)(twin, rngs=nnx.Rngs(0))), nnx.Param)
    else:
        abstract = jax.eval_shape(lambda: nnx.state(llm, nnx.Param))
    return BaseModelRecord.from_model(abstract, llm.config.to_hf(), path=path,
                                      init_seed=init_seed, files=files)
