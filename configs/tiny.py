"""The CPU demo: `python train.py --config configs/tiny.py` (wavepose_jax/configs/tiny.py)."""

from wavepose_jax.configs.tiny import get_config  # noqa: F401
