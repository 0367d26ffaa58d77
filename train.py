"""Fine-tune WavePose: `python train.py --config configs/tiny.py` (see --help; the command is
wavepose_jax/train.py, installed as `wavepose-train`)."""

import sys

from wavepose_jax.train import main

if __name__ == "__main__":
    sys.exit(main())
