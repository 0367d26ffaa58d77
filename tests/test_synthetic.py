"""Tests of the synthetic clip generator: labels agree with the measurements, determinism, CLI."""

import collections
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wavepose_jax.data import faults
from wavepose_jax.data import clip as clip_lib
from wavepose_jax.data import synthetic, waves
from wavepose_jax.data.schema import EXERCISES, SIGNAL_NAMES

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _raw(exercise, seed, **overrides):
    """One render of a drawn spec, without the generator's redraws."""
    rng = np.random.default_rng(seed)
    spec = synthetic.draw_spec(rng, exercise, **overrides)
    return spec, synthetic.render_clip(spec, rng)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_rep_count_exact_on_clean_clips(exercise):
    for seed in range(4):
        spec, out = _raw(exercise, [seed, 1], noise=0.0, faults=())
        assert len(out["analysis"].reps) == spec.reps, (seed, spec)
        assert out["faults"] == []


@pytest.mark.parametrize("exercise", EXERCISES)
def test_rep_count_within_one_on_noisy_clips(exercise):
    for seed in range(3):
        spec, out = _raw(exercise, [seed, 2], noise=3.0)
        assert abs(len(out["analysis"].reps) - spec.reps) <= 1, (seed, spec)


def test_ground_truth_agrees_with_measurement():
    """Intended reps and faults equal what waves + faults measure, on 40 raw renders."""
    agree, seen = 0, collections.Counter()
    for i in range(40):
        spec, out = _raw(EXERCISES[i % 4], [i, 3])
        agree += len(out["analysis"].reps) == spec.reps and out["faults"] == list(spec.faults)
        seen[len(spec.faults)] += 1
        seen.update(spec.faults)
    assert agree == 40
    assert seen[0] and seen[1] and seen[2]  # clips with 0, 1 and 2 faults all occur
    assert seen["fast_eccentric"] and seen["uneven_tempo"]


def test_partial_first_and_last_reps_within_one():
    spec, out = _raw("squat", [5, 4], noise=1.0, reps=6, faults=())
    reps = out["analysis"].reps
    cut = {k: v[(reps[0].start + reps[0].bottom) // 2:(reps[-1].bottom + reps[-1].end) // 2]
           for k, v in out["signals"].items()}
    n = len(waves.analyze_reps(cut, spec.fps, "squat").reps)
    assert abs(n - 6) <= 1


def test_generate_clip_contract_and_determinism():
    a = synthetic.generate_clip(123, "pushup", faults=("pushup_hip_sag",), reps=4)
    b = synthetic.generate_clip(np.random.default_rng(123), "push-up",
                                faults=("pushup_hip_sag",), reps=4)
    assert json.dumps(a) == json.dumps(b)
    assert a != synthetic.generate_clip(124, "pushup", faults=("pushup_hip_sag",), reps=4)
    t = a["n_frames"]
    assert np.asarray(a["keypoints"]).shape == (t, 17, 2)
    assert np.asarray(a["confidence"]).shape == (t, 17)
    assert all(len(a[name]) == t for name in SIGNAL_NAMES)
    assert (a["exercise"], a["reps"], a["faults"], a["expert"]) == (
        "pushup", 4, ["pushup_hip_sag"], False)
    assert a["CAMERA_POSITION"] == "side" and 24 <= a["fps"] <= 60
    assert a["wave_features"]["harmonic"]["oscillation_count"] == 4
    assert faults.faults_from_text(a["LANGUAGE"]) == a["faults"]
    assert faults.reps_from_text(a["LANGUAGE"]) == 4
    sig = {k: np.asarray(a[k], np.float32) for k in SIGNAL_NAMES}
    measured = faults.detect_faults(waves.analyze_reps(sig, a["fps"], "pushup"))
    assert measured == a["faults"]
    with pytest.raises(ValueError, match="do not apply"):
        synthetic.generate_clip(0, "squat", faults=("pushup_hip_sag",))
    with pytest.raises(TypeError, match="unknown overrides"):
        synthetic.generate_clip(0, "squat", depth=3)


def test_cli_writes_n_files(tmp_path):
    out = tmp_path / "clips"
    cmd = [sys.executable, "-m", "wavepose_jax.data.synthetic", "--out", str(out), "--n", "3",
           "--seed", "5", "--exercises", "squat,press", "--max-reps", "3", "--no-keypoints"]
    subprocess.run(cmd, check=True, capture_output=True)
    files = sorted(glob.glob(str(out / "*.json")))
    assert [os.path.basename(f) for f in files] == [f"synth-s5-{i:05d}.json" for i in range(3)]
    first = open(files[0]).read()
    for f in files:
        d = json.loads(open(f).read())
        assert d["exercise"] in ("squat", "press") and 1 <= d["reps"] <= 3
        assert "keypoints" not in d
        clip = clip_lib.load_clip(f)
        assert clip.faults == d["faults"]
    synthetic.write_dataset(tmp_path / "again", 1, 5, exercises=["squat", "press"], max_reps=3,
                            keypoints=False, progress=False)
    assert open(tmp_path / "again" / "synth-s5-00000.json").read() == first
    bad = subprocess.run(cmd[:-5] + ["--exercises", "lunge"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "lunge" in bad.stderr


def test_examples_are_small_and_consistent():
    files = sorted(glob.glob(os.path.join(EXAMPLES, "*.json")))
    assert 8 <= len(files) <= 12
    assert sum(os.path.getsize(f) for f in files) < 1.5e6
    assert {json.load(open(f))["exercise"] for f in files} == set(EXERCISES)
    for f in files:
        d = json.load(open(f))
        clip = clip_lib.load_clip(f)
        assert clip.exercise == d["exercise"]
        assert d["wave_features"]["harmonic"]["oscillation_count"] == d["reps"]
        assert faults.faults_from_text(d["LANGUAGE"]) == d["faults"]
