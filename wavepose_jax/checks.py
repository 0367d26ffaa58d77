"""Checks of a coaching text against the clip it describes.

`check_feedback(text, analysis)` compares what a feedback text states with what the wave
analysis (`waves.analyze_reps`) and the fault rules (`faults.py`) measure on the same clip.
It is the one definition of "the text agrees with the clip": infer's `--json` lines carry it
(`checks`), the report shows its warnings at the top of each clip's section, and evaluation
scores it (`evaluate.check_metrics`).

The checks, each `ok`, `warn` or `skip` (nothing to compare):

* `rep_count`: the rep count the text states (`faults.reps_from_text`) equals the number of
  reps measured. A text that states no count is a warning (the prompt asks for it); a clip
  with no measured reps is skipped.
* `tempo`: the seconds per rep the text states (`tempo_from_text`: "2.1 seconds per rep",
  "2.1 s each", "each taking around 2.1 seconds") is within `TEMPO_TOLERANCE_SEC` or
  `TEMPO_TOLERANCE_FRAC` of the measured tempo, whichever is larger. The measured tempo is the
  mean duration of the complete reps (of all reps when none is complete), the figure the
  reference texts state. A text that states no tempo is skipped.
* `faults_not_measured`: every fault the text names (`faults.faults_from_text`) is one the
  rules find in the clip (`faults.detect_faults`).
* `faults_not_named`: every fault the rules find is named in the text.
* `fault_reps`: for each fault that is both named and measured, the reps the text names it
  for (`faults.rep_faults_from_text`; a phrase without a rep list means every rep) are the
  reps that break its rule (`faults.rep_faults`). Clip-level faults (`uneven_tempo`) and
  clips with fewer than two reps are skipped.

A text passes when no check warns (`Checks.passed`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data.waves import RepAnalysis

TEMPO_TOLERANCE_SEC = 0.25   # stated tempo may differ from the measured by this much ...
TEMPO_TOLERANCE_FRAC = 0.10  # ... or by this fraction of it, whichever is larger
CHECK_NAMES = ("rep_count", "tempo", "faults_not_measured", "faults_not_named", "fault_reps")
OK, WARN, SKIP = "ok", "warn", "skip"

_NUMBER = r"(\d+(?:\.\d+)?)"
_SECONDS = r"\s*(?:s|secs?|seconds?)\b"
_TEMPO_RES = (
    # "2.1 seconds per rep", "2.1 s each", "2.1 s a rep", "2.1 s/rep"
    re.compile(r"(?<![\w.])" + _NUMBER + _SECONDS +
               r"\s*(?:per\s+(?:rep|repetition)\b|each\b|an?\s+rep\b|/\s*rep\b)", re.IGNORECASE),
    # "each taking around 2.1 seconds", "tempo averaged 2.1 s", "tempo of about 2.1 seconds"
    re.compile(r"\b(?:each\s+taking|tempo(?:\s+averaged|\s+of)?)\s+(?:about\s+|around\s+|"
               r"roughly\s+|approximately\s+)?" + _NUMBER + _SECONDS, re.IGNORECASE),
)


def tempo_from_text(text: str) -> float | None:
    """The first tempo (seconds per rep) a text states, or None.

    Understands the phrasings of `faults.compose_feedback` and close variants: "at about 2.5
    seconds per rep", "averaging 3.1 s each", "each taking around 2.5 seconds", "your tempo
    averaged 2.8 s per rep".
    """
    found = [(m.start(), float(m.group(1))) for pattern in _TEMPO_RES
             for m in [pattern.search(text)] if m is not None]
    return min(found)[1] if found else None


def measured_tempo(analysis: RepAnalysis) -> float | None:
    """Mean duration (s) of the complete reps (all reps when none is complete); None: no reps."""
    reps = [r for r in analysis.reps if r.complete] or analysis.reps
    return float(np.mean([r.duration_sec for r in reps])) if reps else None


def tempo_tolerance(measured: float) -> float:
    """How far (s) a stated tempo may be from `measured` and still agree."""
    return max(TEMPO_TOLERANCE_SEC, TEMPO_TOLERANCE_FRAC * measured)


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: its name, status (`ok`, `warn`, `skip`), a sentence a coach can read and a
    few words for a table cell (`short`)."""

    name: str
    status: str
    message: str
    short: str = ""


@dataclasses.dataclass(frozen=True)
class Checks:
    """Every check of one text, plus what was stated and measured."""

    items: tuple[Check, ...]
    stated_reps: int | None
    measured_reps: int
    stated_tempo_sec: float | None
    measured_tempo_sec: float | None
    faults_named: tuple[str, ...]
    faults_measured: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """True when no check warns."""
        return all(c.status != WARN for c in self.items)

    @property
    def warnings(self) -> list[str]:
        """The messages of the checks that warn, in `CHECK_NAMES` order."""
        return [c.message for c in self.items if c.status == WARN]

    @property
    def short_warnings(self) -> list[str]:
        """The short forms of the warnings (e.g. "tempo 2.8 s, measured 2.48 s")."""
        return [c.short or c.message for c in self.items if c.status == WARN]

    def status(self, name: str) -> str:
        """The status of the check called `name`."""
        return next(c.status for c in self.items if c.name == name)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: passed, each check's status and message, stated and measured values."""
        return {"passed": self.passed,
                "checks": {c.name: {"status": c.status, "message": c.message}
                           for c in self.items},
                "stated_reps": self.stated_reps, "measured_reps": self.measured_reps,
                "stated_tempo_sec": self.stated_tempo_sec,
                "measured_tempo_sec": (None if self.measured_tempo_sec is None
                                       else round(self.measured_tempo_sec, 3)),
                "faults_named": list(self.faults_named),
                "faults_measured": list(self.faults_measured)}


def _phrases(ids) -> str:
    return ", ".join(f'"{faults_lib.phrase_for(f)}"' for f in ids)


def _reps(numbers: list[int], total: int) -> str:
    if not numbers:
        return "no rep"
    if len(numbers) == total:
        return "every rep"
    words = [str(n) for n in numbers]
    return ("rep " if len(words) == 1 else "reps ") + (
        words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1])


def _count(n: int) -> str:
    return f"{n} rep" if n == 1 else f"{n} reps"


def _rep_count(stated: int | None, measured: int) -> Check:
    if measured == 0:
        return Check("rep_count", SKIP, "no reps were measured in the clip")
    if stated is None:
        return Check("rep_count", WARN,
                     f"the feedback does not state the rep count ({measured} measured)",
                     "rep count not stated")
    if stated != measured:
        return Check("rep_count", WARN,
                     f"the feedback says {_count(stated)}; {_count(measured)} measured",
                     f"says {_count(stated)}, measured {measured}")
    return Check("rep_count", OK, f"{_count(stated)}, as measured")


def _tempo(stated: float | None, measured: float | None) -> Check:
    if stated is None:
        return Check("tempo", SKIP, "the feedback states no tempo")
    if measured is None:
        return Check("tempo", SKIP, "no reps were measured, so no tempo")
    tolerance = tempo_tolerance(measured)
    if abs(stated - measured) > tolerance:
        return Check("tempo", WARN, f"the feedback says {stated:g} s per rep; {measured:.2f} s "
                                    f"was measured (tolerance {tolerance:.2f} s)",
                     f"tempo {stated:g} s, measured {measured:.2f} s")
    return Check("tempo", OK, f"{stated:g} s per rep, within {tolerance:.2f} s of the "
                              f"measured {measured:.2f} s")


def _fault_reps(text: str, analysis: RepAnalysis, both: list[str]) -> Check:
    reps = analysis.reps
    per_rep = [f for f in both if f in faults_lib.PER_REP_FAULTS]
    if len(reps) < 2 or not per_rep:
        return Check("fault_reps", SKIP, "no per-rep fault both named and measured")
    said = faults_lib.rep_faults_from_text(text, len(reps), analysis.exercise)
    measured = [faults_lib.rep_faults(r, analysis.exercise) for r in reps]
    wrong, short = [], []
    for fault in per_rep:
        told = [i + 1 for i, s in enumerate(said) if fault in s]
        seen = [i + 1 for i, m in enumerate(measured) if fault in m]
        if told != seen:
            wrong.append(f'the feedback names "{faults_lib.phrase_for(fault)}" for '
                         f"{_reps(told, len(reps))}; the rule finds it on "
                         f"{_reps(seen, len(reps))}")
            short.append(f'"{faults_lib.phrase_for(fault)}" said for {_reps(told, len(reps))}, '
                         f"measured on {_reps(seen, len(reps))}")
    if wrong:
        return Check("fault_reps", WARN, "; ".join(wrong), "; ".join(short))
    return Check("fault_reps", OK, "the reps named for each fault are the reps measured")


def check_feedback(text: str, analysis: RepAnalysis) -> Checks:
    """Checks `text` against the clip's measurements (`analysis`; module docstring)."""
    stated_reps = faults_lib.reps_from_text(text)
    stated_tempo = tempo_from_text(text)
    tempo = measured_tempo(analysis)
    named = faults_lib.faults_from_text(text, analysis.exercise)
    measured = faults_lib.detect_faults(analysis)
    extra = [f for f in named if f not in measured]
    missing = [f for f in measured if f not in named]
    items = (
        _rep_count(stated_reps, len(analysis.reps)),
        _tempo(stated_tempo, tempo),
        Check("faults_not_measured", WARN,
              f"the feedback names {_phrases(extra)}, which the measurement does not find",
              f"named but not measured: {_phrases(extra)}")
        if extra else Check("faults_not_measured", OK, "every fault named was measured"),
        Check("faults_not_named", WARN,
              f"measured in the clip but not named in the feedback: {_phrases(missing)}",
              f"measured but not named: {_phrases(missing)}")
        if missing else Check("faults_not_named", OK, "every fault measured is named"),
        _fault_reps(text, analysis, [f for f in named if f in measured]),
    )
    return Checks(items=items, stated_reps=stated_reps, measured_reps=len(analysis.reps),
                  stated_tempo_sec=stated_tempo, measured_tempo_sec=tempo,
                  faults_named=tuple(named), faults_measured=tuple(measured))


def check_rates(checks: list[Checks]) -> dict[str, Any]:
    """Over many texts: the fraction that pass every check, and per check the fraction of the
    texts it applied to (not skipped) where it warned, with that count (None: never applied)."""
    if not checks:
        return {"checks_passed": None, "check_warn_rate": {}}
    rates = {}
    for name in CHECK_NAMES:
        applied = [c.status(name) for c in checks if c.status(name) != SKIP]
        rates[name] = {"warn_rate": (sum(s == WARN for s in applied) / len(applied)
                                     if applied else None), "applied": len(applied)}
    return {"checks_passed": sum(c.passed for c in checks) / len(checks),
            "check_warn_rate": rates}
