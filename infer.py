"""Coaching feedback for exercise clips: `python infer.py --input CLIP.json|DIR` (see --help)."""

import sys

from wavepose_jax.infer import main

if __name__ == "__main__":
    sys.exit(main())
