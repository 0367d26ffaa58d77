"""A checkpoint knows its base by content: one changed weight in a safetensors file (same config,
same shapes) is refused by infer, evaluate and a resumed training, naming the file; the
unchanged base still works; a truncated file is one line naming it; old records are warned."""

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from wavepose_jax import base_record, cli, hf, infer, train
from wavepose_jax import evaluate as evaluate_lib
from wavepose_jax import run as run_lib
from wavepose_jax.data import synthetic
from wavepose_jax.testing import make_tiny_base, tiny_run_spec
from wavepose_jax.training import checkpoint as ckpt_lib

pytestmark = pytest.mark.slow  # whole commands in several processes

WEIGHTS = "model.safetensors"
DIFFERS = "differs from the one the checkpoint was trained on"

def _train(root: Path, steps: int, capsys) -> tuple[int, str, str]:
    """The training command's run (`train.run` under its command line's error handling) in
    this process: (exit status, stdout, stderr)."""
    spec = tiny_run_spec(root / "base").replace(
        data=dict(dir=str(root / "clips"), val_fraction=0.0),  # no validation: train, resume
        train=dict(steps=steps, log_every=1, ckpt_every=10, eval_every=0, num_eval_samples=0),
        eval=dict(synthetic_n=0, ood_n=0))
    capsys.readouterr()
    rc = train.COMMAND.main(lambda *_: (train.run(spec, str(root / "work")), cli.EXIT_OK)[1],
                            [])
    out, err = capsys.readouterr()
    return rc, out, err


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _saved_record(workdir: Path, step: int) -> dict:
    """The base record of a checkpoint step, as stored (Orbax's JSON item)."""
    files = [p for p in (workdir / "checkpoints" / str(step) / "base").iterdir() if p.is_file()]
    records = [json.loads(p.read_text()) for p in files if p.read_text().lstrip().startswith("{")]
    record, = [r for r in records if "fingerprint" in r]
    return record


def _change_one_weight(file: Path) -> None:
    """Adds 0.5 to one float32 value of a tensor in a safetensors file, in place (same size,
    header, shapes and config)."""
    data = bytearray(file.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    info = header["model.layers.0.mlp.down_proj.weight"]
    assert info["dtype"] == "F32"
    at = 8 + header_len + info["data_offsets"][0] + 4 * 7
    (value,) = struct.unpack("<f", data[at:at + 4])
    data[at:at + 4] = struct.pack("<f", value + 0.5)
    file.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(root, original weight bytes): a base, four clips, and a run trained 2 steps."""
    root = tmp_path_factory.mktemp("fingerprint")
    make_tiny_base(root / "base")
    synthetic.write_dataset(root / "clips", 4, seed=3, exercises=["squat"], keypoints=False,
                            progress=False)
    train.run(tiny_run_spec(root / "base").replace(
        data=dict(dir=str(root / "clips"), val_fraction=0.0),
        train=dict(steps=2, log_every=1, ckpt_every=10, eval_every=0, num_eval_samples=0),
        eval=dict(synthetic_n=0, ood_n=0)), str(root / "work"))
    return root, (root / "base" / WEIGHTS).read_bytes()


def test_train_records_the_sha256_of_each_base_file(trained):
    root, original = trained
    record = _saved_record(root / "work", 2)
    assert record["files"] == {WEIGHTS: hashlib.sha256(original).hexdigest()}
    assert record["path"] == str((root / "base").resolve())
    # The loader hashed the file while reading it: recording the base reads nothing more.
    loaded = hf.load_weights(root / "base")
    reads = []
    real_open = open

    def counting_open(*args, **kwargs):
        reads.append(args[0])
        return real_open(*args, **kwargs)

    base_record.open = counting_open  # the module's `open`, used by the hashing code only
    try:
        assert loaded.digests == record["files"]
        assert base_record.base_record_of(loaded.model, path=str(root / "base"),
                                          files=loaded.digests).files == record["files"]
    finally:
        del base_record.open
    assert reads == []


def test_one_changed_weight_is_refused_everywhere_naming_the_file(trained, tmp_path, capsys):
    root, original = trained
    weights = root / "base" / WEIGHTS
    workdir = root / "work"
    _change_one_weight(weights)
    try:
        assert weights.stat().st_size == len(original) and weights.read_bytes() != original
        expected = (f"{workdir / 'checkpoints'}/2: base model file {weights.resolve()} "
                    f"{DIFFERS} (sha256 {_sha256(weights)[:12]}, trained on "
                    f"{hashlib.sha256(original).hexdigest()[:12]})")
        clip = tmp_path / "clip.json"
        clip.write_text('{"knee_angle_trajectory": [170, 120, 90, 120, 170]}')

        # (a) infer: exit 2, one line naming the file.
        assert infer.main(["--ckpt", str(workdir), "--input", str(clip)]) == 2
        assert capsys.readouterr().err == f"error: {expected}\n"

        # (b) evaluate: the same line.
        assert evaluate_lib.main(["--ckpt", str(workdir), "--data", str(root / "clips")]) == 2
        assert capsys.readouterr().err == f"error: {expected}\n"

        # (c) resuming training: refused before any step, the checkpoint untouched.
        rc, _, err = _train(root, 3, capsys)
        assert rc == 2, err[-3000:]
        assert err == f"error: {expected}\n", err[-3000:]
        assert sorted(p.name for p in (workdir / "checkpoints").iterdir()
                      if p.name.isdigit()) == ["2"]
    finally:
        weights.write_bytes(original)

    # The unchanged base (same bytes, a new modification time) works again: inference restores
    # and training resumes (to the step it has: the check without compiling a step).
    run = run_lib.restore(workdir)
    assert run.step == 2 and run.record.files == {WEIGHTS: hashlib.sha256(original).hexdigest()}
    rc, out, err = _train(root, 2, capsys)
    assert rc == 0, err[-3000:]
    assert f"resumed from {workdir / 'checkpoints'}/2" in out


def test_a_base_given_with_base_is_checked_by_content(trained, tmp_path, capsys):
    root, _ = trained
    moved = tmp_path / "moved"
    shutil.copytree(root / "base", moved)
    assert run_lib.restore(root / "work", base=str(moved)).record.path == str(moved)
    _change_one_weight(moved / WEIGHTS)
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match=f"base model file {moved / WEIGHTS} {DIFFERS}"):
        run_lib.restore(root / "work", base=str(moved))
    clip = tmp_path / "clip.json"
    clip.write_text('{"knee_angle_trajectory": [170, 120, 90, 120, 170]}')
    assert infer.main(["--input", str(clip), "--ckpt", str(root / "work"),
                       "--base", str(moved)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{moved / WEIGHTS} {DIFFERS}" in err


def test_a_truncated_weights_file_is_one_line_naming_it(trained, tmp_path, capsys):
    root, original = trained
    cut = tmp_path / "cut"
    shutil.copytree(root / "base", cut)
    (cut / WEIGHTS).write_bytes(original[:len(original) // 2])
    with pytest.raises(hf.WeightsError, match=f"{cut / WEIGHTS}: not a readable safetensors "
                                              "file .*truncated or damaged"):
        hf.load_pretrained(cut)
    clip = tmp_path / "clip.json"
    clip.write_text('{"knee_angle_trajectory": [170, 120, 90, 120, 170]}')
    assert infer.main(["--input", str(clip), "--ckpt", str(root / "work"),
                       "--base", str(cut)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cut / WEIGHTS}: not a readable safetensors file (")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_record_without_file_hashes_is_restored_with_a_warning(trained, tmp_path, capsys):
    root, _ = trained
    old = tmp_path / "old"
    shutil.copytree(root / "work", old)
    for step in (old / "checkpoints").iterdir():
        if not step.name.isdigit():
            continue
        for item in (step / "base").iterdir():
            text = item.read_text() if item.is_file() else ""
            if '"fingerprint"' in text:
                record = json.loads(text)
                del record["files"]
                item.write_text(json.dumps(record))
    run = run_lib.restore(old)
    assert run.step == max(int(p.name) for p in (old / "checkpoints").iterdir()
                           if p.name.isdigit())
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1, warnings
    assert "records no hashes of its base model's files" in warnings[0]
    assert "were not verified" in warnings[0]


def test_check_base_names_missing_and_extra_files_and_leaves_random_bases_alone():
    state = {"w": np.zeros((4, 4), np.float32)}
    config = {"hidden_size": 4}

    def record(files, path="/bases/phi"):
        return base_record.BaseModelRecord.from_model(state, config, path=path, files=files)

    saved = record({"model-00001-of-00002.safetensors": "a" * 64,
                    "model-00002-of-00002.safetensors": "b" * 64})
    ckpt_lib.check_base(saved, record(dict(saved.files)), "ckpt/1")  # the same: accepted
    assert saved.describe() == f"/bases/phi [fingerprint {saved.fingerprint[:12]}]"
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match="ckpt/1: base model /bases/phi has no file "
                             r"model-00002-of-00002.safetensors, .* \(sha256 bbbbbbbbbbbb\)"):
        ckpt_lib.check_base(saved, record({"model-00001-of-00002.safetensors": "a" * 64}),
                            "ckpt/1")
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match="ckpt/1: base model file /bases/phi/model.safetensors was not part"):
        ckpt_lib.check_base(saved, record({**saved.files, "model.safetensors": "c" * 64}),
                            "ckpt/1")
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match="model-00001-of-00002.safetensors differs .* "
                             r"\(sha256 cccccccccccc, trained on aaaaaaaaaaaa\)"):
        ckpt_lib.check_base(saved, record({**saved.files,
                                           "model-00001-of-00002.safetensors": "c" * 64}),
                            "ckpt/1")
    # The record round-trips through its JSON form; a random base keeps its seed fingerprint.
    assert base_record.BaseModelRecord.from_dict(json.loads(json.dumps(saved.to_dict()))) == saved
    random = base_record.BaseModelRecord.from_model(state, config, path=None, init_seed=3,
                                                    files={"x": "y"})
    assert random.files is None
    ckpt_lib.check_base(random, random, "ckpt/1")
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="checkpoint was trained on base"):
        ckpt_lib.check_base(random, base_record.BaseModelRecord.from_model(
            state, config, path=None, init_seed=4), "ckpt/1")


def test_digests_are_each_files_sha256_and_an_unreadable_file_is_one_line(tmp_path, monkeypatch):
    directory = tmp_path / "base"
    (directory / "sub").mkdir(parents=True)
    files = [directory / "x.safetensors", directory / "sub" / "y.safetensors"]
    for i, file in enumerate(files):
        file.write_bytes(bytes(range(256)) * (i + 1) * 40000)  # over one read chunk for y
    digester = base_record.Digester(files, directory)
    digester.start()
    assert digester.result() == {"sub/y.safetensors": _sha256(files[1]),
                                 "x.safetensors": _sha256(files[0])}
    gone = tmp_path / "gone.safetensors"
    with pytest.raises(base_record.UnreadableFileError,
                       match=f"^{gone}: cannot be read \\(No such file or directory\\)$"):
        base_record.file_sha256(gone)

    # The loader reports a file its hashing thread cannot read as one WeightsError line.
    make_tiny_base(directory)
    weights = directory / WEIGHTS

    def unreadable(file, stop=None):
        raise base_record.UnreadableFileError(file, "Input/output error")

    monkeypatch.setattr(base_record, "file_sha256", unreadable)
    with pytest.raises(hf.WeightsError,
                       match=f"^{weights}: cannot be read \\(Input/output error\\)$"):
        hf.load_weights(directory)
