"""The out-of-distribution benchmark (data/othergen.py): a second clip generator, unrelated to
data/synthetic.py (its own body, kinematics, motion profiles, camera and noise).

The loader, the pose front end, rep segmentation and the fault rules must get its truth from
keypoints alone, on every exercise; and its clips must never become training data.
"""

import ast
import collections
import json
import pathlib

import numpy as np

from wavepose_jax.data import faults, othergen, waves
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.clip import clip_from_dict, load_clip
from wavepose_jax.data.schema import EXERCISES, SIGNAL_NAMES

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "wavepose_jax"


def test_the_rules_get_the_truth_on_every_exercise():
    reps_ok, faults_ok, rep_hits, rep_total, seen = 0, 0, 0, 0, collections.Counter()
    for i in range(48):
        exercise = EXERCISES[i % 4]
        d = othergen.generate_clip([i, 1], exercise)
        clip = clip_from_dict(d)  # keypoints only: signals and wave features derived here
        analysis = waves.analyze_reps(clip.signals, clip.fps, exercise)
        reps_ok += len(analysis.reps) == d["reps"]
        faults_ok += faults.detect_faults(analysis) == d["faults"]
        if len(analysis.reps) == d["reps"]:
            for measured, truth in zip(faults.per_rep_faults(analysis), d["rep_faults"]):
                rep_hits += measured == truth
                rep_total += 1
        seen[exercise] += bool(d["faults"])
        seen.update(d["faults"])
    assert reps_ok >= 47 and faults_ok >= 46, (reps_ok, faults_ok)
    assert rep_hits >= 0.97 * rep_total
    assert all(seen[ex] >= 3 for ex in EXERCISES)  # faulty clips of every exercise
    assert len([f for f in faults.FAULTS if seen[f]]) >= 9  # nearly every fault occurs


def test_clips_are_keypoints_with_their_truth(tmp_path):
    paths = othergen.write_dataset(tmp_path, 8, seed=3)
    assert [pathlib.Path(p).name for p in paths] == [f"othergen-s3-{i:05d}.json"
                                                     for i in range(8)]
    exercises = set()
    for path in paths:
        d = json.loads(pathlib.Path(path).read_text())
        assert d["benchmark"] == othergen.BENCHMARK
        assert not set(SIGNAL_NAMES) & set(d) and "wave_features" not in d
        assert len(d["keypoints"]) == d["n_frames"] and len(d["rep_faults"]) == d["reps"]
        assert text_lib.faults_from_text(d["LANGUAGE"]) == d["faults"]
        assert text_lib.reps_from_text(d["LANGUAGE"]) == d["reps"]
        clip = load_clip(path)
        assert clip.meta["benchmark"] == othergen.BENCHMARK
        assert len(clip.wave_features.rep_faults) == \
            clip.wave_features.harmonic.oscillation_count
        exercises.add(clip.exercise)
    assert exercises == set(EXERCISES)
    again = othergen.generate_clip([3, 0, 7], EXERCISES[0], video_id="othergen-s3-00000")
    assert json.dumps(again, separators=(",", ":")) == pathlib.Path(paths[0]).read_text()
    from wavepose_jax import clips  # its command line: `wavepose-clips other`

    assert clips.main(["other", "--out", str(tmp_path / "x"), "--n", "1",
                       "--exercises", "lunge"]) == 2


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_independent_of_the_training_generator_and_of_training():
    """othergen shares no code with synthetic.py; the only modules that import it are train.py,
    where only the function that writes the benchmark for the final evaluation uses it, and
    the command line clips.py, where only `wavepose-clips other` does."""
    assert not any("synthetic" in m for m in _imports(PACKAGE / "data" / "othergen.py"))
    assert not any("synthetic" in m for m in _imports(PACKAGE / "data" / "othergen_body.py"))
    importers = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                 if path.name != "othergen.py" and any("othergen" in m for m in _imports(path))}
    assert importers <= {"train.py", "clips.py"}
    for module, user in (("train.py", "_benchmark_dir"), ("clips.py", "other")):
        tree = ast.parse((PACKAGE / module).read_text())
        users = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                 and any(isinstance(n, ast.Name) and n.id == "othergen" for n in ast.walk(f))}
        assert users == {user}, module


def test_training_refuses_benchmark_clips(tmp_path):
    from wavepose_jax import dataset, hf
    from wavepose_jax.configs import tiny
    from wavepose_jax.data import synthetic
    from wavepose_jax.spec import RunSpec

    othergen.write_dataset(tmp_path, 2, seed=0)
    synthetic.write_dataset(tmp_path, 3, seed=0, keypoints=False, progress=False)
    data = RunSpec.from_config(tiny.get_config()).data
    train, val, report = dataset.prepare_dataset(tmp_path, hf.load_tokenizer(tiny.TINY_BASE),
                                                 data, seed=0)
    assert len(train) + len(val) == 3
    assert all("synth" in p for p in train.paths + val.paths)
    assert len(report.bad) == 2 and all("evaluation-only clip (othergen)" in line
                                        for line in report.bad)
