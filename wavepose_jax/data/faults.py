"""Fault vocabulary and rules: measurable technique faults, their phrases, and the verdicts.

Every fault is a rule on the measurements of `waves.analyze_reps` (side view, 7 signals) and has
one canonical phrase (`phrase_for`), which coaching text names it by (`data/text.py` reads and
writes the phrases). A per-rep rule is judged on every rep (`rep_faults`); `uneven_tempo` is
judged on the set.

When a set has a fault (`SET_RULE`, the one definition every part of the project uses: the
coaching text, the checks, the report's fault table and its rep-by-rep table): a per-rep fault
when at least half of the set's complete reps break its rule (all its reps when none is
complete); `uneven_tempo` when the durations of those reps vary by more than `MAX_TEMPO_CV`
(at least 3 reps). `verdicts` gives, per fault, the reps that break the rule and whether the
set has the fault; `detect_faults` lists the set's faults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from wavepose_jax.data.features import WaveFeatures, compute_wave_features
from wavepose_jax.data.schema import EXERCISES, canonical_exercise
from wavepose_jax.data.waves import Rep, RepAnalysis, analyze_reps

ANY_EXERCISE = "any"

# Rule thresholds (the generator places clean and faulty reps clear of them).
SQUAT_MAX_DEPTH_DEG = 110.0        # shallow when the min knee angle is above this
SQUAT_MIN_LOCKOUT_DEG = 160.0      # incomplete when the max knee angle is below this
PUSHUP_MAX_DEPTH = 0.5             # partial when the shoulders stay this high above the hands
PUSHUP_MIN_HIP_DEG = 160.0         # sagging when the hip angle drops below this
DEADLIFT_MIN_LOCKOUT_DEG = 160.0   # unfinished when the max hip angle is below this
DEADLIFT_MIN_HIP_PROGRESS = 0.35   # hips early when the hip angle lags the knees this much
PRESS_MIN_LOCKOUT = 0.8            # soft when the hands end below this height over the shoulders
PRESS_MAX_DEPTH = 0.35             # incomplete when the hands stay this high over the shoulders
MIN_DESCENT_SEC = 0.6              # rushed when the eccentric is shorter
MAX_TEMPO_CV = 0.25                # uneven when rep durations vary more (>= 3 reps)


@dataclasses.dataclass(frozen=True)
class Fault:
    """A technique fault: id, the exercise it applies to ("any" = all), phrase and rule."""

    id: str
    exercise: str
    phrase: str
    definition: str


FAULTS: dict[str, Fault] = {f.id: f for f in (
    Fault("shallow_depth", "squat", "shallow depth",
          f"rep's minimum knee angle > {SQUAT_MAX_DEPTH_DEG:g} deg (good reps reach <= 95 deg)"),
    Fault("incomplete_lockout", "squat", "incomplete lockout",
          f"maximum knee angle after the rep < {SQUAT_MIN_LOCKOUT_DEG:g} deg"),
    Fault("pushup_partial_range", "pushup", "partial range",
          f"shoulders stay > {PUSHUP_MAX_DEPTH:g} torso units above the hands at the bottom"),
    Fault("pushup_hip_sag", "pushup", "sagging hips",
          f"hip angle (shoulder-hip-knee) < {PUSHUP_MIN_HIP_DEG:g} deg during the rep"),
    Fault("deadlift_incomplete_lockout", "deadlift", "unfinished hip lockout",
          f"maximum hip angle after the rep < {DEADLIFT_MIN_LOCKOUT_DEG:g} deg"),
    Fault("deadlift_hips_rise_early", "deadlift", "hips rising early",
          "on the way up the hip angle has opened < "
          f"{DEADLIFT_MIN_HIP_PROGRESS:.0%} of its range when the knees are 80% extended"),
    Fault("press_incomplete_lockout", "press", "soft overhead lockout",
          f"hands end < {PRESS_MIN_LOCKOUT:g} torso units above the shoulders at the top"),
    Fault("press_incomplete_lowering", "press", "incomplete lowering",
          f"hands stay > {PRESS_MAX_DEPTH:g} torso units above the shoulders between reps"),
    Fault("fast_eccentric", ANY_EXERCISE, "rushed descent",
          f"the eccentric (top band to bottom band) lasts < {MIN_DESCENT_SEC:g} s"),
    Fault("uneven_tempo", ANY_EXERCISE, "uneven tempo",
          f"coefficient of variation of rep durations > {MAX_TEMPO_CV:g} (>= 3 reps)"),
)}

_PER_REP_RULES: dict[str, Callable[[Rep], bool]] = {
    "shallow_depth": lambda r: r.depth > SQUAT_MAX_DEPTH_DEG,
    "incomplete_lockout": lambda r: r.lockout < SQUAT_MIN_LOCKOUT_DEG,
    "pushup_partial_range": lambda r: r.depth > PUSHUP_MAX_DEPTH,
    "pushup_hip_sag": lambda r: r.extra.get("min_hip_angle", 180.0) < PUSHUP_MIN_HIP_DEG,
    "deadlift_incomplete_lockout": lambda r: r.lockout < DEADLIFT_MIN_LOCKOUT_DEG,
    "deadlift_hips_rise_early": (
        lambda r: r.extra.get("hip_progress_at_knee_lockout", 1.0) < DEADLIFT_MIN_HIP_PROGRESS),
    "press_incomplete_lockout": lambda r: r.lockout < PRESS_MIN_LOCKOUT,
    "press_incomplete_lowering": lambda r: r.depth > PRESS_MAX_DEPTH,
    "fast_eccentric": lambda r: r.descent_sec < MIN_DESCENT_SEC,
}


# Faults judged rep by rep (every fault but the clip-level `uneven_tempo`).
PER_REP_FAULTS: frozenset[str] = frozenset(_PER_REP_RULES)


def exercise_id(exercise: str) -> str:
    """The canonical id of an exercise name or alias; ValueError for an unknown one."""
    ex = canonical_exercise(exercise)
    if ex is None:
        raise ValueError(f"unknown exercise {exercise!r}; expected one of {EXERCISES}")
    return ex


def faults_for(exercise: str) -> list[Fault]:
    """The faults that apply to an exercise, in vocabulary order."""
    ex = exercise_id(exercise)
    return [f for f in FAULTS.values() if f.exercise in (ex, ANY_EXERCISE)]


def rep_faults(rep: Rep, exercise: str) -> list[str]:
    """Ids of the per-rep rules this rep breaks."""
    return [f.id for f in faults_for(exercise)
                    if f.id in _PER_REP_RULES and _PER_REP_RULES[f.id](rep)]


def per_rep_faults(analysis: RepAnalysis) -> list[list[str]]:
    """The per-rep rules each rep of the analysis breaks: one list of fault ids per rep."""
    return [rep_faults(r, analysis.exercise) for r in analysis.reps]


def wave_features(signals: dict[str, np.ndarray], fps: float, exercise: str, *,
                  analysis: RepAnalysis | None = None) -> WaveFeatures:
    """`features.compute_wave_features` plus `rep_faults`: the rules' verdict on every rep."""
    analysis = analysis or analyze_reps(signals, fps, exercise)
    features = compute_wave_features(signals, fps, exercise, analysis=analysis)
    return dataclasses.replace(features,
                               rep_faults=tuple(map(tuple, per_rep_faults(analysis))))


SET_RULE = ("a set has a fault when at least half of its complete reps break the rule (all "
            "its reps when none is complete); uneven tempo when those reps' durations vary by "
            f"more than {MAX_TEMPO_CV:.0%} (at least 3 reps)")


@dataclasses.dataclass(frozen=True)
class FaultVerdict:
    """What the rules say about one fault of a set.

    Attributes:
      id: the fault id.
      reps: numbers (from 1, every rep of the analysis) of the reps that break its rule;
        empty for the set-level `uneven_tempo`.
      counted: how many reps the set's verdict counts (`RepAnalysis.counted`: the complete
        reps, or every rep when none is complete).
      hits: how many of the counted reps break the rule.
      present: whether the set has the fault (`SET_RULE`).
    """

    id: str
    reps: tuple[int, ...]
    counted: int
    hits: int
    present: bool

    @property
    def per_rep(self) -> bool:
        """Whether the fault is judged rep by rep (every fault but `uneven_tempo`)."""
        return self.id in PER_REP_FAULTS


def verdicts(analysis: RepAnalysis) -> dict[str, FaultVerdict]:
    """The rules' verdict on every fault of the analysis's exercise, in vocabulary order."""
    counted = analysis.counted
    out = {}
    for fault in faults_for(analysis.exercise):
        rule = _PER_REP_RULES.get(fault.id)
        if rule is not None:
            reps = tuple(i + 1 for i, r in enumerate(analysis.reps) if rule(r))
            hits = sum(bool(rule(r)) for r in counted)
            present = bool(counted) and 2 * hits >= len(counted)
        else:  # uneven_tempo: the set's rep durations
            reps, hits = (), 0
            d = np.array([r.duration_sec for r in counted])
            present = len(counted) >= 3 and d.mean() > 0 and d.std() / d.mean() > MAX_TEMPO_CV
        out[fault.id] = FaultVerdict(fault.id, reps, len(counted), hits, bool(present))
    return out


def detect_faults(analysis: RepAnalysis) -> list[str]:
    """Fault ids the set has by the rules (`SET_RULE`), in vocabulary order."""
    return [f for f, v in verdicts(analysis).items() if v.present]


# The rules' verdicts as per-frame encoder channels (`Clip.model_input(fault_channels=True)`):
# for every fault of the vocabulary, whether the rep a frame belongs to breaks its rule, then
# whether the clip as a whole has it (on every frame).
FAULT_CHANNELS: tuple[str, ...] = (*(f"rep_{f}" for f in FAULTS), *(f"clip_{f}" for f in FAULTS))


def fault_channels(analysis: RepAnalysis) -> np.ndarray:
    """The rules' verdicts on a clip as per-frame channels [T, len(FAULT_CHANNELS)] float32.

    Channel k < len(FAULTS): 1 on the frames (start..end) of every rep that breaks per-rep rule
    k, 0 elsewhere. Channel len(FAULTS) + k: 1 on every frame when `detect_faults` gives the
    clip fault k (a per-rep fault of at least half its reps, or the clip-level uneven tempo).
    They carry measurement through the motion path: what the rules read from the signals, on
    the frames where they read it; the text still has to be learned from them.
    """
    out = np.zeros((analysis.num_frames, len(FAULT_CHANNELS)), np.float32)
    index = {f: k for k, f in enumerate(FAULTS)}
    for rep, ids in zip(analysis.reps, per_rep_faults(analysis)):
        for f in ids:
            out[rep.start:rep.end + 1, index[f]] = 1.0
    for f in detect_faults(analysis):
        out[:, len(FAULTS) + index[f]] = 1.0
    return out


def phrase_for(fault_id: str) -> str:
    """The canonical phrase of a fault id."""
    if fault_id not in FAULTS:
        raise KeyError(f"unknown fault id {fault_id!r}")
    return FAULTS[fault_id].phrase
