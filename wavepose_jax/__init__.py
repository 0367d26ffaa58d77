"""WavePose-JAX: exercise clips (2D pose over time) to coaching feedback."""

import os

# transformers serves only tokenizers and configs here; without PyTorch (deliberately not a
# runtime dependency) it would announce on import that its models are unavailable.
# TRANSFORMERS_VERBOSITY=warning in the environment brings its messages back.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__version__ = "0.1.0"
