"""PEFT adapters and merged exports against transformers + peft (fp32, tiny models)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import nnx

from wavepose_jax import export, hf, peft_io
from wavepose_jax.base_record import base_record_of
from wavepose_jax.models.lora import DEFAULT_TARGETS, LoraConfig, apply_lora, trainable_filter
from wavepose_jax.run import load_base, new_model
from wavepose_jax.testing import call, reference_logits, tiny_run_spec, train_state
from wavepose_jax.training import checkpoint as ckpt_lib

pytestmark = pytest.mark.reference  # against transformers' PyTorch Phi-3

IDS = np.random.default_rng(0).integers(3, 96, size=(2, 7))
MASK = np.array([[1] * 7, [1] * 5 + [0] * 2])


def torch_base(directory):
    return transformers.Phi3ForCausalLM.from_pretrained(
        directory, attn_implementation="eager", dtype=torch.float32).eval()


def jax_lora_model(directory, rank=4, alpha=8.0, seed=1):
    """The tiny base with LoRA on all fused projections and random non-zero B."""
    llm = hf.load_pretrained(directory, dtype=jnp.float32)
    apply_lora(llm, LoraConfig(rank=rank, alpha=alpha, dropout=0.0, targets=DEFAULT_TARGETS),
               nnx.Rngs(seed))
    key = jax.random.key(seed)
    for i, (_, m) in enumerate(sorted(peft_io.adapted_modules(llm).items())):
        m.lora_b.set_value(0.3 * jax.random.normal(jax.random.fold_in(key, i), m.lora_b.shape))
    return llm


def assert_logits_close(got, want, mask):
    """Logits agree (1e-4) at the real tokens; padded positions are left undefined."""
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-4, atol=1e-4)


def lora_arrays(llm):
    return {n: (np.asarray(m.lora_a[...]), np.asarray(m.lora_b[...]), m.lora_scale)
            for n, m in peft_io.adapted_modules(llm).items()}


@pytest.fixture(scope="module")
def exported(hf_checkpoint, tmp_path_factory):
    """(base dir, JAX model with LoRA, its PEFT export dir)."""
    _, base_dir = hf_checkpoint("export_base")
    llm = jax_lora_model(base_dir)
    out = peft_io.save_peft_adapter(llm, tmp_path_factory.mktemp("adapter"),
                                    base_model_name_or_path=str(base_dir), lora_dropout=0.05)
    return base_dir, llm, out


def test_peft_export_loads_in_peft_and_matches(exported):
    base_dir, llm, out = exported
    cfg = json.loads((out / peft_io.ADAPTER_CONFIG).read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8.0 and cfg["lora_dropout"] == 0.05
    assert sorted(cfg["target_modules"]) == sorted(peft_io.PEFT_TARGETS)
    assert cfg["base_model_name_or_path"] == str(base_dir) and cfg["bias"] == "none"

    model = peft.PeftModel.from_pretrained(torch_base(base_dir), str(out)).eval()
    names = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert len(names) == 2 * 4 * 2  # 2 layers x 4 projections x (A, B)
    expected = reference_logits(model, IDS, MASK)
    assert_logits_close(call(llm, IDS, MASK), expected, MASK)
    plain = reference_logits(torch_base(base_dir), IDS, MASK)
    assert np.abs(expected - plain).max() > 1e-2  # the adapter changes the logits


def test_peft_round_trip_is_bitwise(exported):
    base_dir, llm, out = exported
    want = lora_arrays(llm)
    bare = hf.load_pretrained(base_dir, dtype=jnp.float32)  # LoRA attached from the config
    spec = peft_io.load_peft_adapter(bare, out)
    assert spec.rank == 4 and spec.scale == 2.0
    preset = hf.load_pretrained(base_dir, dtype=jnp.float32)  # LoRA already attached: filled
    apply_lora(preset, LoraConfig(rank=4, alpha=8.0, dropout=0.0), nnx.Rngs(7))
    peft_io.load_peft_adapter(preset, out)
    for loaded in (bare, preset):
        got = lora_arrays(loaded)
        assert sorted(got) == sorted(want)
        for name, (a, b, scale) in want.items():
            assert got[name][0].dtype == a.dtype and np.array_equal(got[name][0], a), name
            assert np.array_equal(got[name][1], b) and got[name][2] == scale, name


def test_adapter_made_by_peft_loads_and_matches(hf_checkpoint, tmp_path):
    _, base_dir = hf_checkpoint("export_base")
    torch.manual_seed(3)
    config = peft.LoraConfig(r=3, lora_alpha=5, lora_dropout=0.0, use_rslora=True,
                             target_modules=["qkv_proj", "down_proj"], task_type="CAUSAL_LM")
    model = peft.get_peft_model(torch_base(base_dir), config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(str(tmp_path))
    llm = hf.load_pretrained(base_dir, dtype=jnp.float32)
    spec = peft_io.load_peft_adapter(llm, tmp_path)
    assert spec.scale == pytest.approx(5 / np.sqrt(3))
    assert sorted(peft_io.adapted_modules(llm)) == [
        f"model.layers.{i}.{m}" for i in range(2) for m in ("mlp.down_proj", "self_attn.qkv_proj")]
    assert_logits_close(call(llm, IDS, MASK), reference_logits(model, IDS, MASK), MASK)


def _edited(src, dst, **changes):
    dst.mkdir()
    (dst / peft_io.ADAPTER_WEIGHTS).write_bytes((src / peft_io.ADAPTER_WEIGHTS).read_bytes())
    cfg = {**json.loads((src / peft_io.ADAPTER_CONFIG).read_text()), **changes}
    (dst / peft_io.ADAPTER_CONFIG).write_text(json.dumps(cfg))
    return dst


def test_adapter_errors_name_file_and_field(exported, hf_checkpoint, tmp_path):
    base_dir, _, out = exported
    cases = {
        "q_proj": (_edited(out, tmp_path / "t", target_modules=["q_proj", "v_proj"]),
                   "adapter_config.json: target_modules: 'q_proj'"),
        "rank": (_edited(out, tmp_path / "r", r=8), "rank mismatch"),
        "dora": (_edited(out, tmp_path / "d", use_dora=True), "adapter_config.json: use_dora"),
        "missing": (tmp_path / "nothing", "adapter_config.json: missing"),
    }
    for name, (directory, message) in cases.items():
        with pytest.raises(peft_io.AdapterError, match=message.replace("(", r"\(")):
            peft_io.load_peft_adapter(hf.load_pretrained(base_dir, dtype=jnp.float32), directory)
    # The model's own LoRA has another rank.
    preset = hf.load_pretrained(base_dir, dtype=jnp.float32)
    apply_lora(preset, LoraConfig(rank=2, alpha=4.0, dropout=0.0), nnx.Rngs(0))
    with pytest.raises(peft_io.AdapterError, match="r: rank mismatch, adapter has r=4"):
        peft_io.load_peft_adapter(preset, out)
    # A different base (wider hidden size).
    _, other_dir = hf_checkpoint("export_other", hidden_size=32, intermediate_size=48)
    with pytest.raises(peft_io.AdapterError, match="adapter_model.safetensors: .* base mismatch"):
        peft_io.load_peft_adapter(hf.load_pretrained(other_dir, dtype=jnp.float32), out)


@pytest.fixture(scope="module")
def trained_run(exported, tmp_path_factory):
    """(workdir, model): a checkpoint of the tiny base whose trained parameters (encoder, bridge,
    LoRA with non-zero B) are a fresh init + 0.01, and the model holding those parameters."""
    base_dir = exported[0]
    config = tiny_run_spec(base_dir)
    base = load_base(config.llm)
    model = new_model(config, llm=base.model)
    params = jax.tree.map(lambda x: x + 0.01,
                          nnx.state(model, trainable_filter(config.train.trainable)))
    nnx.update(model, params)
    workdir = tmp_path_factory.mktemp("run")
    record = base_record_of(model.llm, path=str(base_dir), files=base.digests)
    with ckpt_lib.Checkpointer(workdir, config=config.to_dict(), base=record) as ckpt:
        ckpt.save(7, {"params": params})
    return workdir, model


def test_cli_exports_a_run(trained_run, tmp_path, capsys):
    workdir, model = trained_run
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    rc = export.main(["--ckpt", str(workdir), "--peft", str(adapter), "--merged", str(merged)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "step 7" in out

    adapter_config = json.loads((adapter / peft_io.ADAPTER_CONFIG).read_text())
    base_path = adapter_config["base_model_name_or_path"]
    assert os.path.isabs(base_path) and os.path.isdir(base_path)
    vocab = model.llm.config.vocab_size
    ids = np.random.default_rng(1).integers(3, vocab, size=(2, 9))
    mask = np.array([[1] * 9, [1] * 6 + [0] * 3])
    want = np.asarray(call(model.llm, ids, mask))  # the trained JAX model (base + LoRA)

    plain = reference_logits(torch_base(base_path), ids, mask)
    assert np.abs(plain - want)[mask.astype(bool)].max() > 1e-3  # the trained LoRA matters
    with_adapter = peft.PeftModel.from_pretrained(torch_base(base_path), str(adapter)).eval()
    assert_logits_close(reference_logits(with_adapter, ids, mask), want, mask)
    merged_torch = torch_base(merged)
    assert_logits_close(reference_logits(merged_torch, ids, mask), want, mask)
    reloaded = hf.load_pretrained(merged, dtype=jnp.float32)
    assert not peft_io.adapted_modules(reloaded)
    assert_logits_close(call(reloaded, ids, mask), want, mask)

    encoder, bridge = peft_io.load_motion(adapter)
    for got, ref in ((encoder, model.encoder), (bridge, model.bridge)):
        want_params = nnx.to_flat_state(nnx.state(ref, nnx.Param))
        got_params = dict(nnx.to_flat_state(nnx.state(got, nnx.Param)))
        assert len(got_params) == len(want_params) > 0
        for path, var in want_params:
            assert np.array_equal(got_params[path].get_value(), var.get_value()), path
    assert float(bridge.embed_rms[...]) == float(model.bridge.embed_rms[...])
    assert bridge.config == model.bridge.config and encoder.config == model.encoder.config


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert export.main(["--ckpt", str(tmp_path / "nope"), "--peft", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and len(err.splitlines()) == 1
    assert export.main(["--ckpt", str(tmp_path)]) == 2  # nothing to export
    assert capsys.readouterr().err == "error: nothing to export: give --peft and/or --merged\n"


def test_export_never_overwrites_the_base_or_a_full_directory(trained_run, exported, tmp_path,
                                                              capsys):
    workdir, _ = trained_run
    base_dir = exported[0]
    before = {p.name: p.stat().st_mtime_ns for p in base_dir.iterdir()}
    assert export.main(["--ckpt", str(workdir), "--merged", str(base_dir), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {base_dir}: is the base model's directory") and \
        err.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in base_dir.iterdir()} == before
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert export.main(["--ckpt", str(workdir), "--peft", str(full)]) == 2
    assert "directory is not empty (pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    assert export.main(["--ckpt", str(workdir), "--peft", str(full), "--overwrite"]) == 0
    assert (full / peft_io.ADAPTER_CONFIG).is_file() and (full / "keep.txt").is_file()


def test_partial_lora_exports_as_regex(exported, tmp_path):
    base_dir = exported[0]
    llm = hf.load_pretrained(base_dir, dtype=jnp.float32)
    apply_lora(llm, LoraConfig(rank=2, alpha=6.0, dropout=0.0,
                               targets=(r"model/layers/1/self_attn/qkv_proj",)), nnx.Rngs(2))
    (_, linear), = peft_io.adapted_modules(llm).items()
    linear.lora_b.set_value(0.5 * jnp.ones(linear.lora_b.shape))
    peft_io.save_peft_adapter(llm, tmp_path, base_model_name_or_path=str(base_dir))
    cfg = json.loads((tmp_path / peft_io.ADAPTER_CONFIG).read_text())
    assert isinstance(cfg["target_modules"], str)  # one layer only: a regex, not a name list

    model = peft.PeftModel.from_pretrained(torch_base(base_dir), str(tmp_path)).eval()
    assert len([n for n, _ in model.named_parameters() if "lora_" in n]) == 2
    assert_logits_close(call(llm, IDS, MASK), reference_logits(model, IDS, MASK), MASK)
    back = hf.load_pretrained(base_dir, dtype=jnp.float32)
    peft_io.load_peft_adapter(back, tmp_path)
    assert {n: (a.tobytes(), b.tobytes(), s) for n, (a, b, s) in lora_arrays(back).items()} == \
        {n: (a.tobytes(), b.tobytes(), s) for n, (a, b, s) in lora_arrays(llm).items()}


def test_merged_export_stops_in_transformers_where_the_project_stops(tmp_path):
    """transformers' generate() on a merged export reads its generation_config.json and ends
    on the same stop token, after the same tokens, as the project's own decoder."""
    from wavepose_jax import generate as generate_lib
    from wavepose_jax.configs import tiny as tiny_config
    from wavepose_jax.prompt import PhysicsSummary, prompt_ids
    from wavepose_jax.spec import RunSpec

    config = RunSpec.from_config(tiny_config.get_config())  # the committed tiny base
    base = load_base(config.llm)
    model = new_model(config, llm=base.model)
    state = train_state(model, config)
    record = base_record_of(model.llm, path=config.llm.path, files=base.digests)
    workdir, merged = tmp_path / "run", tmp_path / "merged"
    with ckpt_lib.Checkpointer(workdir, config=config.to_dict(), base=record) as ckpt:
        ckpt.save(1, state.checkpoint_items())
    assert export.main(["--ckpt", str(workdir), "--merged", str(merged)]) == 0
    generation = json.loads((merged / "generation_config.json").read_text())
    stop = tuple(generation["eos_token_id"])
    assert len(stop) == 3 and stop == hf.stop_ids(config.llm.path)

    tokenizer = hf.load_tokenizer(merged)
    summary = PhysicsSummary(exercise="squat", reps=5, grade="B", overall=None, smoothness=None,
                             control=None, consistency=None, tempo_sec=2.1, phases=(),
                             dominant_hz=None)
    ids = np.asarray([prompt_ids(summary, tokenizer, compact=True)], np.int32)
    budget = 80
    ours = generate_lib.generate(hf.load_pretrained(merged, dtype=jnp.float32), ids,
                                 max_new_tokens=budget, eos_ids=stop, pad_id=tokenizer.pad_token_id)
    n = int(ours.lengths[0])
    assert n < budget and int(ours.tokens[0, n - 1]) in stop  # it did stop
    theirs = torch_base(merged).generate(torch.as_tensor(ids, dtype=torch.long),
                                         max_new_tokens=budget, do_sample=False)
    new = theirs[0, ids.shape[1]:].tolist()
    assert new == np.asarray(ours.tokens[0, :n]).tolist()


def test_scanned_stack_adapter_round_trip(exported, tmp_path):
    """A PEFT adapter loads into the scanned stack (slot i of each stacked delta = layer i),
    gives the logits of the unrolled model, and exports the same tensors back; an adapter of
    only some layers is refused there in one line."""
    from safetensors.numpy import load_file

    base_dir, llm, out = exported
    for preset in (False, True):  # LoRA attached from the adapter, or already there (a run)
        scanned = hf.load_pretrained(base_dir, dtype=jnp.float32, scan_layers=True)
        if preset:
            apply_lora(scanned, LoraConfig(rank=4, alpha=8.0, dropout=0.0), nnx.Rngs(7))
        peft_io.load_peft_adapter(scanned, out)
        assert scanned.model.layers.self_attn.qkv_proj.lora_a.shape[:2] == (2, 64)
        assert_logits_close(call(scanned, IDS, MASK), call(llm, IDS, MASK), MASK)
    back = peft_io.save_peft_adapter(scanned, tmp_path / "back",
                                     base_model_name_or_path=str(base_dir))
    want, got = load_file(out / peft_io.ADAPTER_WEIGHTS), load_file(back / peft_io.ADAPTER_WEIGHTS)
    assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)
    assert json.loads((back / peft_io.ADAPTER_CONFIG).read_text())["target_modules"] == sorted(
        peft_io.PEFT_TARGETS)

    partial = hf.load_pretrained(base_dir, dtype=jnp.float32)
    apply_lora(partial, LoraConfig(rank=2, alpha=4.0, dropout=0.0,
                                   targets=(r"model/layers/1/self_attn/qkv_proj",)), nnx.Rngs(2))
    one_layer = peft_io.save_peft_adapter(partial, tmp_path / "one_layer",
                                          base_model_name_or_path=str(base_dir))
    with pytest.raises(peft_io.AdapterError, match="only some layers.*scan_layers=False"):
        peft_io.load_peft_adapter(hf.load_pretrained(base_dir, dtype=jnp.float32,
                                                     scan_layers=True), one_layer)
