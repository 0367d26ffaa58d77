"""Tests of the synthetic clip generator: labels are the measurements, the variety a real
recording has is present, determinism, CLI."""

import collections
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wavepose_jax.data import faults
from wavepose_jax.data import text as text_lib
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


@pytest.mark.parametrize("exercise", EXERCISES)
def test_rep_count_within_one_on_noisy_clips(exercise):
    for seed in range(3):
        spec, out = _raw(exercise, [seed, 2], noise=3.0)
        assert abs(len(out["analysis"].reps) - spec.reps) <= 1, (seed, spec)


def test_rep_counts_cover_long_sets():
    """Every count 1..MAX_REPS is drawn, and long sets (10+ reps) are no rarity: the feedback
    must learn to write their counts as well as the common 5."""
    rng = np.random.default_rng(5)
    counts = collections.Counter(synthetic.draw_spec(rng).reps for _ in range(800))
    assert set(counts) == set(range(1, synthetic.MAX_REPS + 1))
    assert sum(v for k, v in counts.items() if k >= 10) >= 0.06 * 800
    assert counts.most_common(1)[0][0] in range(3, 8)  # still mostly ordinary sets


def _signals(clip):
    return {k: np.asarray(clip[k], np.float32) for k in SIGNAL_NAMES}


def test_labels_are_the_measurement():
    """A clip's faults and per-rep faults are what the rules measure on its signals; the text
    names exactly those (and which reps); most draws still show what they were meant to."""
    meant, seen = 0, collections.Counter()
    for i in range(32):
        rng = np.random.default_rng([i, 3])
        spec = synthetic.draw_spec(rng, EXERCISES[i % 4])
        clip = synthetic.generate_clip(rng, spec.exercise, keypoints=False, reps=spec.reps,
                                       faults=spec.faults, fps=spec.fps)
        analysis = waves.analyze_reps(_signals(clip), clip["fps"], clip["exercise"])
        assert len(analysis.reps) == clip["reps"]
        assert clip["faults"] == faults.detect_faults(analysis)
        assert clip["rep_faults"] == faults.per_rep_faults(analysis)
        assert clip["wave_features"]["rep_faults"] == clip["rep_faults"]
        assert text_lib.faults_from_text(clip["LANGUAGE"]) == clip["faults"]
        named = text_lib.rep_faults_from_text(clip["LANGUAGE"], clip["reps"], clip["exercise"])
        for said, truth in zip(named, clip["rep_faults"]):
            assert set(said) & faults.PER_REP_FAULTS == set(truth) & set(clip["faults"])
        meant += clip["faults"] == list(spec.faults)
        seen[len(clip["faults"])] += 1
        seen.update(clip["faults"])
    assert meant >= 20
    assert seen[0] and seen[1] and seen[2]  # clips with 0, 1 and 2 faults all occur
    assert seen["fast_eccentric"] and seen["uneven_tempo"]


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_the_variety_of_real_recordings_is_present():
    """Across 48 clips: frame rates, image sizes and both coordinate conventions, both facing
    directions, oblique cameras, missing and unconfident keypoints, athletes off-centre and
    drifting, idle time, rests of different lengths, uneven depth and borderline faults."""
    fps, sizes, conventions, facing, skew, missing, unsure = set(), set(), set(), set(), [], 0, 0
    offsets, drift, idle, rest_spread, depth_spread, margins = [], [], [], [], [], []
    for i in range(48):
        rng = np.random.default_rng([i, 9])
        spec = synthetic.draw_spec(rng, EXERCISES[i % 4])
        out = synthetic.render_clip(spec, rng)
        kp, size = out["keypoints"], np.array(out["image_size"], float)
        px = kp * size if out["normalised"] else kp
        fps.add(spec.fps)
        sizes.add(tuple(out["image_size"]))
        conventions.add(out["normalised"])
        assert np.nanmin(px) >= 0 and np.all(np.nanmax(px, axis=(0, 1)) <= size)
        hips = np.nanmean(px[:, [11, 12]], 1)
        facing.add(bool(np.nanmedian(px[:, 0, 0] - hips[:, 0]) > 0))  # nose ahead of the hips
        # Oblique views: the two hips apart in the image, relative to the torso.
        torso = np.nanmedian(np.linalg.norm(np.nanmean(px[:, [5, 6]], 1) - hips, axis=-1))
        skew.append(np.nanmedian(np.abs(px[:, 11, 0] - px[:, 12, 0])) / torso)
        missing += bool(np.isnan(kp).any())
        unsure += bool((out["confidence"] < 0.3).any())
        offsets.append(np.nanmedian(hips[:, 0]) / size[0])
        drift.append(abs(np.nanmedian(hips[:30, 0]) - np.nanmedian(hips[-30:, 0])) / torso)
        reps = out["analysis"].reps
        idle.append(reps[0].start / spec.fps)
        if len(reps) >= 3:
            gaps = np.diff([r.start for r in reps]) - [r.end - r.start for r in reps[:-1]]
            rest_spread.append(np.ptp(gaps) / spec.fps)
            depth_spread.append(np.ptp([r.depth for r in reps]) / max(abs(reps[0].rom), 1e-6))
        if spec.exercise == "squat":
            margins += [abs(r.depth - faults.SQUAT_MAX_DEPTH_DEG) for r in reps]
    assert min(fps) <= 15 and max(fps) >= 60 and len(fps) >= 6
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes)
    assert conventions == {True, False} and facing == {True, False}
    assert max(skew) > 0.3 > min(skew)
    assert missing >= 10 and unsure >= 20
    assert min(offsets) < 0.35 and max(offsets) > 0.65
    assert max(drift) > 0.3
    assert min(idle) < 0.5 and max(idle) > 2.5
    assert max(rest_spread) > 1.5
    assert max(depth_spread) > 0.1
    assert min(margins) < 3.0  # a squat rep within 3 degrees of the depth rule


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
    assert np.asarray(a["keypoints"], float).shape == (t, 17, 2)
    assert np.asarray(a["confidence"]).shape == (t, 17)
    assert len(a["image_size"]) == 2
    assert all(len(a[name]) == t for name in SIGNAL_NAMES)
    assert (a["exercise"], a["reps"], a["expert"]) == ("pushup", 4, not a["faults"])
    assert a["CAMERA_POSITION"] == "side" and 15 <= a["fps"] <= 60
    assert a["wave_features"]["harmonic"]["oscillation_count"] == 4
    assert len(a["rep_faults"]) == 4
    assert text_lib.faults_from_text(a["LANGUAGE"]) == a["faults"]
    assert text_lib.reps_from_text(a["LANGUAGE"]) == 4
    measured = faults.detect_faults(waves.analyze_reps(_signals(a), a["fps"], "pushup"))
    assert measured == a["faults"]
    # The file's keypoints give the file's signals through the loader's pose front end.
    loaded = clip_lib.clip_from_dict({k: v for k, v in a.items() if k not in SIGNAL_NAMES})
    assert np.abs(loaded.signals["back_trajectory"] - _signals(a)["back_trajectory"]).max() < 1.0
    with pytest.raises(ValueError, match="do not apply"):
        synthetic.generate_clip(0, "squat", faults=("pushup_hip_sag",))
    with pytest.raises(TypeError, match="unknown overrides"):
        synthetic.generate_clip(0, "squat", depth=3)


def test_cli_writes_n_files(tmp_path):
    out = tmp_path / "clips"
    cmd = [sys.executable, "-m", "wavepose_jax.clips", "synthetic", "--out", str(out), "--n", "3",
           "--seed", "5", "--exercises", "squat,press", "--max_reps", "3", "--nokeypoints"]
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
    assert bad.stderr.startswith("error: --exercises:")


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
        assert text_lib.faults_from_text(d["LANGUAGE"]) == d["faults"]
