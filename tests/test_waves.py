"""Tests of rep segmentation (data/waves.py) and the seed wave_features (data/features.py)."""

import json

import numpy as np
import pytest

from wavepose_jax.data import features, waves
from wavepose_jax.data.schema import SIGNAL_NAMES

FPS = 30.0


def _signals(primary_name, primary):
    sig = {name: np.zeros_like(primary) for name in SIGNAL_NAMES}
    sig["knee_angle_trajectory"] = sig["back_trajectory"] = np.full_like(primary, 175.0)
    sig[primary_name] = primary
    return sig


def _reps(n, period, lo, hi, idle_before=0.0, idle_after=0.0, rest="top"):
    """n cosine reps between hi (rest) and lo, with idle time at the rest level."""
    t = np.arange(int(n * period * FPS)) / FPS
    move = (1 - np.cos(2 * np.pi * t / period)) / 2  # 0 at rest, 1 at the turn
    rest_v, turn_v = (hi, lo) if rest == "top" else (lo, hi)
    x = rest_v + (turn_v - rest_v) * move
    return np.concatenate([np.full(int(idle_before * FPS), rest_v), x,
                           np.full(int(idle_after * FPS), rest_v)])


@pytest.mark.parametrize("n", [1, 5, 12])
def test_sine_squat_rep_count_and_phases(n):
    knee = _reps(n, 2.5, 85.0, 175.0)
    a = waves.analyze_reps(_signals("knee_angle_trajectory", knee), FPS, "squat")
    assert len(a.reps) == n
    assert a.turn == "bottom"
    for rep in a.reps:
        assert rep.start < rep.bottom < rep.end
        assert rep.depth == pytest.approx(85.0, abs=1.0)
        assert rep.lockout == pytest.approx(175.0, abs=1.0)
        # The descent is a half-cosine of 1.25 s, top to bottom; its slow ends read ~20% short
        # (the 10%-90% phase bands alone would give 0.59 * 1.25 s).
        assert rep.descent_sec == pytest.approx(1.25, rel=0.25)
    kinds = [p[0] for p in a.phases]
    assert kinds[:3] == ["descent", "bottom", "ascent"]
    assert set(kinds) <= {"descent", "bottom", "ascent", "lockout"}


def test_idle_standing_before_and_after_with_noise():
    rng = np.random.default_rng(0)
    knee = _reps(6, 3.0, 90.0, 176.0, idle_before=4.0, idle_after=5.0)
    knee = knee + rng.normal(0.0, 3.0, knee.shape)
    a = waves.analyze_reps(_signals("knee_angle_trajectory", knee), FPS, "squat")
    assert len(a.reps) == 6
    assert a.reps[0].start >= int(3.8 * FPS)
    assert a.reps[-1].end <= knee.size - int(4.8 * FPS)


def test_noisy_uneven_reps_with_drift_within_one():
    rng = np.random.default_rng(1)
    parts = [_reps(1, p, 0.3, 1.1) for p in (1.5, 3.5, 2.0, 4.0, 1.8, 2.6, 3.1)]
    x = np.concatenate(parts)
    x = x + 0.02 * np.arange(x.size) / FPS + rng.normal(0.0, 0.04, x.size)
    a = waves.analyze_reps(_signals("shoulder_trajectory", x), FPS, "pushup")
    assert abs(len(a.reps) - 7) <= 1


def test_partial_first_and_last_rep_are_not_invented():
    knee = _reps(5, 2.0, 80.0, 175.0)
    # Starts mid-ascent (bottom not in the clip), ends mid-descent (bottom not reached).
    cut = knee[int(0.75 * 2.0 * FPS):-int(0.75 * 2.0 * FPS)]
    a = waves.analyze_reps(_signals("knee_angle_trajectory", cut), FPS, "squat")
    assert len(a.reps) == 3


def test_press_turns_at_the_top_and_deadlift_from_the_floor():
    arm = _reps(4, 3.0, 0.9, 2.0, idle_before=1.0, rest="bottom")
    a = waves.analyze_reps(_signals("arm_Trajectory", arm), FPS, "press")
    assert (len(a.reps), a.turn) == (4, "top")
    assert [p[0] for p in a.phases[:3]] == ["ascent", "lockout", "descent"]
    assert all(r.bottom > r.top for r in a.reps)
    # A deadlift clip that starts and ends with the bar on the floor: 3 pulls.
    hip = _reps(3, 3.0, 70.0, 175.0, rest="bottom")
    a = waves.analyze_reps(_signals("back_trajectory", hip), FPS, "deadlift")
    assert (len(a.reps), a.turn) == (3, "top")


def test_still_or_missing_signal_has_no_reps():
    flat = np.full(300, 170.0) + np.random.default_rng(0).normal(0, 0.5, 300)
    assert waves.analyze_reps(_signals("knee_angle_trajectory", flat), FPS, "squat").reps == []
    sig = _signals("knee_angle_trajectory", np.full(300, np.nan))
    assert waves.analyze_reps(sig, FPS, "squat").reps == []
    assert features.compute_wave_features(sig, FPS, "squat").harmonic.oscillation_count == 0
    with pytest.raises(ValueError, match="exercise"):
        waves.analyze_reps(sig, FPS, "lunge")


_NUM, _INT = (int, float), int
SCHEMA = {
    "quality": {"grade": str, "overall": _NUM, "smoothness": _NUM, "control": _NUM,
                "efficiency": _NUM, "consistency": _NUM},
    "energy": {"work_positive": _NUM, "work_negative": _NUM, "efficiency_pct": _NUM,
               "peak_power_w": _NUM},
    "damping": {"ratio": _NUM, "control_quality": (str, int, float)},
    "frequency": {"dominant_hz": _NUM, "spectral_entropy": _NUM,
                  "band_power": {"slow": _NUM, "medium": _NUM, "fast": _NUM, "harmonic": _NUM}},
    "harmonic": {"oscillation_count": _INT, "is_harmonic": bool},
    "wave_count": _INT,
}


def _check(value, spec, path="wave_features"):
    if isinstance(spec, dict):
        assert isinstance(value, dict) and set(spec) <= set(value), path
        for key, sub in spec.items():
            _check(value[key], sub, f"{path}.{key}")
    else:
        assert isinstance(value, spec) and not (spec != bool and isinstance(value, bool)), path


def test_wave_features_schema_and_values():
    knee = _reps(5, 2.5, 85.0, 175.0, idle_before=1.0)
    sig = _signals("knee_angle_trajectory", knee)
    sig["trajectory"] = (knee - 175.0) / 90.0  # the hips drop with the knees
    wf = features.compute_wave_features(sig, FPS, "squat").to_json()
    json.dumps(wf, allow_nan=False)
    _check(wf, SCHEMA)
    assert wf["harmonic"] == {"oscillation_count": 5, "is_harmonic": True}
    assert wf["frequency"]["dominant_hz"] == pytest.approx(0.4, abs=0.07)
    assert wf["wave_count"] == len(wf["waves"]) == 4 * 5 - 1
    for w in wf["waves"]:
        assert w["type"] in ("descent", "bottom", "ascent", "lockout")
        assert 0.0 <= w["smoothness"] <= 1.0 and w["duration_sec"] >= 0
    assert wf["energy"]["work_positive"] > 0 > wf["energy"]["work_negative"]
    assert 0 <= wf["quality"]["overall"] <= 100 and wf["quality"]["grade"] in "ABCDF"
    assert wf["quality"]["consistency"] > 90
    assert abs(wf["damping"]["ratio"]) < 0.05


def test_rep_channels_carry_each_reps_measures_on_its_frames():
    knee = np.concatenate([_reps(2, 2.0, 85.0, 175.0, idle_before=1.0),
                           _reps(1, 4.0, 120.0, 175.0, idle_after=1.0)])
    a = waves.analyze_reps(_signals("knee_angle_trajectory", knee), FPS, "squat")
    ch = waves.rep_channels(a)
    assert ch.shape == (knee.size, len(waves.REP_CHANNELS)) and ch.dtype == np.float32
    per_rep = ch[:, :6]
    assert not per_rep[:a.reps[0].start].any() and not per_rep[a.reps[-1].end + 1:].any()
    col = {name: ch[:, i] for i, name in enumerate(waves.REP_CHANNELS)}
    assert (col["exercise_squat"] == 1).all() and not col["exercise_press"].any()
    for rep in a.reps:
        frames = slice(rep.start, rep.end + 1)
        assert np.allclose(col["rep_depth"][frames], (rep.depth - 90.0) / 90.0)
        assert np.allclose(col["rep_lockout"][frames], (rep.lockout - 90.0) / 90.0)
        assert np.allclose(col["rep_descent_seconds"][frames], rep.descent_sec / 2.0)
        turn = rep.bottom
        assert col["rep_phase_cos"][rep.start] == pytest.approx(1.0)
        assert col["rep_phase_cos"][turn] == pytest.approx(-1.0)
    # The slow third rep lasts about twice the median rep: relative duration about +1.
    assert col["rep_relative_seconds"][a.reps[2].start] == pytest.approx(1.0, abs=0.2)
    assert col["rep_relative_seconds"][a.reps[0].start] == pytest.approx(0.0, abs=0.05)
    # Heights (push-up, press) are scaled like the signals: torso units / 2.
    shoulder = _reps(3, 2.0, 0.3, 1.1)
    p = waves.analyze_reps(_signals("shoulder_trajectory", shoulder), FPS, "pushup")
    assert waves.rep_channels(p)[p.reps[0].start, 4] == pytest.approx(p.reps[0].depth / 2.0)
