"""Where every tensor of a Hugging Face Phi-3 checkpoint lives in a Flax ``Phi3ForCausalLM``.

An HF checkpoint names each tensor ('model.layers.3.mlp.down_proj.weight') and stores dense
kernels as [out, in]; the Flax model holds them under parameter paths, kernels as [in, out],
and with a scanned decoder stack (``Phi3Config.scan_layers``) every layer's tensor in slot i of
one stacked leaf [L, ...]. `hf_entries` lists each tensor of a flat state as a `TensorEntry`
(name, leaf index, layer slot, transpose, shape, dtype): what `hf.py` reads and writes, and what
`random_base.py` writes from shapes alone (`hf_tensor_shapes`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from wavepose_jax.models.phi3 import Phi3Config, Phi3ForCausalLM, in_stacked_layers


def hf_name(path: tuple, layer: int | None = None) -> tuple[str, bool]:
    """(HF tensor name, transpose?) for a Flax parameter path; `layer` names the slot of a
    stacked (scanned) leaf: ('model', 'layers', 'mlp', 'down_proj', 'kernel'), 3 ->
    'model.layers.3.mlp.down_proj.weight'."""
    parts = [str(p) for p in path]
    leaf = parts[-1]
    parts[-1] = "weight"
    if layer is not None:
        parts.insert(parts.index("layers") + 1, str(layer))
    return ".".join(parts), leaf == "kernel"


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One tensor of a Hugging Face checkpoint and where it lives in a flat Flax state.

    Attributes:
      name: the HF tensor name, e.g. 'model.layers.3.mlp.down_proj.weight'.
      index: position of its leaf in the flat state (`nnx.to_flat_state`).
      layer: its slot in a stacked (scanned) leaf [L, ...]; None for an ordinary leaf.
      transpose: a dense kernel: HF stores [out, in], Flax [in, out].
      shape: its Flax shape (of one slot, for a stacked leaf).
      dtype: the dtype of its leaf (`models.phi3.BITS` for a 16-bit stacked weight).
    """

    name: str
    index: int
    layer: int | None
    transpose: bool
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def hf_shape(self) -> tuple[int, ...]:
        """Its shape as the HF checkpoint stores it."""
        return self.shape[::-1] if self.transpose else self.shape


def hf_entries(flat_state) -> list[TensorEntry]:
    """Every tensor of a flat state (`nnx.to_flat_state`, arrays or abstract), stacked leaves
    expanded into one entry per layer, in state order."""
    entries = []
    for i, (path, var) in enumerate(flat_state):
        value = var.get_value()
        shape, dtype = tuple(np.shape(value)), np.dtype(value.dtype)
        if in_stacked_layers(path):
            for layer in range(shape[0]):
                name, transpose = hf_name(path, layer)
                entries.append(TensorEntry(name, i, layer, transpose, shape[1:], dtype))
        else:
            name, transpose = hf_name(path)
            entries.append(TensorEntry(name, i, None, transpose, shape, dtype))
    return entries


def hf_tensor_shapes(config: Phi3Config) -> list[tuple[str, tuple[int, ...]]]:
    """(HF name, HF shape) of every tensor of a checkpoint of `config`, in model order; from
    shapes alone (nothing is allocated)."""
    abstract = nnx.eval_shape(lambda: Phi3ForCausalLM(config, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return [(entry.name, entry.hf_shape) for entry in hf_entries(flat)]
