"""Restoring runs: one read of the checkpoint, runs that move, bases that move or differ."""

import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from wavepose_jax import evaluate, export, hf, infer
from wavepose_jax import run as run_lib
from wavepose_jax.base_record import base_record_of
from wavepose_jax.configs import tiny as tiny_config
from wavepose_jax.spec import RunSpec
from wavepose_jax.testing import make_tiny_base, tiny_run_spec, train_state
from wavepose_jax.training import checkpoint as ckpt_lib


def _save_run(config, workdir, shift=0.01):
    """A checkpoint at step 3 of a fresh model whose trainable parameters moved by `shift`."""
    base = run_lib.load_base(config.llm)
    model = run_lib.new_model(config, llm=base.model)
    state = train_state(model, config)
    params = jax.tree.map(lambda x: x + shift, state.params)
    record = base_record_of(model.llm, path=hf.portable(config.llm.path), files=base.digests)
    with ckpt_lib.Checkpointer(workdir, config=config.to_dict(), base=record) as ckpt:
        ckpt.save(3, {**state.checkpoint_items(), "params": params})
    return params


def _encoder_leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(
        nnx.state(model, nnx.All(nnx.Param, nnx.PathContains("encoder"))))]


def test_a_run_on_the_built_in_base_moves_anywhere(tmp_path):
    config = RunSpec.from_config(tiny_config.get_config())
    params = _save_run(config, tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "elsewhere")
    run = run_lib.restore(tmp_path / "elsewhere")
    assert run.record.path == "wavepose_jax:assets/tiny-phi3" and run.step == 3
    want = [np.asarray(x) for x in jax.tree.leaves(nnx.State(params)["encoder"])]
    for got, expected in zip(_encoder_leaves(run.model), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert run.stop_ids == hf.stop_ids(config.llm.path) and len(run.stop_ids) == 3
    assert run.tokenizer.convert_ids_to_tokens(run.stop_ids[0]) == "<|end|>"


def test_a_moved_base_is_named_with_base_and_a_different_one_refused(tmp_path, capsys):
    make_tiny_base(tmp_path / "base")
    _save_run(tiny_run_spec(tmp_path / "base"), tmp_path / "run")
    shutil.move(tmp_path / "base", tmp_path / "moved_base")
    with pytest.raises(hf.WeightsError, match="base: directory not found"):
        run_lib.restore(tmp_path / "run")
    run = run_lib.restore(tmp_path / "run", base=str(tmp_path / "moved_base"))
    assert run.record.path == str(tmp_path / "moved_base")
    make_tiny_base(tmp_path / "other", num_hidden_layers=2)
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="checkpoint was trained on base"):
        run_lib.restore(tmp_path / "run", base=str(tmp_path / "other"))
    # The same through the command line: one line, exit status 2.
    clip = tmp_path / "clip.json"
    clip.write_text('{"knee_angle_trajectory": [170, 120, 90, 120, 170]}')
    assert infer.main(["--input", str(clip), "--ckpt", str(tmp_path / "run"), "--base",
                       str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint was trained on base" in err


def test_portable_names(tmp_path):
    assert hf.portable(tiny_config.TINY_BASE) == "wavepose_jax:assets/tiny-phi3"
    package_dir = hf.resolve(tiny_config.TINY_BASE)
    assert hf.portable(str(package_dir)) == "wavepose_jax:assets/tiny-phi3"
    assert hf.portable(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(hf.WeightsError, match="not in this installation"):
        hf.resolve("wavepose_jax:assets/no-such-base")


def test_every_command_says_the_same_line_when_there_is_no_checkpoint(tmp_path, capsys):
    """infer, evaluate and export restore through `run.restore`: a run directory without
    checkpoints is one line saying how to make one, exit status 2, no traceback."""
    missing = str(tmp_path / "no_run")
    want = (f"error: {missing}: no checkpoint (no {missing}/checkpoints directory); create one "
            f"with `python train.py --config configs/tiny.py --workdir {missing}`\n")
    clip = tmp_path / "clip.json"
    clip.write_text('{"knee_angle_trajectory": [170, 120, 90, 120, 170]}')
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "clip.json").write_text(clip.read_text())
    commands = {
        "infer": lambda: infer.main(["--input", str(clip), "--ckpt", missing]),
        "evaluate": lambda: evaluate.main(["--ckpt", missing, "--data", str(clips)]),
        "export": lambda: export.main(["--ckpt", missing, "--peft", str(tmp_path / "out")]),
    }
    for name, command in commands.items():
        assert command() == 2, name
        out, err = capsys.readouterr()
        assert (out, err) == ("", want), name
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_lib.restore(missing)
