"""Flax Phi-3 against transformers' PyTorch Phi3ForCausalLM, plus cache, LoRA hook and remat."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx

from wavepose_jax import hf
from wavepose_jax.models.phi3 import Phi3Config, Phi3ForCausalLM
from wavepose_jax.testing import TINY_PHI3, call, reference_logits

TOL = dict(rtol=1e-4, atol=1e-4)


def _ids(batch, length, seed=0, vocab=96):
    return np.random.default_rng(seed).integers(0, vocab, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("name,overrides,lengths", [
    ("plain_mha", dict(num_key_value_heads=4), (20,)),
    ("longrope_gqa", dict(rope_scaling="longrope"), (20, 50)),
    ("partial_window_tied", dict(rope_scaling="longrope", partial_rotary_factor=0.5,
                                 sliding_window=8, tie_word_embeddings=True), (50,)),
])
def test_logits_match_transformers(hf_checkpoint, name, overrides, lengths):
    torch_model, path = hf_checkpoint(name, **overrides)
    model = hf.load_pretrained(path, dtype=jnp.float32)
    assert (model.lm_head is None) == overrides.get("tie_word_embeddings", False)
    for length in lengths:
        ids = _ids(2, length, seed=length)
        np.testing.assert_allclose(np.asarray(call(model, ids)), reference_logits(torch_model, ids), **TOL)


def test_longrope_switches_factors(hf_checkpoint):
    """Past original_max_position_embeddings the long factors change the early positions too."""
    _, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32)
    ids = _ids(1, 50, seed=3)
    long_run = np.asarray(call(model, ids))[:, :20]
    short_run = np.asarray(call(model, ids[:, :20]))
    assert np.abs(long_run - short_run).max() > 1e-2


def test_right_padded_batch(hf_checkpoint):
    torch_model, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32)
    lengths = [20, 13, 7]
    ids = _ids(3, 20, seed=5)
    mask = (np.arange(20)[None] < np.array(lengths)[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, 0)
    out = np.asarray(call(model, ids, mask))
    ref = reference_logits(torch_model, ids, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(out[real], ref[real], **TOL)
    # Per-sequence LongRoPE choice: a short row next to a long one gets its unpadded logits.
    ids2 = _ids(2, 50, seed=6)
    mask2 = (np.arange(50)[None] < np.array([[50], [9]])).astype(np.int32)
    out2 = np.asarray(call(model, ids2, mask2))
    np.testing.assert_allclose(out2[1, :9], reference_logits(torch_model, ids2[1:, :9])[0], **TOL)


def test_inputs_embeds_and_positions(hf_checkpoint):
    _, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32)
    ids = jnp.asarray(_ids(2, 12, seed=7))
    ref = call(model, ids)
    np.testing.assert_allclose(call(model, inputs_embeds=model.embed(ids)), ref, **TOL)
    explicit = jnp.broadcast_to(jnp.arange(12), (2, 12))
    np.testing.assert_allclose(call(model, ids, positions=explicit), ref, **TOL)
    np.testing.assert_allclose(call(model, ids, positions=explicit + 3), ref, **TOL)  # RoPE is relative
    stretched = call(model, ids, positions=explicit * 2)
    assert np.abs(np.asarray(stretched) - np.asarray(ref)).max() > 1e-3
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=model.embed(ids))


def test_kv_cache_matches_full_forward(hf_checkpoint):
    _, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32)
    ids = jnp.asarray(_ids(2, 10, seed=8))
    full = np.asarray(call(model, ids))
    cache = model.init_cache(2, 16)
    logits, cache = call(model, ids[:, :6], cache=cache)
    steps = [np.asarray(logits)]
    for t in range(6, 10):
        logits, cache = call(model, ids[:, t:t + 1], cache=cache)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, **TOL)
    assert int(cache.index) == 10


@pytest.mark.parametrize("param_dtype", [jnp.bfloat16, jnp.float32])
def test_bf16_compute_close_to_fp32(hf_checkpoint, param_dtype):
    """bf16 activations (bf16 or fp32 parameters) vs fp32, logits of std ~1: mean abs error
    < 0.05, max < 0.6, argmax agreement >= 90%."""
    _, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    ids = _ids(2, 24, seed=9)
    ref = np.asarray(call(hf.load_pretrained(path, dtype=jnp.float32), ids))
    out = call(hf.load_pretrained(path, dtype=jnp.bfloat16, param_dtype=param_dtype), ids)
    assert out.dtype == jnp.float32
    err = np.abs(np.asarray(out) - ref)
    assert err.mean() < 0.05 and err.max() < 0.6, (err.mean(), err.max())
    assert (np.argmax(np.asarray(out), -1) == np.argmax(ref, -1)).mean() >= 0.9


def test_lora_hook_survives_nnx_transforms():
    model = Phi3ForCausalLM(TINY_PHI3, rngs=nnx.Rngs(0))
    ids = _ids(2, 8, vocab=64)
    base = call(model, ids)
    target = model.model.layers[0].self_attn.qkv_proj
    d_in, d_out = target.kernel.shape
    target.lora_a = nnx.Param(jax.random.normal(jax.random.key(1), (d_in, 4)))
    target.lora_b = nnx.Param(jnp.zeros((4, d_out)))
    target.lora_scale = 2.0
    np.testing.assert_allclose(call(model, ids), base, rtol=1e-6, atol=1e-6)  # B = 0: no change

    target.lora_b = nnx.Param(0.1 * jax.random.normal(jax.random.key(2), (4, d_out)))
    adapted = call(model, ids)
    assert np.abs(np.asarray(adapted) - np.asarray(base)).max() > 1e-3
    x = jnp.ones((3, d_in))
    expected = x @ target.kernel[...] + 2.0 * (x @ target.lora_a[...]) @ target.lora_b[...]
    np.testing.assert_allclose(target(x), expected, rtol=1e-5, atol=1e-5)

    graphdef, state = nnx.split(model)
    np.testing.assert_allclose(call(nnx.merge(graphdef, state), ids), adapted, rtol=1e-6, atol=1e-6)
    is_lora = lambda path, _: any(str(p).startswith("lora_") for p in path)  # noqa: E731
    lora_state = nnx.state(model, is_lora)
    assert {p[-1] for p, _ in nnx.to_flat_state(lora_state)} == {"lora_a", "lora_b"}

    def loss(m):
        return jnp.mean(m(jnp.asarray(ids)) ** 2)

    grads = nnx.jit(nnx.grad(loss, argnums=nnx.DiffState(0, is_lora)))(model)
    flat = nnx.to_flat_state(grads)
    assert len(flat) == 2 and all(float(jnp.abs(g.get_value()).sum()) > 0 for _, g in flat)

    target.lora_dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    model.eval()
    np.testing.assert_allclose(call(model, ids), adapted, rtol=1e-6, atol=1e-6)
    model.train()
    assert np.abs(np.asarray(call(model, ids)) - np.asarray(adapted)).max() > 1e-4


def test_remat_gives_same_loss_and_grads():
    ids = jnp.asarray(_ids(2, 8, vocab=64))
    grads = []
    for remat in (False, True):
        model = Phi3ForCausalLM(dataclasses.replace(TINY_PHI3, remat=remat), rngs=nnx.Rngs(0))
        grads.append(nnx.jit(nnx.grad(lambda m: jnp.mean(m(ids) ** 2)))(model))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_config_hf_round_trip():
    scaling = dict(type="longrope", short_factor=[1.0, 1.1, 1.2, 1.3], long_factor=[2.0, 3.0, 4.0, 5.0])
    hf_dict = transformers.Phi3Config(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, original_max_position_embeddings=64,
        rope_scaling=scaling, pad_token_id=0).to_dict()
    config = Phi3Config.from_hf(hf_dict)
    assert config.rope_scaling.long_factor == (2.0, 3.0, 4.0, 5.0)
    assert config.head_dim == 8 and config.num_key_value_heads == 2
    assert Phi3Config.from_hf(config.to_hf()) == config
    reloaded = transformers.Phi3Config(**config.to_hf())
    assert reloaded.rope_parameters["rope_type"] == "longrope"
    assert reloaded.rope_parameters["long_factor"] == [2.0, 3.0, 4.0, 5.0]
    assert dataclasses.replace(config, dtype=jnp.bfloat16).to_hf()["rope_scaling"] == config.to_hf()["rope_scaling"]
    with pytest.raises(ValueError, match="short_factor"):
        Phi3Config.from_hf({**hf_dict, "rope_scaling": {**scaling, "short_factor": [1.0]}})
    with pytest.raises(ValueError, match="model_type"):
        Phi3Config.from_hf({**hf_dict, "model_type": "llama"})
