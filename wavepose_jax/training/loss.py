"""The training losses, as functions of the model's outputs and the batch.

    outputs = model(batch.waves, batch.frame_mask, batch.tokens, batch.token_mask,
                    batch.target_pos)                    # logits at the target positions only
    terms = loss_terms(outputs, batch, weights)          # sums, not means
    # or in one call: model_loss_terms(model, batch, weights, deterministic=...)

* Cross-entropy on the target tokens only (`Batch.target_weight`: the feedback text and its
  closing <|end|>, times the example weight); prompt and padding never enter it, and the
  model's head runs on the target positions alone (`Batch.target_pos`). Returned as
  a sum with its token count, so the train step divides by the token count of the global
  batch: exact with padding, padded examples and gradient accumulation.
* Wave dynamics (`LossWeights.aux`): the encoder's readout of `dynamic_state` must predict each
  signal's per-frame velocity and, inside reps, the rep phase as (sin, cos).
* Fault BCE (`LossWeights.fault`): the bridge's fault logits against the clip's fault labels,
  over labelled entries that apply to the clip's exercise.

The two auxiliary terms are means over the batch; a loss whose weight is 0 is not computed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wavepose_jax.data.batch import Batch
from wavepose_jax.training.spec import TrainSpec


class LossTerms(NamedTuple):
    """Loss sums of one (micro-)batch; the train step normalises them."""

    ce_sum: jax.Array  # [] f32: sum over target tokens of CE x example_weight
    num_tokens: jax.Array  # [] f32: sum over target tokens of example_weight
    aux_loss: jax.Array  # [] f32: wave-dynamics loss of this batch (0 when its weight is 0)
    fault_loss: jax.Array  # [] f32: mean fault BCE over labelled entries (0 when its weight is 0)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the auxiliary losses and the frame rate their velocities are measured at."""

    aux: float = 0.0  # wave-dynamics loss (train.aux_loss_weight)
    fault: float = 0.0  # fault BCE (train.fault_loss_weight)
    fps: float | None = 30.0  # frame rate of `Batch.waves` (None: velocities per frame)

    @classmethod
    def of(cls, train: TrainSpec, fps: float | None) -> LossWeights:
        """The weights of a run's `train` group; `fps`: the model input's frame rate
        (`data.target_fps`; None: the clips' own, taken as 30)."""
        return cls(aux=train.aux_loss_weight, fault=train.fault_loss_weight, fps=fps or 30.0)


def token_ce(logits: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(CE sum, token count) over the target tokens.

    logits [B, K, V] (any float dtype; computed in float32): `logits[:, k]` predicts the token
    at `batch.target_pos[:, k]` (`WaveLLM` called with the batch's target positions).
    """
    pos = jnp.asarray(batch.target_pos)  # [B, K]
    labels = jnp.take_along_axis(jnp.asarray(batch.tokens), pos, axis=1)  # [B, K]
    weight = jnp.take_along_axis(batch.target_weight(), pos, axis=1)  # [B, K]
    weight = jnp.where(pos > 0, weight, 0.0)  # padding slots point at position 0, a prompt's
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                         labels)  # [B, K]
    return jnp.sum(jnp.where(weight > 0, ce, 0.0) * weight), jnp.sum(weight)


def wave_dynamics_targets(waves: jax.Array, mask: jax.Array, fps: float | None,
                          phase: jax.Array | None = None,
                          phase_mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Targets of the wave-dynamics loss.

    Args:
        waves: [B, T, C] signals, as fed to the encoder.
        mask: [B, T] bool, True on real frames.
        fps: frames per second; velocities are per second when given, per frame when None.
        phase: optional [B, T] rep phase in radians (from the data pipeline's rep segmentation).
        phase_mask: optional [B, T] bool, where `phase` is defined (defaults to `mask`).

    Returns:
        velocity [B, T, C]: backward finite difference (0 on frame 0 and next to padding);
        velocity_mask [B, T]: frames whose difference spans two real frames;
        velocity_scale [C]: RMS of each channel's velocity over valid frames (loss normaliser);
        velocity_channels [C] bool: channels that move at all in this batch (a constant
        channel, e.g. the exercise one-hot of the rep channels, has no velocity to predict);
        and, when `phase` is given, phase [B, T, 2] (sin, cos) and phase_mask [B, T].
    """
    waves = jnp.asarray(waves, jnp.float32)
    mask = jnp.asarray(mask, bool)
    diff = waves[:, 1:] - waves[:, :-1]  # [B, T-1, C]
    if fps is not None:
        diff = diff * float(fps)
    valid = mask[:, 1:] & mask[:, :-1]  # [B, T-1]
    velocity = jnp.pad(jnp.where(valid[..., None], diff, 0.0), ((0, 0), (1, 0), (0, 0)))
    velocity_mask = jnp.pad(valid, ((0, 0), (1, 0)))
    count = jnp.maximum(velocity_mask.sum(), 1)
    scale = jnp.sqrt(jnp.sum(jnp.square(velocity), axis=(0, 1)) / count)  # [C]
    targets = {
        "velocity": velocity,
        "velocity_mask": velocity_mask,
        "velocity_scale": jnp.maximum(scale, 1e-6),
        "velocity_channels": scale > 1e-6,
    }
    if phase is not None:
        phase = jnp.asarray(phase, jnp.float32)
        targets["phase"] = jnp.stack([jnp.sin(phase), jnp.cos(phase)], axis=-1)  # [B, T, 2]
        phase_valid = mask if phase_mask is None else mask & jnp.asarray(phase_mask, bool)
        targets["phase_mask"] = phase_valid
    return targets


def wave_dynamics_loss(prediction: jax.Array, targets: dict, mask: jax.Array) -> jax.Array:
    """Masked MSE of the dynamics readout [B, T, C + 2] against `wave_dynamics_targets`.

    The velocity term is normalised per channel by `velocity_scale`, so every signal counts
    alike whatever its unit (torso units or degrees); the phase term (when targets carry one)
    is the MSE of (sin, cos). Returns the sum of both means, a float32 scalar.
    """
    pred = prediction.astype(jnp.float32)  # [B, T, C + 2]
    mask = jnp.asarray(mask, bool)
    num_signals = targets["velocity"].shape[-1]
    vel_err = (pred[..., :num_signals] - targets["velocity"]) / targets["velocity_scale"]
    moving = targets.get("velocity_channels", jnp.ones(num_signals, bool))  # [C]
    vel_mask = (mask & targets["velocity_mask"])[..., None] & moving  # [B, T, C]
    vel_count = jnp.maximum(vel_mask.sum(), 1)
    loss = jnp.sum(jnp.where(vel_mask, jnp.square(vel_err), 0.0)) / vel_count
    if "phase" in targets:
        ph_err = pred[..., num_signals:num_signals + 2] - targets["phase"]  # [B, T, 2]
        ph_mask = (mask & targets["phase_mask"])[..., None]
        ph_count = jnp.maximum(ph_mask.sum() * 2, 1)
        loss = loss + jnp.sum(jnp.where(ph_mask, jnp.square(ph_err), 0.0)) / ph_count
    return loss


def fault_bce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean binary cross-entropy over the entries where mask is set (0 when none is).

    logits [B, F], labels [B, F] in {0, 1}, mask [B, F] bool -> [] float32.
    """
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                             labels.astype(jnp.float32))  # [B, F]
    mask = mask.astype(jnp.float32)
    return jnp.sum(bce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def loss_terms(outputs: Any, batch: Batch, weights: LossWeights) -> LossTerms:
    """The loss sums of a batch from the model's outputs (`models.wavellm.Outputs`)."""
    ce_sum, num_tokens = token_ce(outputs.logits, batch)
    real = batch.real_rows()  # [B]
    aux = jnp.zeros((), jnp.float32)
    if weights.aux > 0:
        frames = jnp.asarray(batch.frame_mask, bool) & real[:, None]  # [B, T]
        targets = wave_dynamics_targets(batch.waves, frames, weights.fps, batch.phase,
                                        batch.phase_mask)
        aux = wave_dynamics_loss(outputs.dynamics, targets, frames)
    fault = jnp.zeros((), jnp.float32)
    if weights.fault > 0:
        if outputs.fault_logits is None:
            raise ValueError("config field 'train.fault_loss_weight': > 0 needs a bridge with a "
                             "fault head (bridge num_faults > 0)")
        fault = fault_bce(outputs.fault_logits, batch.faults,
                          jnp.asarray(batch.fault_mask, bool) & real[:, None])
    return LossTerms(ce_sum=ce_sum, num_tokens=num_tokens, aux_loss=aux, fault_loss=fault)


def model_loss_terms(model: Any, batch: Batch, weights: LossWeights, *,
                     deterministic: bool) -> LossTerms:
    """`loss_terms` of one forward pass of a `models.wavellm.WaveLLM` over `batch`."""
    outputs = model(batch.waves, batch.frame_mask, batch.tokens, batch.token_mask,
                    batch.target_pos, deterministic=deterministic)
    return loss_terms(outputs, batch, weights)


def objective(terms: LossTerms, weights: LossWeights, denom: jax.Array,
              num_micro: int = 1) -> jax.Array:
    """The differentiated scalar of one micro-batch: CE over the global token count plus the
    weighted auxiliary means, each divided by the number of micro-batches."""
    return (terms.ce_sum / denom + weights.aux * terms.aux_loss / num_micro
            + weights.fault * terms.fault_loss / num_micro)
