"""Orbax checkpoints: mesh changes, base-model guard, retention, data position; metrics sinks."""

import io
import json
import os
import subprocess
import sys
import textwrap
import types

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavepose_jax.training import metrics as metrics_lib
from wavepose_jax.base_record import BaseModelRecord, tensor_signature
from wavepose_jax.training.checkpoint import Checkpointer, CheckpointMismatchError

BASE_CONFIG = {"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 64,
               "torch_dtype": "bfloat16"}


def _base_state(hidden=8):
    return {"embed": jax.ShapeDtypeStruct((64, hidden), jnp.bfloat16),
            "layer": {"kernel": jax.ShapeDtypeStruct((hidden, hidden), jnp.bfloat16),
                      "lora_a": jax.ShapeDtypeStruct((hidden, 2), jnp.float32)}}


def _record(seed=0, path=None, hidden=8, **config):
    return BaseModelRecord.from_model(_base_state(hidden), {**BASE_CONFIG, **config},
                                      path=path, init_seed=seed)


def _state(value=0.0):
    return {"params": {"lora_a": jnp.full((8, 2), value), "lora_b": jnp.zeros((2, 8))},
            "opt": {"mu": jnp.full((8, 2), value / 2), "count": jnp.int32(3)},
            "step": jnp.int32(int(value))}


def _loader():
    sampler = grain.samplers.IndexSampler(10, shuffle=True, seed=3, num_epochs=None)
    return grain.DataLoader(data_source=list(range(10)), sampler=sampler, worker_count=0,
                            operations=[grain.transforms.Batch(2, drop_remainder=True)])


def test_fingerprint_covers_weights_not_adapters_or_dtype_flags():
    ref = _record()
    assert _record().fingerprint == ref.fingerprint
    assert _record(torch_dtype="float32").fingerprint == ref.fingerprint  # bookkeeping field
    assert _record(seed=1).fingerprint != ref.fingerprint                 # other random base
    assert _record(num_hidden_layers=3).fingerprint != ref.fingerprint
    assert _record(hidden=16).fingerprint != ref.fingerprint
    names = [name for name, _, _ in tensor_signature(_base_state())]
    assert not any("lora" in n for n in names) and len(names) == 2
    assert ref.num_params == 64 * 8 + 8 * 8
    loaded = _record(path="/models/phi", seed=5)
    assert loaded.init_seed is None and loaded.path == "/models/phi"
    assert BaseModelRecord.from_dict(loaded.to_dict()) == loaded


def test_save_restore_roundtrip_data_position_and_base_guard(tmp_path):
    it = iter(_loader())
    next(it)
    with Checkpointer(tmp_path, keep=2, config={"train": {"lr": 1e-3}}, base=_record()) as ckpt:
        assert ckpt.latest_step() is None
        ckpt.save(10, _state(1.0), data_iterator=it, metrics={"val_loss": 2.0})
        expected_next = next(it)   # the batch a resumed run must see first
        next(it)                   # advancing after the (async) save must not leak into it
        ckpt.wait()
        assert ckpt.latest_step() == 10

    with Checkpointer(tmp_path, read_only=True) as ckpt:
        step, config, base = ckpt.read_record()
        assert (step, config, base) == (10, {"train": {"lr": 1e-3}}, _record())
        it2 = iter(_loader())
        out = ckpt.restore(abstract_state=jax.eval_shape(_state), data_iterator=it2, base=_record())
        assert out.step == 10 and out.data_restored and out.metrics == {"val_loss": 2.0}
        np.testing.assert_array_equal(out.state["params"]["lora_a"], np.full((8, 2), 1.0))
        assert int(out.state["opt"]["count"]) == 3
        np.testing.assert_array_equal(next(it2), expected_next)

        mismatch = r"checkpoints/10: .*random init \(seed 0\).*random init \(seed 1\)"
        with pytest.raises(CheckpointMismatchError, match=mismatch):
            ckpt.restore(abstract_state=jax.eval_shape(_state), base=_record(seed=1))
        with pytest.raises(CheckpointMismatchError, match="no checkpoint for step 7"):
            ckpt.restore(7, abstract_state=jax.eval_shape(_state), base=_record())
    with pytest.raises(CheckpointMismatchError, match="no checkpoint directory"):
        Checkpointer(tmp_path / "missing", read_only=True)


def test_keeps_last_n_and_best(tmp_path):
    with Checkpointer(tmp_path, keep=2, base=_record()) as ckpt:
        for step, val in [(1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, 2.5), (6, None)]:
            ckpt.save(step, _state(step), metrics=None if val is None else {"val_loss": val})
        ckpt.wait()
        assert ckpt.all_steps() == [2, 5, 6]
        assert ckpt.best_step() == 2
    with Checkpointer(tmp_path, keep=2, base=_record()) as ckpt:  # reopened: best still known
        ckpt.save(7, _state(7))
        ckpt.wait()
        assert ckpt.all_steps() == [2, 6, 7]


_MESH_SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from wavepose_jax.base_record import BaseModelRecord
    from wavepose_jax.training.checkpoint import Checkpointer

    workdir = sys.argv[1]
    base = BaseModelRecord.from_model({"w": jnp.zeros((4, 4))}, {"n": 1}, path=None, init_seed=0)
    def mesh(n):
        return Mesh(np.array(jax.devices()[:n]).reshape(n), ("fsdp",))
    value = {"kernel": jnp.arange(64.0).reshape(8, 8), "bias": jnp.arange(8.0)}
    m4 = mesh(4)
    state = {"kernel": jax.device_put(value["kernel"], NamedSharding(m4, P("fsdp", None))),
             "bias": jax.device_put(value["bias"], NamedSharding(m4, P("fsdp")))}
    with Checkpointer(workdir, base=base) as ckpt:
        ckpt.save(1, state)
    abstract = jax.eval_shape(lambda: value)
    for n, spec in [(2, P(None, "fsdp")), (1, P())]:
        m = mesh(n)
        shardings = {"kernel": NamedSharding(m, spec), "bias": NamedSharding(m, P())}
        with Checkpointer(workdir, read_only=True) as ckpt:
            out = ckpt.restore(abstract_state=abstract, shardings=shardings, base=base).state
        assert out["kernel"].sharding == shardings["kernel"], out["kernel"].sharding
        assert len(out["kernel"].sharding.device_set) == n
        np.testing.assert_array_equal(np.asarray(out["kernel"]), np.asarray(value["kernel"]))
        np.testing.assert_array_equal(np.asarray(out["bias"]), np.asarray(value["bias"]))
        print("restored on", n, "devices")
""")


def test_restore_onto_other_mesh(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restored on 2 devices" in proc.stdout and "restored on 1 devices" in proc.stdout


def test_metrics_writer_sinks_and_mfu(tmp_path):
    console = io.StringIO()
    with metrics_lib.MetricsWriter(tmp_path, console=console) as writer:
        writer.write(5, {"loss": np.float32(2.5), "lr": 3e-4, "mfu": None})
        writer.write(10, {"loss": 1.25}, prefix="val/")
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert lines[0]["step"] == 5 and lines[0]["loss"] == 2.5 and lines[0]["mfu"] is None
    assert lines[1]["val/loss"] == 1.25
    assert console.getvalue().splitlines()[0] == "step 5 | loss 2.5 | lr 3.00e-04 | mfu -"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))

    fpt = metrics_lib.flops_per_token(num_params=1000, num_layers=2, attention_dim=16, seq_len=32)
    assert fpt == 6 * 1000 + 12 * 2 * 16 * 32
    llm = types.SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, head_dim=4)
    assert metrics_lib.model_flops_per_token(llm, num_params=1000, seq_len=32) == fpt
    assert metrics_lib.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
    assert metrics_lib.peak_flops_per_device("TPU v5 lite") == 197e12
    assert metrics_lib.peak_flops_per_device("cpu") is None
    assert metrics_lib.mfu(1e6, 1e8, 1e15) == pytest.approx(0.1)
    assert metrics_lib.mfu(1e6, 1e8, None) is None


def test_resume_equals_uninterrupted(tmp_path):
    from wavepose_jax import dataset
    from wavepose_jax.data import synthetic
    from wavepose_jax.base_record import base_record_of
    from wavepose_jax.run import load_base, new_model
    from wavepose_jax.testing import make_tiny_base, tiny_run_spec, train_state
    from wavepose_jax.training.step import train_step

    tokenizer = make_tiny_base(tmp_path / "base")
    synthetic.write_dataset(tmp_path / "clips", 6, seed=1, exercises=["squat"], progress=False)
    config = tiny_run_spec(tmp_path / "base").replace(data=dict(val_fraction=0.0))
    train, _, _ = dataset.prepare_dataset(tmp_path / "clips", tokenizer, config.data, seed=0)
    base = load_base(config.llm)
    model = new_model(config, llm=base.model)
    record = base_record_of(model.llm, path=str(tmp_path / "base"), files=base.digests)
    init = train_state(model, config)
    step = jax.jit(train_step)
    rng = jax.random.key(0)

    def loader_():
        return dataset.make_train_loader(train, batch_size=config.train.batch_size, seed=0)

    def run(state, loader, n):
        for _ in range(n):
            state, metrics = step(state, next(loader), rng)
        return state, float(metrics["loss"])

    straight, straight_loss = run(init, loader_(), 4)

    loader = loader_()
    half, _ = run(init, loader, 2)
    with Checkpointer(tmp_path / "work", config=config.to_dict(), base=record) as ckpt:
        ckpt.save(2, half.checkpoint_items(), data_iterator=loader)
    del half, loader   # the "crash"

    loader = loader_()
    with Checkpointer(tmp_path / "work", read_only=True) as ckpt:
        out = ckpt.restore(abstract_state=init.checkpoint_items(), data_iterator=loader,
                           base=record)
    assert out.step == 2 and out.data_restored and int(out.state["step"]) == 2
    resumed, resumed_loss = run(init.replace_checkpoint_items(out.state), loader, 2)

    assert int(resumed.step) == int(straight.step) == 4
    assert resumed_loss == pytest.approx(straight_loss, rel=1e-6)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(resumed.opt_state), jax.tree.leaves(straight.opt_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # Continuing from the initial state instead would not match: the restore mattered.
    assert not np.allclose(jax.tree.leaves(run(init, loader_(), 2)[0].params)[0],
                           jax.tree.leaves(straight.params)[0])


def test_metrics_writer_without_console_still_logs(tmp_path, capsys):
    with metrics_lib.MetricsWriter(tmp_path, use_tensorboard=False, use_console=False) as writer:
        writer.write(1, {"loss": 0.5})
    assert capsys.readouterr().out == ""
    assert json.loads(open(tmp_path / "metrics.jsonl").readline())["loss"] == 0.5
