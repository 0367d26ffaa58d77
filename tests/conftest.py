"""Shared fixtures: tiny random Phi-3 checkpoints written by transformers' PyTorch model."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

torch.set_num_threads(2)

TINY_HF = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA
    max_position_embeddings=128,
    original_max_position_embeddings=32,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)


def longrope_scaling(rotary_dim: int, seed: int = 0) -> dict:
    """Phi-3.5-like LongRoPE factors: short near 1, long growing with the frequency index."""
    rng = np.random.default_rng(seed)
    n = rotary_dim // 2
    short = 1.0 + 0.1 * rng.random(n)
    long = np.linspace(1.0, 8.0, n) * (1.0 + 0.2 * rng.random(n))
    return {"type": "longrope", "short_factor": short.round(4).tolist(),
            "long_factor": long.round(4).tolist()}


def hf_config(**overrides) -> transformers.Phi3Config:
    kwargs = {**TINY_HF, **overrides}
    if kwargs.get("rope_scaling") == "longrope":
        head_dim = kwargs["hidden_size"] // kwargs["num_attention_heads"]
        rotary = int(head_dim * kwargs.get("partial_rotary_factor", 1.0))
        kwargs["rope_scaling"] = longrope_scaling(rotary)
    return transformers.Phi3Config(**kwargs)


def build_hf_model(seed: int = 0, **overrides) -> transformers.Phi3ForCausalLM:
    """A random fp32 Phi-3 (eval mode, eager attention) with weights large enough that logits
    are well spread, and non-trivial norm weights."""
    config = hf_config(**overrides)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.Phi3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """Factory: ``hf_checkpoint(name, dtype=None, max_shard_size=None, **config) -> (model, dir)``.

    Builds the transformers model, writes it with ``save_pretrained`` (optionally cast to
    ``dtype`` and sharded) and caches the result by name for the session.
    """
    cache = {}

    def make(name: str, *, dtype=None, max_shard_size=None, seed: int = 0, **overrides):
        if name not in cache:
            model = build_hf_model(seed, **overrides)
            directory = tmp_path_factory.mktemp(name)
            to_save = model if dtype is None else build_hf_model(seed, **overrides).to(dtype)
            kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
            to_save.save_pretrained(directory, **kwargs)
            if dtype is not None:  # the reference: the stored weights upcast, fp32 buffers kept
                model.load_state_dict({k: v.float() for k, v in to_save.state_dict().items()})
            cache[name] = (model, directory)
        return cache[name]

    return make


def hf_logits(model, input_ids, attention_mask=None) -> np.ndarray:
    """float32 logits of the transformers model."""
    with torch.no_grad():
        ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
        mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask))
        return model(input_ids=ids, attention_mask=mask).logits.float().numpy()


@nnx.jit
def _jit_call(model, kwargs):
    return model(**kwargs)


def call(model, input_ids=None, attention_mask=None, **kwargs):
    """Jitted ``model(input_ids, attention_mask, **kwargs)`` (array arguments only)."""
    kwargs = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    if input_ids is not None:
        kwargs["input_ids"] = jnp.asarray(input_ids)
    if attention_mask is not None:
        kwargs["attention_mask"] = jnp.asarray(attention_mask)
    return _jit_call(model, kwargs)
