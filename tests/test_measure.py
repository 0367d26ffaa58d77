"""A clip's measurement: what it states, and the clips with nothing to coach (each a reason)."""

import json

import numpy as np
import pytest

from wavepose_jax.data import synthetic
from wavepose_jax.data.clip import clip_from_dict
from wavepose_jax.data.measure import MIN_COVERAGE, NothingToCoach, measure
from wavepose_jax.data.schema import SIGNAL_NAMES


def _clip(signals, fps=30.0, **extra):
    d = {"video_id": "v", "exercise": "squat", "fps": fps,
         **{k: np.asarray(v, float).tolist() for k, v in signals.items()}, **extra}
    return clip_from_dict(d, "v.json")


def _still(n):
    return {name: np.full(n, 170.0 if name == "knee_angle_trajectory" else 0.1)
            for name in SIGNAL_NAMES}


def _squats(n, fps=30.0, period=2.5):
    t = np.arange(n) / fps
    out = _still(n)
    out["knee_angle_trajectory"] = 130.0 + 45.0 * np.cos(2 * np.pi * t / period)
    return out


@pytest.mark.parametrize("signals, fps, words", [
    (_still(300), 30.0, "no movement to count: the knee angle varies by 0 deg"),
    (_still(2), 1000.0, "the clip has 2 frames (0.002 s): too short for a rep"),
    (_still(100_000), 30.0, "no movement to count"),
])
def test_a_clip_without_a_measurable_rep_has_nothing_to_coach(signals, fps, words):
    clip = _clip(signals, fps)
    m = measure(clip)
    assert m.reps == 0 and m.faults == [] and m.tempo_sec is None
    assert words in m.nothing_to_coach
    with pytest.raises(NothingToCoach) as e:
        m.check_coachable(clip.source)
    line = str(e.value)
    assert line.startswith("v.json: field 'knee_angle_trajectory': nothing to coach: ")
    assert "\n" not in line and e.value.reason == m.nothing_to_coach


def test_mostly_null_signal_values_leave_nothing_to_coach():
    signals = _squats(300)
    knee = signals["knee_angle_trajectory"].astype(object)
    knee[::3] = None
    knee[1::3] = None  # two frames in three missing: interpolation would draw the reps
    clip = _clip({**signals, "knee_angle_trajectory": knee})
    assert clip.coverage["knee_angle_trajectory"] == pytest.approx(1 / 3)
    reason = measure(clip).nothing_to_coach
    assert reason.startswith("the knee angle is measured in only 33% of the frames (it is null")
    assert f"at least {MIN_COVERAGE:.0%}" in reason


def test_keypoints_missing_in_most_frames_leave_nothing_to_coach():
    raw = json.loads(json.dumps(synthetic.generate_clip(3, "squat")))
    assert measure(clip_from_dict(raw, "ok.json")).nothing_to_coach is None
    conf = np.asarray(raw["confidence"], float)
    conf[: int(0.7 * len(conf)), 11:17] = 0.05  # hips, knees and ankles unconfident
    raw["confidence"] = conf.tolist()
    for name in SIGNAL_NAMES:
        raw.pop(name)  # the signals come from the keypoints alone
    raw.pop("wave_features")
    clip = clip_from_dict(raw, "gaps.json")
    assert clip.coverage["knee_angle_trajectory"] == pytest.approx(0.3, abs=0.01)
    assert "keypoints are missing or unconfident" in measure(clip).nothing_to_coach


def test_a_clip_with_reps_states_its_count_tempo_and_verdicts():
    m = measure(_clip(_squats(300)))
    assert m.nothing_to_coach is None
    assert m.reps >= 3 and m.tempo_sec == pytest.approx(np.mean(
        [r.duration_sec for r in m.analysis.counted]))
    assert set(m.fault_reps) == {"shallow_depth", "incomplete_lockout", "fast_eccentric",
                                 "uneven_tempo"}
    assert m.faults == [f for f, v in m.verdicts.items() if v.present]
    m.check_coachable("v.json")  # no error


def test_a_clip_without_the_signal_reps_are_counted_on_has_nothing_to_coach():
    clip = _clip({"trajectory": np.zeros(90)})
    assert measure(clip).nothing_to_coach == (
        "the clip has no knee angle to count squat reps on (no 'knee_angle_trajectory', nor "
        "keypoints that show it)")
