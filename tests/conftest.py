"""Shared fixtures: tiny random Phi-3 checkpoints written by transformers' PyTorch model.

Builders live in `wavepose_jax.testing`; this file only holds fixtures.
"""

from __future__ import annotations

import pytest

from wavepose_jax.testing import reference_model


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """Factory: ``hf_checkpoint(name, dtype=None, max_shard_size=None, **config) -> (model, dir)``.

    Builds the transformers model, writes it with ``save_pretrained`` (optionally cast to
    ``dtype`` and sharded) and caches the result by name for the session.
    """
    import torch  # the reference: only tests marked `reference` use this fixture

    torch.set_num_threads(2)
    cache = {}

    def make(name: str, *, dtype=None, max_shard_size=None, seed: int = 0, **overrides):
        if name not in cache:
            model = reference_model(seed, **overrides)
            directory = tmp_path_factory.mktemp(name)
            to_save = model if dtype is None else reference_model(seed, **overrides).to(dtype)
            kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
            to_save.save_pretrained(directory, **kwargs)
            if dtype is not None:  # the reference: the stored weights upcast, fp32 buffers kept
                model.load_state_dict({k: v.float() for k, v in to_save.state_dict().items()})
            cache[name] = (model, directory)
        return cache[name]

    return make
