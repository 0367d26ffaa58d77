"""What a person reads: each grounding rule is what keeps its check from warning."""

import pytest

from wavepose_jax import checks
from wavepose_jax.data import text as text_lib
from wavepose_jax.data import waves
from wavepose_jax.data.measure import Measurement
from wavepose_jax.feedback import EMPTY, feedback


def _rep(depth: float, duration: float = 2.0) -> waves.Rep:
    return waves.Rep(start=0, bottom=10, top=20, end=30, depth=depth, lockout=175.0,
                     rom=175.0 - depth, descent_sec=1.0, ascent_sec=0.8, bottom_pause_sec=0.1,
                     top_pause_sec=0.0, duration_sec=duration, complete=True)


@pytest.fixture(scope="module")
def squat():
    """Four squats of 2.0 s; reps 1 and 3 shallow, which makes shallow depth a set fault."""
    reps = [_rep(120.0), _rep(90.0), _rep(118.0), _rep(92.0)]
    return Measurement.of(waves.RepAnalysis("squat", 30.0, reps, [], "bottom", 2.5, 300))


# The model's text breaks one fact; the check that reads that fact warns on it as written,
# and grounding, by the rule named, is what makes the feedback pass.
@pytest.mark.parametrize("rule, check, model_text", [
    ("rep_count", "rep_count", "I counted 6 reps. Watch for shallow depth on reps 1 and 3."),
    ("tempo", "tempo", "4 reps, averaging 3.4 s each. Watch for shallow depth on reps 1 and 3."),
    ("fault_reps", "fault_reps", "4 reps. Watch for shallow depth on reps 2 and 4."),
    ("fault_reps", "fault_reps", "4 reps. Watch for shallow depth."),
])
def test_each_rule_is_what_its_check_needs(squat, rule, check, model_text):
    assert checks.check_feedback(model_text, squat).status(check) == checks.WARN
    said = feedback(model_text, squat)
    assert said.checks.passed, said.checks.warnings
    assert [e.rule for e in said.edits] == [rule]
    assert said.faults == text_lib.faults_from_text(model_text, "squat") == ["shallow_depth"]
    assert said.model_text == model_text and said.to_json()["model_text"] == model_text


def test_the_fault_choice_stays_the_models(squat):
    """A fault the set does not have stays named (and warned about); one it has stays unnamed
    (and warned about): grounding never adds or removes a fault."""
    wrong = feedback("4 reps. Watch for rushed descent.", squat)
    assert wrong.faults == ["fast_eccentric"]
    assert wrong.checks.status("faults_not_measured") == checks.WARN
    assert wrong.checks.status("faults_not_named") == checks.WARN


def test_an_unverifiable_sentence_is_left_out_and_an_empty_feedback_said(squat):
    said = feedback("4 reps at about 2.0 s each. Keep your knees at 90 degrees.", squat)
    assert said.text == "4 reps at about 2.0 s each." and said.edits[-1].rule == "unverified"
    empty = feedback("Try 3 sets.", squat)
    assert empty.text == "" and empty.shown == EMPTY
