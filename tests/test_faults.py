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


def test_rep_list_names_the_shorter_side():
    assert faults.rep_list([True, True, True]) == ""
    assert faults.rep_list([False, True, False, False]) == " on rep 2"
    assert faults.rep_list([False, True, True, False, False]) == " on reps 2 and 3"
    assert faults.rep_list([True, True, False, True, True]) == " on every rep but rep 3"
    assert faults.rep_list([True, False] * 3 + [True]) == " on every rep but reps 2, 4 and 6"


@pytest.mark.parametrize("exercise", EXERCISES)
def test_compose_feedback_says_which_reps_and_reads_back(exercise):
    per_rep = [f.id for f in faults.faults_for(exercise) if f.id in faults.PER_REP_FAULTS]
    rng = np.random.default_rng(1)
    with_lists = 0
    for _ in range(150):
        n = int(rng.integers(1, 16))
        clip = [f for f in faults.faults_for(exercise) if rng.random() < 0.4]
        clip = [f.id for f in clip if n >= 3 or f.id != "uneven_tempo"]
        hit = {f: rng.random(n) < rng.uniform(0.5, 1.0) for f in clip if f in per_rep}
        for f, mask in hit.items():
            mask[int(rng.integers(n))] = True  # a clip fault hits at least one rep
        minority = [f for f in per_rep if f not in clip]
        rep_faults = [[f for f in per_rep if (f in hit and hit[f][i]) or
                       (f in minority and rng.random() < 0.1)] for i in range(n)]
        text = faults.compose_feedback(exercise, n, clip[::-1], 2.0, rng, rep_faults=rep_faults)
        with_lists += " on rep" in text or " on every rep but" in text
        assert faults.faults_from_text(text) == clip, text
        assert faults.reps_from_text(text) == n, text
        assert faults.MIN_WORDS <= len(text.split()) <= faults.MAX_WORDS, text
        named = faults.rep_faults_from_text(text, n, exercise)
        assert len(named) == n
        for said, truth in zip(named, rep_faults):
            # Per rep the text names exactly the clip's faults that rep showed.
            assert set(said) & faults.PER_REP_FAULTS == set(truth) & set(clip), (text, rep_faults)
            assert ("uneven_tempo" in said) == ("uneven_tempo" in clip)
    assert with_lists > 30
    with pytest.raises(ValueError, match="3 entries for 4 reps"):
        faults.compose_feedback(exercise, 4, [], 2.0, rng, rep_faults=[[], [], []])


def test_rep_faults_from_text_reads_model_like_text():
    text = ("I counted 5 reps. Watch for shallow depth on reps 2 and 4, incomplete lockout on "
            "every rep but rep 1 and rushed descent. Also rep 9 was odd.")
    assert faults.rep_faults_from_text(text, 5, "squat") == [
        ["fast_eccentric"], ["shallow_depth", "incomplete_lockout", "fast_eccentric"],
        ["incomplete_lockout", "fast_eccentric"],
        ["shallow_depth", "incomplete_lockout", "fast_eccentric"],
        ["incomplete_lockout", "fast_eccentric"]]
    assert faults.rep_faults_from_text("shallow depth on reps 7 and 8", 3) == [[], [], []]
    assert faults.rep_faults_from_text("Nice set.", 2) == [[], []]


def test_per_rep_faults_and_wave_features_carry_the_rules_per_rep():
    reps = [_rep(depth=120.0), _rep(), _rep(depth=125.0, descent=0.3)]
    assert faults.per_rep_faults(_analysis("squat", reps)) == [
        ["shallow_depth"], [], ["shallow_depth", "fast_eccentric"]]
    t = np.arange(300) / 30.0
    knee = 130.0 + 45.0 * np.cos(2 * np.pi * t / 2.5)
    signals = {name: np.zeros_like(t) for name in ("trajectory", "legs_trajectory",
               "shoulder_trajectory", "back_trajectory", "arm_Trajectory", "core_")}
    signals["knee_angle_trajectory"] = knee
    features = faults.wave_features(signals, 30.0, "squat")
    assert len(features["rep_faults"]) == features["harmonic"]["oscillation_count"] >= 3
    assert all(r == [] for r in features["rep_faults"])  # 85 deg deep, 175 deg lockout
