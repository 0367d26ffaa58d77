"""Checkpoint loading / saving against transformers, sharded placement and error messages."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from wavepose_jax import hf, hf_layout
from wavepose_jax.testing import call, reference_logits

pytestmark = pytest.mark.reference  # against transformers' PyTorch Phi-3

TOL = dict(rtol=1e-4, atol=1e-4)
IDS = np.random.default_rng(0).integers(0, 96, (2, 21)).astype(np.int32)


def test_sharded_checkpoint_with_index(hf_checkpoint):
    torch_model, path = hf_checkpoint("sharded", max_shard_size="40KB", rope_scaling="longrope")
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (path / hf.INDEX_FILE).is_file()
    model = hf.load_pretrained(path, dtype=jnp.float32)
    np.testing.assert_allclose(np.asarray(call(model, IDS)), reference_logits(torch_model, IDS), **TOL)



def test_a_load_returns_each_files_sha256_and_names_each_tensors_place(hf_checkpoint):
    """`load_weights` hashes every weight file it reads (on each load: nothing is cached);
    `hf_entries` describes each tensor with named fields, one entry per slot of a stacked leaf."""
    _, path = hf_checkpoint("sharded", max_shard_size="40KB", rope_scaling="longrope")
    shards = sorted(path.glob("model-*.safetensors"))
    want = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}
    for scan in (False, True):
        loaded = hf.load_weights(path, dtype=jnp.float32, scan_layers=scan)
        assert loaded.digests == want and list(loaded.digests) == sorted(want)
        flat = nnx.to_flat_state(nnx.state(loaded.model, nnx.Param))
        entries = {e.name: e for e in hf_layout.hf_entries(flat)}
        assert set(entries) == set(json.loads((path / hf.INDEX_FILE).read_text())["weight_map"])
        down = entries["model.layers.1.mlp.down_proj.weight"]
        assert down.layer == (1 if scan else None) and down.transpose
        assert tuple(str(k) for k in flat[down.index][0])[-2:] == ("down_proj", "kernel")
        assert down.hf_shape == down.shape[::-1] == (64, 96)  # HF [out, in], Flax [in, out]
        norm = entries["model.norm.weight"]
        assert norm.layer is None and not norm.transpose and norm.hf_shape == norm.shape
        assert hf_layout.hf_tensor_shapes(loaded.model.config) == [
            (e.name, e.hf_shape) for e in hf_layout.hf_entries(flat)]

def test_bf16_weights_on_disk(hf_checkpoint):
    torch_model, path = hf_checkpoint("bf16", dtype=torch.bfloat16, rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32)
    assert model.lm_head.kernel[...].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(call(model, IDS)), reference_logits(torch_model, IDS), **TOL)
    as_bf16 = hf.load_pretrained(path)  # default dtype: bfloat16, exact copy of the stored weights
    np.testing.assert_array_equal(
        np.asarray(as_bf16.lm_head.kernel[...].astype(jnp.float32)),
        torch_model.lm_head.weight.detach().numpy().T)


def test_save_pretrained_round_trip(hf_checkpoint, tmp_path):
    torch_model, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32)
    out = hf.save_pretrained(model, tmp_path / "single")
    assert (out / "model.safetensors").is_file() and not (out / hf.INDEX_FILE).exists()
    reloaded = transformers.Phi3ForCausalLM.from_pretrained(out).eval()
    np.testing.assert_allclose(reference_logits(reloaded, IDS), reference_logits(torch_model, IDS), **TOL)

    sharded = hf.save_pretrained(model, tmp_path / "sharded", max_shard_size="50KB")
    index = json.loads((sharded / hf.INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 1
    reloaded = transformers.Phi3ForCausalLM.from_pretrained(sharded).eval()
    np.testing.assert_allclose(reference_logits(reloaded, IDS), reference_logits(torch_model, IDS), **TOL)


def test_tied_embeddings_round_trip(hf_checkpoint, tmp_path):
    torch_model, path = hf_checkpoint("tied", tie_word_embeddings=True)
    model = hf.load_pretrained(path, dtype=jnp.float32)
    assert model.lm_head is None
    out = hf.save_pretrained(model, tmp_path / "tied")
    assert "lm_head.weight" not in load_file(out / "model.safetensors")
    reloaded = transformers.Phi3ForCausalLM.from_pretrained(out).eval()
    np.testing.assert_allclose(reference_logits(reloaded, IDS), reference_logits(torch_model, IDS), **TOL)


def test_lora_saved_as_base_and_merge(hf_checkpoint, tmp_path):
    torch_model, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32)
    base_logits = np.asarray(call(model, IDS))
    for layer in model.model.layers:
        for lin in (layer.self_attn.qkv_proj, layer.mlp.down_proj):
            d_in, d_out = lin.kernel.shape
            lin.lora_a = nnx.Param(0.3 * jax.random.normal(jax.random.key(d_out), (d_in, 4)))
            lin.lora_b = nnx.Param(0.3 * jax.random.normal(jax.random.key(d_in), (4, d_out)))
            lin.lora_scale = 0.5
    adapted = np.asarray(call(model, IDS))
    assert np.abs(adapted - base_logits).max() > 1e-2

    out = hf.save_pretrained(model, tmp_path / "base")
    assert not any("lora" in k for k in load_file(out / "model.safetensors"))
    reloaded = transformers.Phi3ForCausalLM.from_pretrained(out).eval()
    np.testing.assert_allclose(reference_logits(reloaded, IDS), base_logits, **TOL)

    merged = hf.merge_lora(model)
    assert merged.model.layers[0].self_attn.qkv_proj.lora_a is None
    assert model.model.layers[0].self_attn.qkv_proj.lora_a is not None  # input untouched
    np.testing.assert_allclose(np.asarray(call(merged, IDS)), adapted, **TOL)
    assert hf.num_params(merged) == sum(p.numel() for p in torch_model.parameters())


def test_tokenizer_round_trip(hf_checkpoint, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "<|end|>", "squat", "deeper", "knees"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<|end|>")
    _, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    out = hf.save_pretrained(hf.load_pretrained(path, dtype=jnp.float32), tmp_path / "with_tok", tokenizer=tok)
    loaded = hf.load_tokenizer(out)
    assert loaded("squat deeper")["input_ids"] == [3, 4]
    assert loaded.eos_token_id == 2
    with pytest.raises(hf.WeightsError, match="tokenizer"):
        hf.load_tokenizer(path)


def _copy_checkpoint(src, dst, *, config_edit=None, tensor_edit=None):
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    if config_edit:
        config_edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    tensors = load_file(src / "model.safetensors")
    if tensor_edit:
        tensor_edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_clear_errors(hf_checkpoint, tmp_path):
    _, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")

    with pytest.raises(hf.WeightsError, match="directory not found"):
        hf.load_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hf.WeightsError, match=r"config\.json: missing"):
        hf.load_pretrained(tmp_path / "empty")

    llama = _copy_checkpoint(path, tmp_path / "llama", config_edit=lambda c: c.update(
        model_type="llama", architectures=["LlamaForCausalLM"]))
    with pytest.raises(hf.WeightsError, match=r"config\.json: model_type: expected 'phi3'"):
        hf.load_pretrained(llama)

    wrong = _copy_checkpoint(path, tmp_path / "shape", config_edit=lambda c: c.update(intermediate_size=80))
    with pytest.raises(hf.WeightsError, match=r"model\.safetensors: tensor 'model\.layers\.\d\.mlp\.\w+_proj\.weight': shape"):
        hf.load_pretrained(wrong)

    missing = _copy_checkpoint(path, tmp_path / "missing",
                               tensor_edit=lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(hf.WeightsError, match="missing tensor 'model.layers.1.mlp.down_proj.weight'"):
        hf.load_pretrained(missing)

    extra = _copy_checkpoint(path, tmp_path / "extra",
                             tensor_edit=lambda t: t.update({"model.layers.2.mlp.down_proj.weight": np.zeros((2, 2))}))
    with pytest.raises(hf.WeightsError, match="unexpected tensor 'model.layers.2.mlp.down_proj.weight'"):
        hf.load_pretrained(extra)

    (tmp_path / "nosafe").mkdir()
    (tmp_path / "nosafe" / "config.json").write_text((path / "config.json").read_text())
    (tmp_path / "nosafe" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(hf.WeightsError, match="pickle weights are not read"):
        hf.load_pretrained(tmp_path / "nosafe")


def test_load_onto_mesh(hf_checkpoint, tmp_path):
    """Four host CPU devices (fsdp=2, tensor=2): parameters land sharded, logits unchanged."""
    torch_model, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    expected = reference_logits(torch_model, IDS)
    script = textwrap.dedent(f"""
        import jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        from wavepose_jax import hf, sharding
        mesh = sharding.make_mesh({{"data": 1, "fsdp": 2, "tensor": -1}})
        model = hf.load_pretrained({str(path)!r}, dtype=jnp.float32, mesh=mesh)
        qkv = model.model.layers[0].self_attn.qkv_proj.kernel[...]
        assert tuple(qkv.sharding.spec) == ("fsdp", "tensor"), qkv.sharding.spec
        assert len(qkv.addressable_shards) == 4 and qkv.addressable_shards[0].data.shape == (32, 64)
        norm = model.model.norm.weight[...]
        assert tuple(norm.sharding.spec) == (), norm.sharding.spec
        emb = model.model.embed_tokens.embedding[...]
        assert tuple(emb.sharding.spec) == ("tensor", "fsdp"), emb.sharding.spec
        ids = jnp.asarray(np.array({IDS.tolist()}, np.int32))
        np.save({str(tmp_path / "mesh_logits.npy")!r}, np.asarray(nnx.jit(lambda m, i: m(i).logits)(model, ids)))
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "mesh_logits.npy"), expected, **TOL)


# ------------------------------------------------------------------------------------------------
# The scanned (stacked) decoder stack reads and writes the same files


def test_scanned_stack_loads_saves_and_merges(hf_checkpoint, tmp_path):
    """Sharded bf16 files -> slots of stacked leaves; saved back per layer for transformers;
    LoRA merged one layer at a time; the same fingerprint as the unrolled form."""
    from wavepose_jax.models.lora import LoraConfig, apply_lora
    from wavepose_jax.models.phi3 import from_bits
    from wavepose_jax.base_record import base_record_of

    torch_model, path = hf_checkpoint("sharded_bf16", dtype=torch.bfloat16, max_shard_size="40KB",
                                      rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32, scan_layers=True)
    kernel = model.model.layers.mlp.gate_up_proj.kernel[...]
    assert kernel.shape == (2, 64, 192) and kernel.dtype == jnp.float32
    np.testing.assert_array_equal(  # slot 1 holds layer 1, exactly
        np.asarray(kernel[1]), torch_model.model.layers[1].mlp.gate_up_proj.weight.detach().numpy().T)
    np.testing.assert_allclose(np.asarray(call(model, IDS)), reference_logits(torch_model, IDS), **TOL)
    as_bf16 = hf.load_pretrained(path, scan_layers=True)
    bits = as_bf16.model.layers.self_attn.qkv_proj.kernel[...]
    assert bits.dtype == jnp.uint16  # 16-bit stacked weights are stored as their bits
    unrolled = hf.load_pretrained(path, scan_layers=False)
    np.testing.assert_array_equal(  # the stored bf16 values, exactly
        np.asarray(from_bits(bits, jnp.bfloat16)[1]),
        np.asarray(unrolled.model.layers[1].self_attn.qkv_proj.kernel[...]))
    # bf16 compute rounds at other points in a loop than unrolled (same bound as test_phi3's)
    err = np.abs(np.asarray(call(as_bf16, IDS)) - np.asarray(call(unrolled, IDS)))
    assert err.mean() < 0.05 and err.max() < 0.6, (err.mean(), err.max())
    assert (base_record_of(as_bf16, path=str(path)).fingerprint
            == base_record_of(unrolled, path=str(path)).fingerprint)
    assert hf.num_params(model) == sum(p.numel() for p in torch_model.parameters())

    out = hf.save_pretrained(model, tmp_path / "scanned", max_shard_size="50KB")
    names = set(json.loads((out / hf.INDEX_FILE).read_text())["weight_map"])
    assert "model.layers.1.self_attn.o_proj.weight" in names and len(names) == len(
        dict(torch_model.named_parameters()))
    reloaded = transformers.Phi3ForCausalLM.from_pretrained(out).eval()
    np.testing.assert_allclose(reference_logits(reloaded, IDS), reference_logits(torch_model, IDS), **TOL)

    apply_lora(model, LoraConfig(rank=4, alpha=8.0, dropout=0.0), nnx.Rngs(0))
    b = model.model.layers.mlp.down_proj.lora_b
    b[...] = 0.3 * jax.random.normal(jax.random.key(1), b.shape)
    adapted = np.asarray(call(model, IDS))
    merged = hf.merge_lora(model)
    assert merged.model.layers.mlp.down_proj.lora_a is None
    np.testing.assert_allclose(np.asarray(call(merged, IDS)), adapted, **TOL)

    # bf16 bits: saved back as the same bf16 values, merged through the bits
    out = hf.save_pretrained(as_bf16, tmp_path / "bits")
    np.testing.assert_array_equal(load_file(out / "model.safetensors")[
        "model.layers.1.self_attn.qkv_proj.weight"].view(np.uint16), np.asarray(bits[1]).T)
    apply_lora(as_bf16, LoraConfig(rank=4, alpha=8.0, dropout=0.0), nnx.Rngs(0))
    assert hf.merge_lora(as_bf16).model.layers.mlp.down_proj.kernel[...].dtype == jnp.uint16


def test_scanned_stack_onto_mesh(hf_checkpoint, tmp_path):
    """Four host CPU devices: a stacked leaf keeps its layer axis unsharded, the rest follows
    the per-layer rules; logits unchanged."""
    torch_model, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    script = textwrap.dedent(f"""
        import jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        from wavepose_jax import hf, sharding
        mesh = sharding.make_mesh({{"data": 1, "fsdp": 2, "tensor": -1}})
        model = hf.load_pretrained({str(path)!r}, dtype=jnp.float32, mesh=mesh, scan_layers=True)
        qkv = model.model.layers.self_attn.qkv_proj.kernel[...]
        assert tuple(qkv.sharding.spec) == (None, "fsdp", "tensor"), qkv.sharding.spec
        assert qkv.addressable_shards[0].data.shape == (2, 32, 64)
        ids = jnp.asarray(np.array({IDS.tolist()}, np.int32))
        np.save({str(tmp_path / "logits.npy")!r}, np.asarray(nnx.jit(lambda m, i: m(i).logits)(model, ids)))
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), reference_logits(torch_model, IDS), **TOL)
