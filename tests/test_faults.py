"""Tests of the fault vocabulary, the fault rules and their verdicts."""

import dataclasses
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


def test_per_rep_faults_and_wave_features_carry_the_rules_per_rep():
    reps = [_rep(depth=120.0), _rep(), _rep(depth=125.0, descent=0.3)]
    assert faults.per_rep_faults(_analysis("squat", reps)) == [
        ["shallow_depth"], [], ["shallow_depth", "fast_eccentric"]]
    t = np.arange(300) / 30.0
    knee = 130.0 + 45.0 * np.cos(2 * np.pi * t / 2.5)
    signals = {name: np.zeros_like(t) for name in ("trajectory", "legs_trajectory",
               "shoulder_trajectory", "back_trajectory", "arm_Trajectory", "core_")}
    signals["knee_angle_trajectory"] = knee
    features = faults.wave_features(signals, 30.0, "squat").to_json()
    assert len(features["rep_faults"]) == features["harmonic"]["oscillation_count"] >= 3
    assert all(r == [] for r in features["rep_faults"])  # 85 deg deep, 175 deg lockout



def test_verdicts_state_the_reps_and_the_set_rule_detect_faults_uses():
    reps = [_rep(depth=120.0), _rep(), _rep(depth=125.0, descent=0.3), _rep()]
    reps.append(dataclasses.replace(_rep(depth=130.0, descent=0.2), complete=False))
    verdicts = faults.verdicts(_analysis("squat", reps))
    assert list(verdicts) == [f.id for f in faults.faults_for("squat")]
    shallow, fast = verdicts["shallow_depth"], verdicts["fast_eccentric"]
    # Every rep is listed; only the complete ones count for the set.
    assert shallow.reps == (1, 3, 5) and (shallow.hits, shallow.counted) == (2, 4)
    assert shallow.present and shallow.per_rep  # 2 of 4 complete reps: half
    assert fast.reps == (3, 5) and (fast.hits, fast.counted) == (1, 4) and not fast.present
    assert verdicts["uneven_tempo"].reps == () and not verdicts["uneven_tempo"].per_rep
    assert faults.detect_faults(_analysis("squat", reps)) == [
        f for f, v in verdicts.items() if v.present] == ["shallow_depth"]
    assert "at least half of its complete reps" in faults.SET_RULE
    assert faults.verdicts(_analysis("squat", []))["shallow_depth"] == faults.FaultVerdict(
        "shallow_depth", (), 0, 0, False)
