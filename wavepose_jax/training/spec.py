"""What training is told: the `train` settings of a run as one frozen dataclass.

Made once from the config at the command line (`spec.RunSpec.from_config`); every field's
default and meaning is in `configs/base.py`, the one place they are set.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """The `train` group: optimisation, losses, what trains, and the loop's cadence."""

    steps: int
    batch_size: int  # global batch (all processes and devices)
    grad_accum: int
    lr_encoder: float
    lr_bridge_lora: float
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    adam_b1: float
    adam_b2: float
    adam_eps: float
    clip_norm: float
    max_bad_steps: int
    aux_loss_weight: float
    fault_loss_weight: float
    trainable: tuple[str, ...]  # regexes over parameter paths
    seed: int
    log_every: int
    eval_every: int
    ckpt_every: int
    keep_checkpoints: int
    num_eval_samples: int
