"""Train state: the model split by the trainable predicate, optimizer state, step; memory report.

    graphdef, params, frozen, rest = nnx.split(model, trainable_filter(trainable), nnx.Param, ...)

`params` (encoder, bridge, LoRA; everything under full fine-tuning) are kept in float32 and are
the only leaves that get gradients and optimizer moments; `frozen` (the base weights, in
`llm.param_dtype`) pass through the step untouched; `rest` holds non-parameter variables (RNG
streams, the bridge's measured embedding scale).

On a mesh, the optimizer state is created by a jitted `tx.init` whose output shardings mirror
the parameters' (derived from `jax.eval_shape`), so it is born sharded.

`abstract_train_state` is the same state as `jax.ShapeDtypeStruct`s with the shardings a run
would give them, built without allocating a weight (for ahead-of-time compilation).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from wavepose_jax import sharding as sharding_lib
from wavepose_jax.models import wavellm
from wavepose_jax.models.lora import trainable_filter
from wavepose_jax.models.phi3 import BITS, Phi3Config, from_bits
from wavepose_jax.training.loss import LossWeights
from wavepose_jax.training.optim import make_optimizer
from wavepose_jax.training.spec import TrainSpec


class TrainState(struct.PyTreeNode):
    """Everything a train step reads and writes. Pytree; graphdef/tx/lr_fn/loss_weights are
    static."""

    step: jax.Array  # [] int32
    params: nnx.State  # trainable, float32
    frozen: nnx.State  # frozen parameters (base weights)
    rest: nnx.State  # non-parameter variables (RNG streams, constants)
    opt_state: optax.OptState
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    lr_fn: optax.Schedule = struct.field(pytree_node=False)
    loss_weights: LossWeights = struct.field(pytree_node=False)

    def model(self) -> wavellm.WaveLLM:
        """The model these parameters describe (shares the arrays)."""
        return nnx.merge(self.graphdef, self.params, self.frozen, self.rest)

    def checkpoint_items(self) -> dict[str, Any]:
        """What a checkpoint stores: step, trainable parameters, optimizer state."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    def replace_checkpoint_items(self, items: dict[str, Any]) -> TrainState:
        return self.replace(step=items["step"], params=items["params"],
                            opt_state=items["opt_state"])


def _to_float32(tree: Any, bits_dtype: Any) -> Any:
    """Floating leaves as float32; uint16 leaves (stacked weights stored as the bits of the
    16-bit `bits_dtype`, models/phi3.py) decoded first: trained weights are float32."""
    def convert(x):
        if x.dtype == BITS:
            return from_bits(x, bits_dtype).astype(jnp.float32)
        return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(convert, tree)


def _shardings_of(tree: Any) -> Any:
    return jax.tree.map(lambda x: x.sharding, tree)


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt_state: Any,
                        param_shardings: Any, mesh: jax.sharding.Mesh) -> Any:
    """Shardings of the optimizer state: moments like their parameter, the rest replicated."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    # Leaves of another optimizer group are MaskedNodes (no array) and stay so.
    return optax.tree_map_params(
        tx, lambda leaf, sharding: leaf if isinstance(leaf, optax.MaskedNode) else sharding,
        abstract_opt_state, param_shardings, transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, (optax.MaskedNode, jax.sharding.Sharding)))


def create_train_state(model: wavellm.WaveLLM, train: TrainSpec, loss_weights: LossWeights,
                       mesh: jax.sharding.Mesh | None = None) -> TrainState:
    """Splits `model` by the trainable predicate (`train.trainable`) and initialises the
    optimizer of `train`.

    Raises:
      ValueError: `train.trainable` selects no parameter.
    """
    graphdef, params, frozen, rest = nnx.split(model, trainable_filter(train.trainable),
                                               nnx.Param, ...)
    if not jax.tree.leaves(params):
        raise ValueError(f"config field 'train.trainable': {list(train.trainable)} "
                         "selects no parameter")
    tx, lr_fn = make_optimizer(train)
    bits_dtype = model.llm.config.param_dtype  # of base weights stored as bits
    if mesh is None:
        params = jax.jit(functools.partial(_to_float32, bits_dtype=bits_dtype))(params)
        opt_state = jax.jit(tx.init)(params)
        step = jnp.zeros((), jnp.int32)
    else:
        param_sh = _shardings_of(params)
        params = jax.jit(functools.partial(_to_float32, bits_dtype=bits_dtype),
                         out_shardings=param_sh)(params)
        abstract_opt = jax.eval_shape(tx.init, params)
        opt_sh = opt_state_shardings(tx, abstract_opt, param_sh, mesh)
        opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        step = jax.jit(lambda: jnp.zeros((), jnp.int32), out_shardings=replicated)()
    return TrainState(step=step, params=params, frozen=frozen, rest=rest, opt_state=opt_state,
                      graphdef=graphdef, tx=tx, lr_fn=lr_fn, loss_weights=loss_weights)


def abstract_train_state(model_spec: wavellm.WaveLLMSpec, train: TrainSpec,
                         loss_weights: LossWeights, llm_config: Phi3Config,
                         mesh: jax.sharding.Mesh) -> TrainState:
    """The train state of a run (`create_train_state` of `run.new_model`'s model) as
    `jax.ShapeDtypeStruct`s carrying the shardings the run gives them: parameters (frozen and
    trainable) by the partition rules, optimizer moments like their parameter, step replicated.
    Nothing is allocated.

    Args:
      model_spec: encoder, bridge and LoRA of the run (`spec.RunSpec.model`).
      train: the run's `train` group; loss_weights: its `LossWeights`.
      llm_config: the base architecture with the run's compute settings.
      mesh: the device mesh of the run.
    """
    def build() -> TrainState:
        model = wavellm.create_wavellm(model_spec, llm_config, 1.0, nnx.Rngs(model_spec.seed))
        return create_train_state(model, train, loss_weights)

    state = jax.eval_shape(build)
    rules = lambda tree: sharding_lib.param_shardings(tree, mesh)  # noqa: E731
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    param_sh = rules(state.params)
    shardings = state.replace(
        step=replicated, params=param_sh, frozen=rules(state.frozen), rest=rules(state.rest),
        opt_state=opt_state_shardings(state.tx, state.opt_state, param_sh, mesh))
    return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                        state, shardings)


def state_shardings(state: TrainState) -> TrainState:
    """The sharding of every array leaf of a placed state (for jit in/out shardings)."""
    return _shardings_of(state)


# ------------------------------------------------------------------------------------------------
# Memory report


def _nbytes(tree: Any) -> int:
    return int(sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def _count(tree: Any) -> int:
    return int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)))


def memory_report(model_spec: wavellm.WaveLLMSpec, train: TrainSpec,
                  llm_config: Phi3Config) -> dict[str, int]:
    """Parameter counts and bytes of a run, from shapes alone (`jax.eval_shape`, no weights).

    Args:
      model_spec: encoder, bridge and LoRA adapters of the run (`spec.RunSpec.model`).
      train: the run's `train` group: `trainable` says what trains (trainable leaves counted
        in float32), and the optimizer.
      llm_config: the base architecture with the run's compute settings (its `param_dtype`
        is the dtype of the frozen base).

    Returns:
      base_params, lora_params, trainable_params, frozen_params, and the bytes of
      frozen_bytes, trainable_bytes, grad_bytes (one gradient per trainable leaf, float32),
      optimizer_bytes (AdamW moments) and total_bytes (their sum; activations excluded).
    """
    def create():
        return wavellm.create_wavellm(model_spec, llm_config, 1.0, nnx.Rngs(0))

    model = nnx.eval_shape(create)
    _, params, frozen, _ = nnx.split(model, trainable_filter(train.trainable), nnx.Param, ...)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32)
                          if jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == BITS else x,
                          params)
    tx, _ = make_optimizer(train)
    opt_state = jax.eval_shape(tx.init, params)
    counts = wavellm.param_counts(model)
    report = {
        "base_params": counts["base"],
        "lora_params": counts["lora"],
        "trainable_params": _count(params),
        "frozen_params": _count(frozen),
        "frozen_bytes": _nbytes(frozen),
        "trainable_bytes": _nbytes(params),
        "grad_bytes": _nbytes(params),
        "optimizer_bytes": _nbytes(opt_state),
    }
    report["total_bytes"] = sum(report[k] for k in (
        "frozen_bytes", "trainable_bytes", "grad_bytes", "optimizer_bytes"))
    return report


def format_memory_report(report: dict[str, int]) -> str:
    """Human-readable lines of `memory_report`."""
    gib = 1024 ** 3
    lines = [f"base params {report['base_params']:,} | LoRA params {report['lora_params']:,} | "
             f"trainable {report['trainable_params']:,} | frozen {report['frozen_params']:,}"]
    lines += [f"{name:>10}: {report[key] / gib:8.3f} GiB" for name, key in (
        ("frozen", "frozen_bytes"), ("trainable", "trainable_bytes"), ("gradients", "grad_bytes"),
        ("optimizer", "optimizer_bytes"), ("total", "total_bytes"))]
    return "\n".join(lines)
