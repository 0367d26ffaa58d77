"""Device mesh, Phi-3 parameter partition rules and batch sharding.

The mesh has up to three named axes: ``data`` (pure data parallelism), ``fsdp`` (data
parallelism with parameters sharded across it) and ``tensor`` (Megatron-style model
parallelism). Parameters are matched by regular expressions on their ``/``-joined path; a
dimension that the mesh axis does not divide evenly stays replicated on that axis.

A scanned decoder stack stores each layer parameter with a leading layer axis [L, ...]
(`model/layers/mlp/down_proj/kernel`, no layer index in the path). The rules describe one
layer; that leading axis is never sharded (each scan step reads its own layer whole).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (regex on the parameter path, PartitionSpec). First match wins; no match: replicated.
PHI3_RULES: tuple[tuple[str, P], ...] = (
    (r"embed_tokens/embedding$", P("tensor", "fsdp")),  # [V, D]
    (r"(qkv_proj|gate_up_proj)/kernel$", P("fsdp", "tensor")),  # [D, out]
    (r"(o_proj|down_proj)/kernel$", P("tensor", "fsdp")),  # [in, D]
    (r"lm_head/kernel$", P("fsdp", "tensor")),  # [D, V]
    (r"lora_(a|b)$", P()),  # small adapters: replicated
    (r"norm/weight$", P()),
)


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """The `mesh` group of a run: axis sizes (they multiply to the device count; -1 = the rest)."""

    data: int  # pure data parallelism (replicated parameters), e.g. across hosts
    fsdp: int  # data parallelism with base weights sharded over it
    tensor: int  # tensor (model) parallelism inside each layer

    def axes(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def make_mesh(axes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with the given axis sizes; one size may be -1 (all remaining devices).

    Example: ``make_mesh({"data": 1, "fsdp": -1, "tensor": 2})``.
    """
    devices = list(devices if devices is not None else jax.devices())
    names = tuple(axes)
    unknown = [n for n in names if n not in MESH_AXES]
    if unknown:
        raise ValueError(f"mesh axes: unknown axis {unknown[0]!r} (expected {MESH_AXES})")
    sizes = [int(axes[n]) for n in names]
    if sizes.count(-1) > 1:
        raise ValueError("mesh axes: at most one size may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if known <= 0 or len(devices) % known:
            raise ValueError(f"mesh axes: {len(devices)} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh axes: sizes {dict(zip(names, sizes))} need {math.prod(sizes)} "
                         f"devices, {len(devices)} available")
    return jax.make_mesh(tuple(sizes), names, axis_types=(jax.sharding.AxisType.Auto,) * len(names),
                         devices=devices)


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drops mesh axes that are absent or do not divide the dimension they shard."""
    dims = []
    for i in range(len(shape)):
        entry = spec[i] if i < len(spec) else None
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        kept, size = [], 1
        for name in names:
            n = mesh.shape.get(name, 1)
            if name in mesh.shape and shape[i] % (size * n) == 0:
                kept.append(name)
                size *= n
        dims.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    while dims and dims[-1] is None:
        dims.pop()
    return P(*dims)


# `layers/` followed by a name, not a layer index: a leaf of a scanned (stacked) layer stack.
_STACKED = re.compile(r"(^|/)layers/(?!\d+(/|$))")


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh,
             rules: Sequence[tuple[str, P]] = PHI3_RULES) -> P:
    """PartitionSpec for one parameter given its ``/``-joined path (a stacked layer leaf keeps
    its leading layer axis unsharded)."""
    if _STACKED.search(path) and len(shape) >= 1:
        inner = spec_for(path.replace("layers/", "layers/0/", 1), shape[1:], mesh, rules)
        return P(None, *inner) if len(inner) else P()
    for pattern, spec in rules:
        if re.search(pattern, path):
            return _fit_spec(spec, shape, mesh)
    return P()


def param_shardings(abstract_state: nnx.State, mesh: Mesh,
                    rules: Sequence[tuple[str, P]] = PHI3_RULES) -> nnx.State:
    """A State of the same structure whose leaves are NamedShardings (usable as jit shardings)."""
    flat = nnx.to_flat_state(abstract_state)
    out = []
    for path, var in flat:
        name = "/".join(str(p) for p in path)
        shape = tuple(np.shape(var.get_value()))
        out.append((path, var.replace(NamedSharding(mesh, spec_for(name, shape, mesh, rules)))))
    return nnx.from_flat_state(out)


def place(x: Any, sharding: jax.sharding.Sharding | None = None) -> jax.Array:
    """A host or device array onto `sharding` (default: the default device).

    Every process holds the same full value (weights read from the same files, or a
    deterministic init) and contributes the shards its devices own; nothing is copied when
    `x` already has the sharding (or an equivalent one).
    """
    if sharding is None:
        return jax.device_put(x)
    current = getattr(x, "sharding", None)
    if current == sharding or (isinstance(current, jax.sharding.Sharding)
                               and current.is_equivalent_to(sharding, np.ndim(x))):
        return x  # already there: never a second copy of a (large) weight
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data-parallel axes present in the mesh."""
    axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
    return NamedSharding(mesh, P(axes if axes else None))
