"""Tests of the fault vocabulary, the fault rules and the coaching-text composer."""

import itertools
import re

import numpy as np
import pytest

from wavepose_jax.data import faults
from wavepose_jax.data.schema import EXERCISES
from wavepose_jax.data.waves import Rep, RepAnalysis


def _norm(text):
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def test_vocabulary_ids_and_phrases_are_unique_and_not_nested():
    phrases = [_norm(f.phrase) for f in faults.FAULTS.values()]
    assert len(set(phrases)) == len(phrases)
    assert all(fid == f.id for fid, f in faults.FAULTS.items())
    for a, b in itertools.permutations(phrases, 2):
        assert a not in b
    for ex in EXERCISES:
        ids = [f.id for f in faults.faults_for(ex)]
        assert {"fast_eccentric", "uneven_tempo"} <= set(ids)
        assert len(ids) == 4
    assert [f.id for f in faults.faults_for("squat")] == [
        "shallow_depth", "incomplete_lockout", "fast_eccentric", "uneven_tempo"]


def test_phrase_lookup_both_ways():
    for fid, fault in faults.FAULTS.items():
        assert faults.fault_from_phrase(faults.phrase_for(fid)) == fid
        assert faults.fault_from_phrase("  " + fault.phrase.upper().replace(" ", "-") + "!") == fid
    assert faults.fault_from_phrase("good depth") is None
    with pytest.raises(KeyError):
        faults.phrase_for("bad_knees")


def test_faults_from_text_is_robust_and_exercise_filtered():
    text = "Watch the SHALLOW-DEPTH, and the rushed   descent!"
    assert faults.faults_from_text(text) == ["shallow_depth", "fast_eccentric"]
    assert faults.faults_from_text(text, "pushup") == ["fast_eccentric"]
    assert faults.faults_from_text("Great depth and full lockout.") == []


def test_reps_from_text():
    assert faults.reps_from_text("You did 8 reps at 2.5 s per rep.") == 8
    assert faults.reps_from_text("Twelve reps, nice.") == 12
    assert faults.reps_from_text("1 rep of squats") == 1
    assert faults.reps_from_text("About 2.5 seconds per rep.") is None
    assert faults.reps_from_text("no count here") is None


@pytest.mark.parametrize("exercise", EXERCISES)
def test_compose_feedback_round_trip_every_fault_subset(exercise):
    ids = [f.id for f in faults.faults_for(exercise)]
    all_phrases = [_norm(f.phrase) for f in faults.FAULTS.values()]
    rng = np.random.default_rng(0)
    texts = set()
    for k in range(len(ids) + 1):
        for subset in itertools.combinations(ids, k):
            for _ in range(40):
                reps = int(rng.integers(1, 16))
                tempo = float(rng.uniform(0.8, 6.0))
                text = faults.compose_feedback(exercise, reps, list(subset)[::-1], tempo, rng)
                texts.add(text)
                assert faults.faults_from_text(text) == list(subset), text
                assert faults.faults_from_text(text, exercise) == list(subset), text
                assert faults.reps_from_text(text) == reps, text
                assert f"{reps} rep" in text
                assert f"{tempo:.1f}" in text
                assert faults.MIN_WORDS <= len(text.split()) <= faults.MAX_WORDS, text
                assert 1 <= len(re.findall(r"[.!?](?:\s|$)", text)) <= 4, text
                for phrase in all_phrases:
                    assert " no" + phrase not in _norm(text)
    assert len(texts) > 300  # the phrasing varies


def test_compose_feedback_rejects_foreign_faults():
    with pytest.raises(ValueError, match="pushup_hip_sag"):
        faults.compose_feedback("squat", 5, ["pushup_hip_sag"], 2.0, np.random.default_rng(0))


def _rep(depth=85.0, lockout=175.0, descent=1.2, duration=3.0, **extra):
    return Rep(start=0, bottom=1, top=2, end=3, depth=depth, lockout=lockout,
               rom=lockout - depth, descent_sec=descent, ascent_sec=1.0, bottom_pause_sec=0.0,
               top_pause_sec=0.0, duration_sec=duration, complete=True, extra=extra)


def _analysis(exercise, reps):
    return RepAnalysis(exercise, 30.0, reps, [], "bottom", 3.0, 100)


def test_detect_faults_half_rule_and_tempo():
    clean = [_rep() for _ in range(4)]
    assert faults.detect_faults(_analysis("squat", clean)) == []
    half = [_rep(depth=120.0), _rep(depth=120.0), _rep(), _rep()]
    assert faults.detect_faults(_analysis("squat", half)) == ["shallow_depth"]
    minority = [_rep(depth=120.0), _rep(), _rep(), _rep()]
    assert faults.detect_faults(_analysis("squat", minority)) == []
    uneven = [_rep(duration=d) for d in (1.0, 3.0, 1.2, 3.5)]
    assert faults.detect_faults(_analysis("squat", uneven)) == ["uneven_tempo"]
    fast = [_rep(descent=0.4, lockout=150.0) for _ in range(3)]
    assert faults.detect_faults(_analysis("squat", fast)) == ["incomplete_lockout", "fast_eccentric"]
    sag = [_rep(depth=0.3, lockout=1.1, min_hip_angle=145.0) for _ in range(2)]
    assert faults.detect_faults(_analysis("pushup", sag)) == ["pushup_hip_sag"]
    early = [_rep(depth=80.0, lockout=150.0, hip_progress_at_knee_lockout=0.05)]
    assert faults.detect_faults(_analysis("deadlift", early)) == [
        "deadlift_incomplete_lockout", "deadlift_hips_rise_early"]
    press = [_rep(depth=0.5, lockout=1.1)]
    assert faults.detect_faults(_analysis("press", press)) == ["press_incomplete_lowering"]
    assert faults.detect_faults(_analysis("press", [])) == []
