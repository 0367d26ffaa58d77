"""WavePose-JAX: exercise clips (2D pose over time) to coaching feedback."""

__version__ = "0.1.0"
