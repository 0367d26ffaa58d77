"""LoRA deltas on the fused Phi-3 projections, the trainable predicate, and the memory report."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wavepose_jax.configs import base as base_config
from wavepose_jax.models import lora
from wavepose_jax.models.phi3 import Linear, LongRopeScaling, Phi3Config, Phi3ForCausalLM
from wavepose_jax.spec import RunSpec
from wavepose_jax.testing import TINY_PHI3 as TINY
from wavepose_jax.training.state import format_memory_report, memory_report
LORA = lora.LoraConfig(rank=4, alpha=8.0, dropout=0.0)


@nnx.jit
def _logits(model, ids):
    return model(ids).logits


def test_zero_b_reproduces_base_logits():
    model = Phi3ForCausalLM(TINY, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 7)))
    before = np.asarray(_logits(model, ids))
    added = lora.apply_lora(model, LORA, nnx.Rngs(1))
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj.lora_a, nnx.Param)
    np.testing.assert_array_equal(np.asarray(_logits(model, ids)), before)
    # Base parameter paths unchanged; the deltas sit beside the kernels.
    names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert "model/layers/1/mlp/gate_up_proj/kernel" in names
    assert "model/layers/1/mlp/gate_up_proj/lora_b" in names
    # Every fused projection of every layer, nothing else (lm_head is a Linear too).
    adapted = {p for p, _ in lora.lora_modules(model, LORA.targets)}
    assert adapted == {f"model/layers/{i}/{m}" for i in range(2) for m in (
        "self_attn/qkv_proj", "self_attn/o_proj", "mlp/gate_up_proj", "mlp/down_proj")}
    assert model.lm_head.lora_a is None
    qkv_out = (4 + 2 * 2) * 8
    inter = TINY.intermediate_size
    per_layer = 4 * ((32 + qkv_out) + (32 + 32) + (32 + 2 * inter) + (inter + 32))
    assert added == 2 * per_layer


def test_stacked_layers_get_stacked_deltas():
    """A scanned stack: one stacked delta per projection, [L, in, r] / [L, r, out], the same
    parameter count as the unrolled stack, and zero B reproduces the base."""
    import dataclasses

    model = Phi3ForCausalLM(dataclasses.replace(TINY, scan_layers=True), rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 7)))
    before = np.asarray(_logits(model, ids))
    added = lora.apply_lora(model, LORA, nnx.Rngs(1))
    unrolled = Phi3ForCausalLM(TINY, rngs=nnx.Rngs(0))
    assert added == lora.apply_lora(unrolled, LORA, nnx.Rngs(1))
    adapted = {p for p, _ in lora.lora_modules(model, LORA.targets)}
    assert adapted == {f"model/layers/{m}" for m in (
        "self_attn/qkv_proj", "self_attn/o_proj", "mlp/gate_up_proj", "mlp/down_proj")}
    down = model.model.layers.mlp.down_proj
    assert down.lora_a.shape == (2, TINY.intermediate_size, 4) and down.lora_b.shape == (2, 4, 32)
    assert not np.array_equal(np.asarray(down.lora_a[0]), np.asarray(down.lora_a[1]))
    np.testing.assert_array_equal(np.asarray(_logits(model, ids)), before)


def test_lora_layer_equals_merged_dense():
    rngs = nnx.Rngs(0)
    linear = Linear(16, 24, dtype=jnp.float32, param_dtype=jnp.float32, init_std=0.1, rngs=rngs)
    linear.lora_a = nnx.Param(jnp.zeros((1, 1)))  # any value: apply_lora replaces it
    lora.apply_lora(linear, lora.LoraConfig(rank=4, alpha=8.0, dropout=0.0, targets=(".*",)),
                    nnx.Rngs(2))
    a = np.asarray(linear.lora_a[...])
    assert a.shape == (16, 4) and np.abs(a).max() <= 1 / np.sqrt(16)  # kaiming-uniform bound
    assert a.std() > 0.5 / np.sqrt(3 * 16)
    np.testing.assert_array_equal(np.asarray(linear.lora_b[...]), np.zeros((4, 24)))
    b = np.random.default_rng(1).normal(size=(4, 24)).astype(np.float32)
    linear.lora_b[...] = jnp.asarray(b)
    x = np.random.default_rng(2).normal(size=(3, 16)).astype(np.float32)
    merged = np.asarray(linear.kernel[...]) + (8.0 / 4) * a @ b
    np.testing.assert_allclose(np.asarray(linear(jnp.asarray(x))), x @ merged, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lora_branch_gradients_equal_autodiff_of_the_formula(dtype):
    """`Linear`'s LoRA branch has a hand-written backward (thin transposes only); its gradients
    for the input, A and B must be those of `scale * (h @ a) @ b` differentiated by JAX."""
    from wavepose_jax.models.phi3 import _lora_branch

    rng = np.random.default_rng(0)
    h, a, b, g = (jnp.asarray(rng.normal(size=s), dtype)
                  for s in ((2, 5, 16), (16, 4), (4, 24), (2, 5, 24)))
    scale = 2.0

    def plain(h, a, b):
        return scale * jnp.dot(jnp.dot(h, a), b)

    def custom(h, a, b):
        return _lora_branch(h, a, b, scale, None)

    y_ref, vjp_ref = jax.vjp(plain, h, a, b)
    y, vjp = jax.vjp(custom, h, a, b)
    tol = 1e-6 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), rtol=tol)
    for got, want in zip(vjp(g), vjp_ref(g)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   rtol=tol, atol=tol * float(jnp.abs(want.astype(jnp.float32)).max()))


def test_lora_dropout_only_when_training():
    model = Phi3ForCausalLM(TINY, rngs=nnx.Rngs(0))
    lora.apply_lora(model, lora.LoraConfig(rank=4, alpha=8.0, dropout=0.5), nnx.Rngs(1))
    qkv = model.model.layers[0].self_attn.qkv_proj
    qkv.lora_b[...] = jnp.ones_like(qkv.lora_b[...])
    x = jnp.ones((2, 32))
    np.testing.assert_array_equal(np.asarray(qkv(x)), np.asarray(qkv(x)))  # deterministic
    train = nnx.view(qkv, deterministic=False)
    assert not np.array_equal(np.asarray(train(x)), np.asarray(qkv(x)))


def test_bad_targets_and_rank():
    model = Phi3ForCausalLM(TINY, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="lora.targets"):
        lora.apply_lora(model, lora.LoraConfig(targets=(r".*q_proj",)), nnx.Rngs(0))
    with pytest.raises(ValueError, match="lora.rank"):
        lora.apply_lora(model, lora.LoraConfig(rank=-1), nnx.Rngs(0))
    assert lora.apply_lora(model, lora.LoraConfig(rank=0), nnx.Rngs(0)) == 0
    assert model.model.layers[0].mlp.down_proj.lora_a is None


def test_is_trainable_predicate():
    trainable = tuple(base_config.get_config().train.trainable)
    trains = lambda path: lora.is_trainable(path, trainable)
    assert trains("encoder/layers/0/attn/query/kernel")
    assert trains("bridge/gate")
    assert trains(("llm", "model", "layers", 3, "self_attn", "qkv_proj", "lora_b"))
    assert not trains("llm/model/layers/3/self_attn/qkv_proj/kernel")
    assert not trains("llm/model/embed_tokens/embedding")
    assert lora.is_trainable("llm/model/embed_tokens/embedding", (".*",))
    key_path = (jax.tree_util.DictKey("llm"), jax.tree_util.SequenceKey(0),
                jax.tree_util.GetAttrKey("value"))
    assert lora.path_str(key_path) == "llm/0"


def test_memory_report_of_base_config_on_phi35_mini_shapes():
    """configs/base.py traced abstractly with Phi-3.5-mini's real shapes (the facts of its config.json)."""
    factors = (1.0,) * 48  # LongRoPE factors do not change parameter shapes
    phi35 = Phi3Config(
        vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5, rope_theta=10000.0,
        rope_scaling=LongRopeScaling(factors, factors), max_position_embeddings=131072,
        original_max_position_embeddings=4096)
    spec = RunSpec.from_config(base_config.get_config())
    report = memory_report(spec.model, spec.train,
                           dataclasses.replace(phi35, **spec.llm.compute()))
    print(format_memory_report(report))
    assert report["base_params"] == 3_821_079_552
    assert report["lora_params"] == 50_331_648
    assert report["frozen_params"] == 3_821_079_552
    assert report["frozen_bytes"] == 2 * 3_821_079_552  # bf16 base
    trainable = report["trainable_params"]
    assert trainable > report["lora_params"]  # + encoder + bridge
    assert report["trainable_bytes"] == report["grad_bytes"] == 4 * trainable  # fp32
    assert 2 * 4 * trainable <= report["optimizer_bytes"] < 2 * 4 * trainable + 1024  # mu, nu
