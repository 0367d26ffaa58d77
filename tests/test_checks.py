"""Checks of a feedback text against the clip: each check, rates, and the ground truth of
generated clips passing."""

import json

import numpy as np
import pytest

from wavepose_jax import checks
from wavepose_jax.data import clip as clip_lib
from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import synthetic, waves
from wavepose_jax.data.measure import Measurement, measure


def _rep(depth: float, duration: float = 2.0, descent: float = 1.0) -> waves.Rep:
    return waves.Rep(start=0, bottom=10, top=20, end=30, depth=depth, lockout=175.0,
                     rom=175.0 - depth, descent_sec=descent, ascent_sec=0.8,
                     bottom_pause_sec=0.1, top_pause_sec=0.0, duration_sec=duration,
                     complete=True)


@pytest.fixture
def squat():
    """Four squats of 2.0 s; reps 1 and 3 shallow (so the clip is: half the reps)."""
    reps = [_rep(120.0), _rep(90.0), _rep(118.0), _rep(92.0)]
    analysis = waves.RepAnalysis("squat", 30.0, reps, [], "bottom", 2.5, 300)
    assert faults_lib.detect_faults(analysis) == ["shallow_depth"]
    return Measurement.of(analysis)


def test_a_text_that_matches_the_measurement_passes(squat):
    text = "I counted 4 reps, averaging 2.1 s each. Watch for shallow depth on reps 1 and 3."
    result = checks.check_feedback(text, squat)
    assert result.passed and result.warnings == []
    assert [c.status for c in result.items] == ["ok"] * 5
    assert result.stated_reps == result.measured_reps == 4
    assert result.measured_tempo_sec == pytest.approx(2.0)
    out = result.to_json()
    assert json.loads(json.dumps(out)) == out and out["passed"] is True
    assert set(out["checks"]) == set(checks.CHECK_NAMES)


@pytest.mark.parametrize("text, failing, words", [
    ("I counted 5 reps, averaging 2.0 s each. Watch for shallow depth on reps 1 and 3.",
     ["rep_count"], "says 5 reps; 4 reps measured"),
    ("Averaging 2.0 s each. Watch for shallow depth on reps 1 and 3.",
     ["rep_count"], "does not state the rep count"),
    ("I counted 4 reps, averaging 2.5 s each. Watch for shallow depth on reps 1 and 3.",
     ["tempo"], "2.5 s per rep; 2.00 s was measured (tolerance 0.25 s)"),
    ("I counted 4 reps, averaging 2.0 s each. Watch for shallow depth on reps 1 and 3 and "
     "rushed descent.", ["faults_not_measured"], '"rushed descent"'),
    ("I counted 4 reps, averaging 2.0 s each. Great depth.", ["faults_not_named"],
     '"shallow depth"'),
    ("I counted 4 reps, averaging 2.0 s each. Watch for shallow depth.", ["fault_reps"],
     "for every rep; the rule finds it on reps 1 and 3"),
])
def test_each_disagreement_is_one_warning(squat, text, failing, words):
    result = checks.check_feedback(text, squat)
    assert not result.passed
    assert [c.name for c in result.items if c.status == "warn"] == failing
    assert len(result.warnings) == 1 and words in result.warnings[0], result.warnings
    assert len(result.short_warnings) == 1


def test_tempo_tolerance_and_skips(squat):
    near = "4 reps at about 2.2 seconds per rep. Shallow depth on reps 1 and 3."
    assert checks.check_feedback(near, squat).status("tempo") == "ok"  # within 0.25 s
    slow = Measurement.of(waves.RepAnalysis("squat", 30.0, [_rep(90.0, duration=6.0)] * 2, [],
                                            "bottom", 6, 400))
    assert checks.tempo_tolerance(6.0) == pytest.approx(0.6)  # 10% of a slow rep
    assert checks.check_feedback("2 reps at about 6.5 seconds per rep.", slow).passed
    assert checks.check_feedback("4 reps. Shallow depth on reps 1 and 3.", squat).status(
        "tempo") == "skip"  # no tempo stated: nothing to compare


def test_a_claim_the_measurement_cannot_confirm_warns_never_skips():
    none = Measurement.of(waves.RepAnalysis("squat", 30.0, [], [], "bottom", 1, 100))
    result = checks.check_feedback("Nice set of 3 reps at 2 s each.", none)
    assert result.status("rep_count") == "warn" and result.status("tempo") == "warn"
    assert "no rep was measured" in " ".join(result.warnings)
    one = Measurement.of(waves.RepAnalysis("squat", 30.0, [_rep(120.0)], [], "bottom", 2, 90))
    result = checks.check_feedback("1 rep. Watch for shallow depth on rep 2.", one)
    assert result.status("fault_reps") == "warn"  # a one-rep set: rep 2 does not exist
    assert checks.check_feedback("1 rep. Watch for shallow depth.", one).passed


def test_rates_over_many_texts(squat):
    good = "I counted 4 reps, averaging 2.0 s each. Watch for shallow depth on reps 1 and 3."
    bad = "I counted 3 reps, averaging 2.0 s each. Watch for shallow depth on reps 1 and 3."
    quiet = "Watch for shallow depth on reps 1 and 3."  # no count, no tempo
    rates = checks.check_rates([checks.check_feedback(t, squat) for t in (good, bad, quiet)])
    assert rates["checks_passed"] == pytest.approx(1 / 3)
    assert rates["check_warn_rate"]["rep_count"] == {"warn_rate": pytest.approx(2 / 3),
                                                     "applied": 3}
    assert rates["check_warn_rate"]["tempo"] == {"warn_rate": 0.0, "applied": 2}
    assert checks.check_rates([]) == {"checks_passed": None, "check_warn_rate": {}}


@pytest.mark.parametrize("exercise", ["squat", "pushup", "deadlift", "press"])
def test_generated_clips_pass_against_their_own_text(exercise):
    for seed in range(3):
        raw = json.loads(json.dumps(synthetic.generate_clip(seed, exercise, keypoints=False)))
        clip = clip_lib.clip_from_dict(raw, f"{exercise}-{seed}.json")
        result = checks.check_feedback(clip.language, measure(clip))
        assert result.passed, (clip.language, result.warnings)
