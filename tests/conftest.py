"""Shared fixtures: tiny random Phi-3 checkpoints written by transformers' PyTorch model.

Builders live in `wavepose_jax.testing`; this file only holds fixtures.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# The suite starts train.py, infer.py and the other commands in many subprocesses, which
# compile the same small programs again and again. One persistent XLA cache per test session
# (inherited by every subprocess through the environment) lets each compile once; set before
# jax is first imported, so this process uses it too.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="wavepose-test-xla-")
    atexit.register(shutil.rmtree, _CACHE, True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from wavepose_jax.testing import build_tiny_run, reference_model


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(workdir, clip dir, trained params) of one tiny checkpointed run for the whole session
    (`testing.build_tiny_run`). Read it only; a test that changes a run copies it first."""
    return build_tiny_run(tmp_path_factory.mktemp("tiny_run"))


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
