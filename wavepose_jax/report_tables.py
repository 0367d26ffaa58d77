"""The report's tables: what each clip's section lists, as plain values for the template.

The key measure of each exercise and how it is written (`MEASURES`: degrees or torso lengths),
the best and the worst rep (`pick_reps`), the per-rep table (`rep_rows`), the set summary in
plain units (`summary_rows`), the faults with the reps that break each rule (`fault_rows`), the
rules in a coach's words (`plain_rule`), what the grade letters mean, and where in the reps the
bridge's event tokens attend (`attention_by_phase`). Nothing here draws or renders: the figures
are `report_figures.py`, the page `report.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.clip import Clip
from wavepose_jax.data.measure import Measurement
from wavepose_jax.data.schema import SIGNAL_NAMES
from wavepose_jax.data.waves import TORSO_M, RepAnalysis
from wavepose_jax.prompt import PhysicsSummary

PHASE_COLORS: dict[str, str] = {"descent": "#4c72b0", "bottom": "#dd8452",
                                "ascent": "#55a868", "lockout": "#c44e52"}
PHASE_LABELS: dict[str, str] = {"descent": "lowering", "bottom": "bottom",
                                "ascent": "lifting", "lockout": "top"}
OUTSIDE = "outside reps"  # attention-share column for frames outside every phase
TORSO_CM = 100 * TORSO_M  # nominal adult shoulder-to-hip length behind the cm figures
# features.compute_wave_features: grade letter -> lowest overall score (0-100) that earns it.
GRADE_FLOORS: tuple[tuple[str, int], ...] = (("A", 85), ("B", 70), ("C", 55), ("D", 40),
                                             ("F", 0))

@dataclasses.dataclass(frozen=True)
class Measure:
    """How an exercise's key measure (`waves.key_measure`) is named and shown."""

    name: str        # what is measured, e.g. "knee angle"
    unit: str        # "°" or "torso"
    thresholds: tuple[tuple[float, str], ...]  # rule lines: (value, label)

    def format(self, value: float) -> str:
        """The value with its unit: "118°", or "0.62 torso (≈31 cm)"."""
        if self.unit == "°":
            return f"{value:.0f}°"
        return f"{value:.2f} torso (≈{value * TORSO_CM:.0f} cm)"


MEASURES: dict[str, Measure] = {
    "squat": Measure("knee angle", "°", (
        (faults_lib.SQUAT_MAX_DEPTH_DEG, "depth limit"),
        (faults_lib.SQUAT_MIN_LOCKOUT_DEG, "lockout"))),
    "deadlift": Measure("hip angle", "°", ((faults_lib.DEADLIFT_MIN_LOCKOUT_DEG, "lockout"),)),
    "pushup": Measure("shoulder height above the hands", "torso", (
        (faults_lib.PUSHUP_MAX_DEPTH, "depth limit"),)),
    "press": Measure("hand height above the shoulders", "torso", (
        (faults_lib.PRESS_MAX_DEPTH, "lowering limit"),
        (faults_lib.PRESS_MIN_LOCKOUT, "lockout"))),
}
# Exercise-specific per-rep measures (`Rep.extra`) shown as extra columns: key -> (header, fmt).
EXTRA_COLUMNS: dict[str, dict[str, tuple[str, str]]] = {
    "pushup": {"min_hip_angle": ("lowest hip angle", "{:.0f}°")},
    "deadlift": {"hip_progress_at_knee_lockout": ("hip opening when knees are 80% straight",
                                                  "{:.0%}")},
}


# ----------------------------------------------------------------------------- per rep


@dataclasses.dataclass(frozen=True)
class Picked:
    """The two reps the report singles out, and what to call them.

    When some rep breaks a per-rep rule they are the best and the worst rep (`faulty`); when
    none does, calling one "worst" would mislead, so they are the reps with the largest and the
    smallest range of motion.
    """

    best: int | None
    worst: int | None
    faulty: bool

    @property
    def best_label(self) -> str:
        return "best rep" if self.faulty else "largest range"

    @property
    def worst_label(self) -> str:
        return "worst rep" if self.faulty else "smallest range"


def pick_reps(analysis: RepAnalysis) -> Picked:
    """The best and the worst rep (both None with fewer than two reps or no difference).

    Worst: the most faults by the per-rep rules, then the smallest range of motion (lockout -
    depth); best: the fewest faults, then the largest range. Ties go to the earlier rep.
    """
    reps = analysis.reps
    counts = [len(faults_lib.rep_faults(r, analysis.exercise)) for r in reps]
    faulty = any(counts)
    if len(reps) < 2:
        return Picked(None, None, faulty)
    keys = [(n, -r.rom) for n, r in zip(counts, reps)]
    worst = max(range(len(reps)), key=lambda i: (keys[i], -i))
    best = min(range(len(reps)), key=lambda i: (keys[i], i))
    return Picked(best, worst, faulty) if best != worst else Picked(None, None, faulty)


@dataclasses.dataclass(frozen=True)
class RepRow:
    """One rep as the per-rep table shows it."""

    number: int
    depth: str
    top: str
    descent: str
    ascent: str
    duration: str
    extra: tuple[str, ...]
    faults: tuple[str, ...]   # phrases of the per-rep rules this rep breaks
    complete: bool
    mark: str                 # "", or the `Picked` label of this rep
    css: str                  # "", "best", "worst" (a faulty worst rep) or "smallest"


def rep_rows(analysis: RepAnalysis) -> list[RepRow]:
    """The per-rep table of a clip (`MEASURES`, `EXTRA_COLUMNS`, `faults.rep_faults`)."""
    measure = MEASURES[analysis.exercise]
    extras = EXTRA_COLUMNS.get(analysis.exercise, {})
    picked = pick_reps(analysis)
    rows = []
    for i, rep in enumerate(analysis.reps):
        extra = tuple(fmt.format(rep.extra[key]) if key in rep.extra else "–"
                      for key, (_, fmt) in extras.items())
        mark, css = "", ""
        if i == picked.worst:
            mark, css = picked.worst_label, "worst" if picked.faulty else "smallest"
        elif i == picked.best:
            mark, css = picked.best_label, "best"
        rows.append(RepRow(
            number=i + 1, depth=measure.format(rep.depth), top=measure.format(rep.lockout),
            descent=f"{rep.descent_sec:.1f}", ascent=f"{rep.ascent_sec:.1f}",
            duration=f"{rep.duration_sec:.1f}", extra=extra,
            faults=tuple(faults_lib.phrase_for(f)
                         for f in faults_lib.rep_faults(rep, analysis.exercise)),
            complete=rep.complete, mark=mark, css=css))
    return rows


# ----------------------------------------------------------------------------- tables


def phase_of_frames(analysis: RepAnalysis) -> list[str]:
    """Phase name of every clip frame (`OUTSIDE` where no phase covers it); later spans win."""
    names = [OUTSIDE] * analysis.num_frames
    for kind, start, end in analysis.phases:
        for i in range(max(start, 0), min(end, analysis.num_frames - 1) + 1):
            names[i] = kind
    return names


class PhaseShares(NamedTuple):
    """Each event token's attention share per phase (`attention_by_phase`)."""

    phases: list[str]    # phase names, the columns of `shares` (`OUTSIDE` for no phase)
    shares: np.ndarray   # [Q, phases]: each token's attention summed over the phase's frames


def attention_by_phase(attention: np.ndarray, fps: float, analysis: RepAnalysis
                       ) -> PhaseShares:
    """Each token's attention share per phase: (phase names, [Q, phases] shares).

    A model frame j (time j / fps) counts for the clip frame nearest that time.
    """
    frame_phase = phase_of_frames(analysis)
    kinds = [k for k in PHASE_COLORS if k in frame_phase] + [
        k for k in dict.fromkeys(frame_phase) if k not in PHASE_COLORS]
    src = np.clip(np.rint(np.arange(attention.shape[1]) / fps * analysis.fps).astype(int),
                  0, analysis.num_frames - 1)  # [T'] clip frame of each model frame
    column = np.array([kinds.index(frame_phase[i]) for i in src])  # [T']
    shares = np.zeros((attention.shape[0], len(kinds)))
    for k in range(len(kinds)):
        shares[:, k] = attention[:, column == k].sum(axis=1)
    return PhaseShares(kinds, shares)


def grade_meaning() -> str:
    """What the grade letters mean, from `GRADE_FLOORS`."""
    parts, upper = [], None
    for letter, floor in GRADE_FLOORS:
        if floor == 0:
            parts.append(f"{letter} below {upper}")
        elif upper is None:
            parts.append(f"{letter} {floor} or more")
        else:
            parts.append(f"{letter} {floor}-{upper - 1}")
        upper = floor
    return ", ".join(parts)


def reps_per_minute(analysis: RepAnalysis) -> float | None:
    """Reps per minute, rest included: from the mean start-to-start time of the reps (the
    duration of the only rep); None without reps."""
    reps = analysis.reps
    if len(reps) >= 2:
        cycle = (reps[-1].start - reps[0].start) / (len(reps) - 1) / analysis.fps
    else:
        cycle = reps[0].duration_sec if reps else 0.0
    return 60.0 / cycle if cycle > 0 else None


# Rules whose definition in faults.py is in the analysis' terms, said the way a coach says them.
PLAIN_RULES: dict[str, str] = {
    "fast_eccentric": f"the way down takes less than {faults_lib.MIN_DESCENT_SEC:g} s",
    "uneven_tempo": f"rep times vary by more than {faults_lib.MAX_TEMPO_CV:.0%} of their mean "
                    "(sets of 3 or more reps)",
}


def plain_rule(fault_id: str) -> str:
    """A fault's rule in the report's words and units (degrees sign, torso lengths)."""
    text = PLAIN_RULES.get(fault_id, faults_lib.FAULTS[fault_id].definition)
    return text.replace(" deg", "°").replace("torso units", "torso lengths")


def _score(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f}"


def summary_rows(clip: Clip, measurement: Measurement, summary: PhysicsSummary
                 ) -> list[tuple[str, str]]:
    """(label, value) rows of the set summary, in plain units."""
    s, analysis = summary, measurement.analysis
    tempo = measurement.tempo_sec
    pace = reps_per_minute(analysis)
    quality = clip.wave_features.quality
    efficiency = float(quality.efficiency) if quality and quality.efficiency is not None else None
    rows = [
        ("Reps measured", str(len(analysis.reps))),
        ("Tempo", "unknown" if tempo is None else f"{tempo:.1f} s per rep (rest excluded)"),
        ("Pace", "unknown" if pace is None else
         f"{pace:.0f} reps per minute (one rep every {60 / pace:.1f} s, rest included)"),
        ("Quality grade", f"{s.grade} (overall score {_score(s.overall)} of 100)"),
        ("Scores (out of 100)", ", ".join(
            f"{name} {_score(v)}" for name, v in (("smoothness", s.smoothness),
                                                  ("control", s.control),
                                                  ("consistency", s.consistency),
                                                  ("efficiency", efficiency)))),
        ("Phases (mean duration)", ", ".join(
            f"{PHASE_LABELS.get(k, k)} {d:.1f} s" for k, d in s.phases) or "none"),
    ]
    if s.expert is not None:
        rows.append(("Lifter level", "expert" if s.expert else "non-expert"))
    channels = sum(clip.present.values())
    rows.append(("Clip", f"{clip.n_frames / clip.fps:.1f} s ({clip.n_frames} frames at "
                         f"{clip.fps:g} fps), {channels} of {len(SIGNAL_NAMES)} body signals"
                         + (", from keypoints" if clip.keypoints is not None else "")))
    return rows


def _rep_words(verdict: faults_lib.FaultVerdict, total: int) -> str:
    """Which reps break a per-rep rule, in words: "reps 3 and 4 (2 of 5 complete reps)"."""
    if not verdict.per_rep:
        return "the set's rep times"
    if not verdict.reps:
        return "none"
    listed = text_lib.rep_list([i + 1 in verdict.reps for i in range(total)]).strip()
    return (f"{listed.removeprefix('on ') or 'every rep'} ({verdict.hits} of {verdict.counted} "
            f"{'complete ' if verdict.counted < total else ''}rep{'s' * (verdict.counted != 1)})")


@dataclasses.dataclass(frozen=True)
class FaultRow:
    """One fault as the faults table shows it."""

    phrase: str      # the fault's phrase
    id: str          # its id in `faults.FAULTS`
    said: bool       # the feedback names it
    reps: str        # the reps that break its rule, in words
    measured: bool   # the set has it (`faults.SET_RULE`)
    rule: str        # its rule in plain words (`plain_rule`)
    agree: bool      # the feedback names it exactly when the set has it


def fault_rows(measurement: Measurement, named: Iterable[str]) -> list[FaultRow]:
    """Faults named in the feedback (`named`), of the set, or broken by some rep: phrase,
    whether the feedback names it, the reps that break its rule, whether the set has it
    (`SET_RULE`)."""
    said = set(named)
    rows = []
    for f, verdict in measurement.verdicts.items():
        if f in said or verdict.present or verdict.reps:
            rows.append(FaultRow(phrase=faults_lib.FAULTS[f].phrase, id=f, said=f in said,
                                 reps=_rep_words(verdict, measurement.reps),
                                 measured=verdict.present, rule=plain_rule(f),
                                 agree=(f in said) == verdict.present))
    return rows
