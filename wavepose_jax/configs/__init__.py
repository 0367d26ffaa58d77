"""Run configs (`get_config()` -> ml_collections.ConfigDict): base.py (Phi-3.5-mini + LoRA) and
tiny.py (the CPU demo). `configs/*.py` at the repository root point here, so
`python train.py --config configs/tiny.py` works in a checkout."""
