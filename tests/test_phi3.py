"""Flax Phi-3 against transformers' PyTorch Phi3ForCausalLM, plus cache, LoRA hook and remat.

Parity cases run on both forms of the decoder stack: unrolled and scanned (`scan_layers`).
"""

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

pytestmark = pytest.mark.reference  # against transformers' PyTorch Phi-3

TOL = dict(rtol=1e-4, atol=1e-4)


def _ids(batch, length, seed=0, vocab=96):
    return np.random.default_rng(seed).integers(0, vocab, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
@pytest.mark.parametrize("name,overrides,lengths", [
    ("plain_mha", dict(num_key_value_heads=4), (20,)),
    ("longrope_gqa", dict(rope_scaling="longrope"), (20, 50)),
    ("partial_window_tied", dict(rope_scaling="longrope", partial_rotary_factor=0.5,
                                 sliding_window=8, tie_word_embeddings=True), (50,)),
])
def test_logits_match_transformers(hf_checkpoint, name, overrides, lengths, scan):
    torch_model, path = hf_checkpoint(name, **overrides)
    model = hf.load_pretrained(path, dtype=jnp.float32, scan_layers=scan)
    assert isinstance(model.model.layers, nnx.List) != scan
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


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_kv_cache_matches_full_forward(hf_checkpoint, scan):
    _, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32, scan_layers=scan)
    ids = jnp.asarray(_ids(2, 10, seed=8))
    full = np.asarray(call(model, ids))
    cache = model.init_cache(2, 16)
    assert (cache.k.shape == (2, 4, 16, 16)) if scan else len(cache.k) == 2
    logits, _, cache = call(model, ids[:, :6], cache=cache)
    steps = [np.asarray(logits)]
    for t in range(6, 10):
        logits, _, cache = call(model, ids[:, t:t + 1], cache=cache)
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
        return jnp.mean(m(jnp.asarray(ids)).logits ** 2)

    grads = nnx.jit(nnx.grad(loss, argnums=nnx.DiffState(0, is_lora)))(model)
    flat = nnx.to_flat_state(grads)
    assert len(flat) == 2 and all(float(jnp.abs(g.get_value()).sum()) > 0 for _, g in flat)

    target.lora_dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    model.eval()
    np.testing.assert_allclose(call(model, ids), adapted, rtol=1e-6, atol=1e-6)
    model.train()
    assert np.abs(np.asarray(call(model, ids)) - np.asarray(adapted)).max() > 1e-4


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_remat_gives_same_loss_and_grads(scan):
    ids = jnp.asarray(_ids(2, 8, vocab=64))
    grads = []
    for remat in (False, True):
        config = dataclasses.replace(TINY_PHI3, remat=remat, scan_layers=scan)
        model = Phi3ForCausalLM(config, rngs=nnx.Rngs(0))
        grads.append(nnx.jit(nnx.grad(lambda m: jnp.mean(m(ids).logits ** 2)))(model))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _stack_layers(unrolled_state, scanned_abstract):
    """The scanned model's state holding the unrolled model's weights (layer i -> slot i)."""
    flat = dict(nnx.to_flat_state(unrolled_state))
    out = []
    for path, var in nnx.to_flat_state(scanned_abstract):
        if "layers" in path and not str(path[path.index("layers") + 1]).isdigit():
            k = path.index("layers") + 1
            n = var.get_value().shape[0]
            value = jnp.stack([flat[path[:k] + (i,) + path[k:]].get_value() for i in range(n)])
        else:
            value = flat[path].get_value()
        out.append((path, var.replace(value)))
    return nnx.from_flat_state(out)


def test_scanned_stack_equals_unrolled_with_lora_dropout_and_grads():
    """Same weights and LoRA deltas in both forms: equal logits, equal LoRA gradients, and the
    stacked LoRA dropout draws a different mask per layer."""
    from wavepose_jax.models import lora

    ids = jnp.asarray(_ids(2, 9, vocab=64))
    models = {}
    for scan in (False, True):
        model = Phi3ForCausalLM(dataclasses.replace(TINY_PHI3, scan_layers=scan), rngs=nnx.Rngs(0))
        lora.apply_lora(model, lora.LoraConfig(rank=4, alpha=8.0, dropout=0.0), nnx.Rngs(1))
        models[scan] = model
    unrolled = models[False]
    for layer in unrolled.model.layers:  # non-zero B, so the deltas matter
        for m in (layer.self_attn.qkv_proj, layer.mlp.down_proj):
            m.lora_b[...] = 0.1 * jax.random.normal(jax.random.key(7), m.lora_b.shape)
    scanned = models[True]
    assert scanned.model.layers.mlp.down_proj.lora_a.shape == (2, 64, 4)
    nnx.update(scanned, _stack_layers(nnx.state(unrolled), nnx.state(scanned)))
    np.testing.assert_allclose(call(scanned, ids), call(unrolled, ids), rtol=1e-5, atol=1e-5)

    is_lora = lambda path, _: any(str(p).startswith("lora_") for p in path)  # noqa: E731
    grads = {scan: nnx.jit(nnx.grad(lambda m: jnp.mean(m(ids).logits ** 2),
                                    argnums=nnx.DiffState(0, is_lora)))(models[scan])
             for scan in (False, True)}
    expected = _stack_layers(grads[False], grads[True])
    for (path, a), (_, b) in zip(nnx.to_flat_state(grads[True]), nnx.to_flat_state(expected)):
        np.testing.assert_allclose(a.get_value(), b.get_value(), rtol=1e-4, atol=1e-6,
                                   err_msg=str(path))

    stacked = Phi3ForCausalLM(dataclasses.replace(TINY_PHI3, scan_layers=True), rngs=nnx.Rngs(0))
    lora.apply_lora(stacked, lora.LoraConfig(rank=4, alpha=8.0, dropout=0.5), nnx.Rngs(1))
    keys = stacked.model.layers.self_attn.qkv_proj.lora_dropout.rngs.key[...]
    assert keys.shape == (2,)
    nnx.reseed(stacked, dropout=3, policy="match_shape")
    keys = jax.random.key_data(stacked.model.layers.self_attn.qkv_proj.lora_dropout.rngs.key[...])
    assert keys.shape[0] == 2 and not np.array_equal(keys[0], keys[1])


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
