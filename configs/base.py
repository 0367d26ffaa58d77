"""Phi-3.5-mini + LoRA: `python train.py --config configs/base.py` (wavepose_jax/configs/base.py)."""

from wavepose_jax.configs.base import get_config  # noqa: F401
