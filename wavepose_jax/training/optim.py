"""The optimizer: AdamW with warmup + cosine, global-norm clipping, one learning rate per group.

Groups come from the one trainable predicate (`lora.is_trainable`):

    encoder   trainable leaves under `encoder/`          peak lr = train.lr_encoder
    adapter   every other trainable leaf (bridge, LoRA,  peak lr = train.lr_bridge_lora
              and the LLM itself under full fine-tuning)
    frozen    leaves the predicate rejects              no update (optax.set_to_zero)

The train step differentiates only the trainable state, so `frozen` never reaches the
optimizer there and optimizer moments exist only for trainable leaves; the label keeps the
transform correct on any tree it is given. Weight decay applies to matrices (ndim >= 2, not
counting the leading layer axis of a scanned layer stack) only, not to norms, biases or gates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import optax

from wavepose_jax.models.lora import is_trainable, path_str
from wavepose_jax.models.phi3 import in_stacked_layers
from wavepose_jax.training.spec import TrainSpec

ENCODER, ADAPTER, FROZEN = "encoder", "adapter", "frozen"


def param_label(path: Any, trainable: Sequence[str]) -> str:
    """Optimizer group of the parameter at `path` (a key path or 'a/b/c' string)."""
    name = path if isinstance(path, str) else path_str(path)
    if not is_trainable(name, trainable):
        return FROZEN
    return ENCODER if name.startswith("encoder/") else ADAPTER


def param_labels(params: Any, trainable: Sequence[str]) -> Any:
    """Tree of group labels with the structure of `params` (an nnx.State or any pytree)."""
    return jax.tree_util.tree_map_with_path(lambda kp, _: param_label(kp, trainable), params)


def make_schedule(peak_lr: float, t: TrainSpec) -> optax.Schedule:
    """Linear warmup from 0 to `peak_lr`, then cosine decay to `peak_lr * min_lr_ratio`."""
    steps = max(t.steps, 1)
    warmup = min(t.warmup_steps, steps - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=warmup, decay_steps=steps,
        end_value=peak_lr * t.min_lr_ratio)


def _decay_mask(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p.ndim - int(in_stacked_layers(path_str(path))) >= 2, params)


def make_optimizer(t: TrainSpec) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule of the bridge + LoRA group, the one reported as `lr`).

    Gradients are clipped to global norm `train.clip_norm` before AdamW.
    """
    schedules = {ENCODER: make_schedule(t.lr_encoder, t),
                 ADAPTER: make_schedule(t.lr_bridge_lora, t)}

    def adamw(schedule):
        return optax.adamw(schedule, b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps,
                           weight_decay=t.weight_decay, mask=_decay_mask)

    tx = optax.chain(
        optax.clip_by_global_norm(t.clip_norm),
        optax.multi_transform(
            {ENCODER: adamw(schedules[ENCODER]), ADAPTER: adamw(schedules[ADAPTER]),
             FROZEN: optax.set_to_zero()},
            lambda params: param_labels(params, t.trainable)),
    )
    return tx, schedules[ADAPTER]
