"""A clip's measurement: its reps, tempo and fault verdicts, and whether it has anything to coach.

    m = measure(clip)
    if m.nothing_to_coach: ...          # why no feedback can be written for this clip
    m.reps, m.tempo_sec, m.faults       # what a feedback text may state about the set
    m.ground(text)                      # a generated text with those facts set (`data/text.py`)

One measurement serves every part that speaks about a clip: the model's inputs (its rep and
fault channels), the grounding of generated text, the checks, the report's tables and the
evaluation. A clip has nothing to coach when no rep can be measured in it: too few frames, no
movement, no complete excursion, or its primary signal measured in fewer than
`MIN_COVERAGE` of its frames (keypoints missing or unconfident; interpolating across the gaps
would invent the motion the feedback is about).
"""

from __future__ import annotations

import dataclasses

from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.data import waves as waves_lib
from wavepose_jax.data.clip import Clip
from wavepose_jax.data.schema import ClipError

MIN_COVERAGE = 0.5  # least share of frames in which the primary signal must be measured


class NothingToCoach(ClipError):
    """A valid clip in which no rep can be measured: it gets a reason, never feedback."""

    def __init__(self, source: str, field: str, reason: str):
        super().__init__(source, field, f"nothing to coach: {reason}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What the wave analysis and the fault rules measure on one clip."""

    analysis: waves_lib.RepAnalysis
    verdicts: dict[str, faults_lib.FaultVerdict]  # every fault of the exercise (`faults.verdicts`)
    nothing_to_coach: str | None = None  # why no feedback can be written; None: coach it
    signal: str = ""  # the primary signal the reps were counted on

    @property
    def exercise(self) -> str:
        return self.analysis.exercise

    @property
    def reps(self) -> int:
        """Number of reps measured."""
        return len(self.analysis.reps)

    @property
    def tempo_sec(self) -> float | None:
        """Seconds per rep (`RepAnalysis.tempo_sec`), the figure a text states."""
        return self.analysis.tempo_sec

    @property
    def faults(self) -> list[str]:
        """Faults the set has by the rules (`faults.SET_RULE`), in vocabulary order."""
        return [f for f, v in self.verdicts.items() if v.present]

    @property
    def fault_reps(self) -> dict[str, tuple[int, ...]]:
        """Fault id -> the numbers (from 1) of the reps that break its rule."""
        return {f: v.reps for f, v in self.verdicts.items()}

    @classmethod
    def of(cls, analysis: waves_lib.RepAnalysis, nothing_to_coach: str | None = None
           ) -> Measurement:
        """The measurement of a rep analysis (`nothing_to_coach` defaults to why it has no
        reps, when it has none)."""
        if nothing_to_coach is None and not analysis.reps:
            nothing_to_coach = analysis.no_reps or "no rep was found"
        return cls(analysis, faults_lib.verdicts(analysis), nothing_to_coach,
                   waves_lib.PRIMARY_SIGNAL[analysis.exercise])

    def ground(self, text: str) -> text_lib.Grounded:
        """`text` stating only these measured facts (`text.ground_feedback`)."""
        return text_lib.ground_feedback(text, self.exercise, self.reps, self.tempo_sec,
                                        self.fault_reps)

    def check_coachable(self, source: str) -> None:
        """Raises `NothingToCoach` (naming `source` and the signal) when there is nothing to
        coach."""
        if self.nothing_to_coach:
            raise NothingToCoach(source, self.signal, self.nothing_to_coach)


def measure(clip: Clip, analysis: waves_lib.RepAnalysis | None = None) -> Measurement:
    """The measurement of a clip (`analysis`: its `waves.analyze_reps`, when already made)."""
    analysis = analysis or waves_lib.analyze_reps(clip.signals, clip.fps, clip.exercise)
    signal = waves_lib.PRIMARY_SIGNAL[analysis.exercise]
    label = waves_lib.PRIMARY_LABEL[analysis.exercise]
    coverage = clip.coverage.get(signal, 1.0)
    if coverage >= MIN_COVERAGE:
        return Measurement.of(analysis)
    if not clip.present.get(signal, True):
        return Measurement.of(analysis, f"the clip has no {label} to count {analysis.exercise} "
                                        f"reps on (no '{signal}', nor keypoints that show it)")
    gaps = ("its keypoints are missing or unconfident in the others"
            if clip.keypoints is not None else "it is null in the others")
    return Measurement.of(analysis, f"the {label} is measured in only {coverage:.0%} of the "
                                    f"frames ({gaps}); counting reps needs at least "
                                    f"{MIN_COVERAGE:.0%}")
