"""Nothing lost, nothing poisoned: non-finite steps are skipped, SIGTERM saves and resumes equal
to an uninterrupted run, a damaged latest checkpoint falls back to the one before, a full disk
fails in one line with the last good checkpoint intact, other shapes are one line too."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavepose_jax import run as run_lib
from wavepose_jax.base_record import base_record_of
from wavepose_jax.data import synthetic
from wavepose_jax.run import new_model
from wavepose_jax.spec import RunSpec
from wavepose_jax.testing import make_batch, small_spec, tiny_llm, train_state
from wavepose_jax.training import checkpoint as ckpt_lib
from wavepose_jax.training import state as state_lib
from wavepose_jax.training import step as step_lib

ROOT = Path(__file__).resolve().parents[1]
STEP = jax.jit(step_lib.train_step)


def test_a_non_finite_step_changes_nothing_and_is_counted():
    config = small_spec()
    state = train_state(new_model(config, llm=tiny_llm()), config)
    good = jax.tree.map(jnp.asarray, make_batch())
    poisoned = good.replace(waves=good.waves.at[0, 3, 2].set(jnp.inf))
    after, metrics = STEP(state, poisoned, jax.random.key(0))
    assert float(metrics["skipped"]) == 1.0 and not np.isfinite(float(metrics["grad_norm"]))
    for a, b in zip(jax.tree.leaves((state.params, state.opt_state)),
                    jax.tree.leaves((after.params, after.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(after.step) == int(state.step) + 1  # the data moved on
    trained, metrics = STEP(after, good, jax.random.key(0))
    assert float(metrics["skipped"]) == 0.0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trained.params))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree.leaves(after.params), jax.tree.leaves(trained.params)))


# ----------------------------------------------------------------------------- train.py runs

# The runs of this file: configs/tiny.py on the clips of `clips`, without held-out generation
# at the end (not tested here).
_RUN = dict(train=dict(batch_size=4, log_every=1, ckpt_every=10, eval_every=0,
                       num_eval_samples=0, warmup_steps=2),
            eval=dict(synthetic_n=0, ood_n=0), data=dict(seq_len=64, val_fraction=0.0))


def _train_args(workdir, data, steps):
    """The train.py command line of a run."""
    overrides = [f"--config.{group}.{k}={v}" for group, fields in _RUN.items()
                 for k, v in fields.items()]
    return [sys.executable, str(ROOT / "train.py"), "--config", "tiny", "--workdir",
            str(workdir), f"--config.data.dir={data}", f"--config.train.steps={steps}",
            *overrides]


def _train_here(workdir, data, steps) -> None:
    """The same run trained in this process (`train.run`), for a reference to compare with."""
    from wavepose_jax import train
    from wavepose_jax.configs import tiny

    spec = RunSpec.from_config(tiny.get_config()).replace(
        **{**_RUN, "train": {**_RUN["train"], "steps": steps},
           "data": {**_RUN["data"], "dir": str(data)}})
    train.run(spec, str(workdir))


ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    synthetic.write_dataset(out, 12, seed=2, exercises=["squat"], keypoints=False,
                            progress=False)
    return out


def _params(workdir, step):
    """The trainable parameters of a checkpoint as {path: array}."""
    out = {}
    run = run_lib.restore(workdir, step)
    from flax import nnx

    from wavepose_jax.models.lora import trainable_filter
    for path, var in nnx.to_flat_state(nnx.state(run.model,
                                                 trainable_filter(run.spec.train.trainable))):
        out["/".join(map(str, path))] = np.asarray(var.get_value())
    return out


@pytest.mark.slow
def test_sigterm_saves_the_step_and_resuming_equals_an_uninterrupted_run(clips, tmp_path):
    steps = 24
    straight = tmp_path / "straight"
    _train_here(straight, clips, steps)  # the uninterrupted reference

    stopped = tmp_path / "stopped"
    child = subprocess.Popen(_train_args(stopped, clips, steps), env=ENV, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = stopped / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    line, = [l for l in out.splitlines() if l.startswith("SIGTERM: stopped after step")]
    at = int(line.split("step ")[1].split(";")[0])
    assert 3 <= at < steps and (stopped / "checkpoints" / str(at)).is_dir()

    resumed = subprocess.run(_train_args(stopped, clips, steps), env=ENV, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {stopped / 'checkpoints'}/{at}" in resumed.stdout
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    logged = [r["step"] for r in records if "loss" in r]  # training records (not val_loss)
    assert logged == list(range(1, steps + 1))  # each step once, though some ran twice
    want, got = _params(straight, steps), _params(stopped, steps)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)


def _corrupt(step_dir: Path) -> None:
    """Flips bytes in every array data file of a checkpoint step."""
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            data = bytearray(path.read_bytes())
            for i in range(0, len(data), 97):
                data[i] ^= 0xFF
            path.write_bytes(bytes(data))


def test_a_damaged_latest_checkpoint_falls_back_with_a_warning(tiny_run, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run[0], workdir)  # a copy: this test damages it
    ckpt_dir = workdir / "checkpoints"
    shutil.copytree(ckpt_dir / "7", ckpt_dir / "9")  # a later step ...
    _corrupt(ckpt_dir / "9")                          # ... whose arrays are damaged
    run = run_lib.restore(workdir)
    assert run.step == 7
    err = capsys.readouterr().err
    assert f"warning: {ckpt_dir}/9: unreadable" in err and "falling back to step 7" in err
    # A garbled metadata file is named.
    (ckpt_dir / "7" / "state" / "_METADATA").write_text("{not json")
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"7/state/_METADATA"):
        run_lib.restore(workdir, step=7)


def test_a_checkpoint_of_other_shapes_is_one_line(tiny_run):
    workdir = tiny_run[0]
    with ckpt_lib.Checkpointer(workdir, read_only=True) as ckpt:
        _, config, record = ckpt.read_record()
    config = RunSpec.from_config(config).replace(lora=dict(rank=3))  # the run trained rank 2
    base = run_lib.load_base(config.llm)
    model = new_model(config, llm=base.model)
    state = train_state(model, config)
    with ckpt_lib.Checkpointer(workdir, read_only=True) as ckpt:
        with pytest.raises(ckpt_lib.CheckpointMismatchError,
                           match=r"'params/llm/.*lora_a' has shape \(\d+, 2\), the model "
                                 r"expects \(\d+, 3\)"):
            ckpt.restore(abstract_state=state.checkpoint_items(),
                         base=base_record_of(model.llm, path=record.path,
                                             files=base.digests))


def _mount_small_disk(path: Path) -> bool:
    """A 5 MB tmpfs at `path` (room for one tiny checkpoint, not two), where allowed."""
    path.mkdir(parents=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_full_disk_fails_in_one_line_and_keeps_the_last_checkpoint(clips, tmp_path,
                                                                       monkeypatch):
    disk = tmp_path / "run" / "checkpoints"  # the checkpoints of the run on a small disk
    if _mount_small_disk(disk):
        try:
            proc = subprocess.run(_train_args(tmp_path / "run", clips, 200), env=ENV,
                                  capture_output=True, text=True, timeout=600)
            err = proc.stderr
            assert proc.returncode == 2, err[-3000:]
            assert "Traceback" not in err and "Exception" not in err, err[-3000:]
            line = err.strip().splitlines()[-1]
            assert line.startswith(f"error: {disk}: saving step 20 failed"), line
            assert "free there, the checkpoint needs about" in line
            assert line.endswith("the last good checkpoint is step 10"), line
            assert run_lib.restore(tmp_path / "run").step == 10
        finally:
            subprocess.run(["umount", str(disk)], check=False)
        return
    # No tmpfs here: inject the failure the disk would cause, after the first good save.
    import orbax.checkpoint as ocp

    from wavepose_jax import train

    save = ocp.CheckpointManager.save

    def failing(self, step, *args, **kwargs):
        if step > 10:
            raise OSError(28, "No space left on device")
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing)
    rc = train.main(_train_args(tmp_path / "run", clips, 30)[2:])
    assert rc == 2
    assert run_lib.restore(tmp_path / "run").step == 10
