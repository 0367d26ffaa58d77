"""The pure train and eval steps, and their jitted, sharded forms.

    train_step(state, batch, rng) -> (state, metrics)

* rng = fold_in(rng, step); micro-batch i uses fold_in(rng, i) to reseed every dropout stream.
* Gradients are taken with respect to `state.params` only (the trainable leaves); the frozen
  base weights are closed over as constants of the differentiated function.
* Gradient accumulation: the global batch [B, ...] is viewed as k micro-batches (strided, so
  each data-parallel shard contributes to every micro-batch) and a `lax.scan` sums their
  gradients. Every micro-batch's CE sum is divided by the target-token count of the WHOLE batch,
  so k micro-batches of b give exactly the update of one batch of k * b. The auxiliary
  wave-dynamics and fault losses, per-batch means, enter as means over micro-batches.
* A step whose loss or gradient norm is not finite changes neither the parameters nor the
  optimizer state (`skipped` = 1); train.py stops after `train.max_bad_steps` in a row.
* Metrics: loss (token-mean CE), aux_loss, fault_loss, grad_norm (before clipping), lr, skipped,
  tokens (real sequence tokens: soft tokens + text tokens of real examples), target_tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wavepose_jax import sharding as sharding_lib
from wavepose_jax.data.batch import Batch
from wavepose_jax.training.loss import model_loss_terms, objective
from wavepose_jax.training.state import TrainState, state_shardings


def _split_micro(batch: Batch, k: int) -> Batch:
    """[B, ...] -> [k, B / k, ...]; micro-batch i holds rows i, i + k, i + 2k, ..."""
    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by train.grad_accum={k}")
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def _micro_objective(params, state: TrainState, batch: Batch, rng, denom, num_micro: int):
    """Objective of one micro-batch, scaled so the micro-batch objectives sum to the total."""
    # copy=True: fresh Variables in this trace, so reseeding the RNG streams is allowed here.
    # match_shape: a stacked (scanned) layer's stream gets one fresh key per layer.
    model = nnx.merge(state.graphdef, params, state.frozen, state.rest, copy=True)
    nnx.reseed(model, dropout=rng, policy="match_shape")
    terms = model_loss_terms(model, batch, state.loss_weights, deterministic=False)
    return objective(terms, state.loss_weights, denom, num_micro), terms


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *,
               grad_accum: int = 1) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch (see the module docstring)."""
    rng = jax.random.fold_in(rng, state.step)
    denom = jnp.maximum(jnp.sum(batch.target_weight()), 1.0)
    grad_fn = jax.value_and_grad(_micro_objective, has_aux=True)

    if grad_accum == 1:
        (_, terms), grads = grad_fn(state.params, state, batch, jax.random.fold_in(rng, 0),
                                    denom, 1)
        ce_sum, aux_sum, fault_sum = terms.ce_sum, terms.aux_loss, terms.fault_loss
    else:
        micro = _split_micro(batch, grad_accum)

        def body(carry, xs):
            grads_acc, ce_acc, aux_acc, fault_acc = carry
            mb, i = xs
            (_, terms), g = grad_fn(state.params, state, mb, jax.random.fold_in(rng, i), denom,
                                    grad_accum)
            grads_acc = jax.tree.map(jnp.add, grads_acc, g)
            return (grads_acc, ce_acc + terms.ce_sum, aux_acc + terms.aux_loss,
                    fault_acc + terms.fault_loss), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        scalar = jnp.zeros((), jnp.float32)
        (grads, ce_sum, aux_sum, fault_sum), _ = jax.lax.scan(
            body, (zeros, scalar, scalar, scalar), (micro, jnp.arange(grad_accum)))
        aux_sum, fault_sum = aux_sum / grad_accum, fault_sum / grad_accum

    grad_norm = optax.tree.norm(grads)
    loss = ce_sum / denom
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # A non-finite loss or gradient never reaches the parameters or the optimizer moments:
    # the update is skipped (and counted); the step counter and the data still advance.
    finite = (jnp.isfinite(loss) & jnp.isfinite(aux_sum) & jnp.isfinite(fault_sum)
              & jnp.isfinite(grad_norm))
    params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                     (params, opt_state), (state.params, state.opt_state))
    metrics = {
        "loss": loss,
        "aux_loss": aux_sum,
        "fault_loss": fault_sum,
        "grad_norm": grad_norm,
        "lr": state.lr_fn(state.step),
        "skipped": 1.0 - finite.astype(jnp.float32),
        **_token_counts(state, batch),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _token_counts(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    real = batch.real_rows()  # [B]
    num_soft = state.model().num_soft_tokens
    text = jnp.sum(batch.token_mask.astype(jnp.float32) * real[:, None])
    return {"tokens": text + num_soft * jnp.sum(real),
            "target_tokens": jnp.sum(batch.target_weight())}


def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """Deterministic loss terms of a batch: ce_sum, num_tokens (sum them over a set), aux_loss
    and fault_loss (batch means)."""
    return model_loss_terms(state.model(), batch, state.loss_weights,
                            deterministic=True)._asdict()


def batch_shardings(batch: Batch, mesh: Mesh) -> Batch:
    """Every batch field split over the data-parallel axes on its leading dimension."""
    sharding = sharding_lib.batch_sharding(mesh)
    return jax.tree.map(lambda _: sharding, batch)


def jit_train_step(state: TrainState, batch: Batch, mesh: Mesh, *, grad_accum: int = 1):
    """`train_step` jitted with explicit shardings and the state donated.

    `state` and `batch` (arrays or ShapeDtypeStructs) fix the shardings; the returned function
    takes (state, batch, rng) and returns (state, metrics) with replicated metrics.
    """
    replicated = NamedSharding(mesh, P())
    state_sh = state_shardings(state)
    return jax.jit(
        functools.partial(train_step, grad_accum=grad_accum),
        in_shardings=(state_sh, batch_shardings(batch, mesh), replicated),
        out_shardings=(state_sh, replicated),
        donate_argnums=0)


def jit_eval_step(state: TrainState, batch: Batch, mesh: Mesh):
    """`eval_step` jitted with explicit shardings (state not donated)."""
    replicated = NamedSharding(mesh, P())
    return jax.jit(eval_step, in_shardings=(state_shardings(state), batch_shardings(batch, mesh)),
                   out_shardings=replicated)
