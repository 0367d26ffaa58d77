"""Checks of a coaching text against the clip it describes.

`check_feedback(text, measurement)` compares what a feedback text states with what the wave
analysis and the fault rules measure on the same clip (`data/measure.py`). It is the one
definition of "the text agrees with the clip": infer's `--json` lines carry it (`checks`), the
report shows its warnings at the top of each clip's section, and evaluation scores it
(`evaluate.check_metrics`). The text is read with the parsers of `data/text.py`, the same ones
grounding writes with.

The checks, each `ok`, `warn` or `skip`; `skip` only when the text states nothing the check
is about, so a claim the measurement cannot confirm is always a warning:

* `rep_count`: the rep count the text states (`text.reps_from_text`) equals the number of reps
  measured. A text that states no count is a warning (the prompt asks for it).
* `tempo`: the seconds per rep the text states (`text.tempo_from_text`) is within
  `TEMPO_TOLERANCE_SEC` or `TEMPO_TOLERANCE_FRAC` of the measured tempo
  (`RepAnalysis.tempo_sec`), whichever is larger. Skipped when the text states no tempo.
* `faults_not_measured`: every fault the text names (`text.faults_from_text`) is one the set
  has by the rules (`faults.SET_RULE`).
* `faults_not_named`: every fault the set has is named in the text.
* `fault_reps`: for each per-rep fault that is both named and measured, the reps the text
  names it for (`text.rep_faults_from_text`; a phrase without a rep list means every rep) are
  the reps that break its rule (`faults.FaultVerdict.reps`). Skipped when no per-rep fault is
  both named and measured.

A text passes when no check warns (`Checks.passed`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.measure import Measurement

TEMPO_TOLERANCE_SEC = 0.25   # stated tempo may differ from the measured by this much ...
TEMPO_TOLERANCE_FRAC = 0.10  # ... or by this fraction of it, whichever is larger
CHECK_NAMES = ("rep_count", "tempo", "faults_not_measured", "faults_not_named", "fault_reps")
OK, WARN, SKIP = "ok", "warn", "skip"


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
        return Check("tempo", WARN, f"the feedback says {stated:g} s per rep; no rep was "
                                    "measured", f"tempo {stated:g} s, no rep measured")
    tolerance = tempo_tolerance(measured)
    if abs(stated - measured) > tolerance:
        return Check("tempo", WARN, f"the feedback says {stated:g} s per rep; {measured:.2f} s "
                                    f"was measured (tolerance {tolerance:.2f} s)",
                     f"tempo {stated:g} s, measured {measured:.2f} s")
    return Check("tempo", OK, f"{stated:g} s per rep, within {tolerance:.2f} s of the "
                              f"measured {measured:.2f} s")


def _fault_reps(text: str, measurement: Measurement, both: list[str]) -> Check:
    per_rep = [f for f in both if f in faults_lib.PER_REP_FAULTS]
    if not per_rep:
        return Check("fault_reps", SKIP, "no per-rep fault both named and measured")
    total = measurement.reps
    said = text_lib.rep_faults_from_text(text, total, measurement.exercise)
    wrong, short = [], []
    for fault in per_rep:
        told = [i + 1 for i, s in enumerate(said) if fault in s]
        seen = list(measurement.verdicts[fault].reps)
        if told != seen:
            phrase = faults_lib.phrase_for(fault)
            wrong.append(f'the feedback names "{phrase}" for {_reps(told, total)}; the rule '
                         f"finds it on {_reps(seen, total)}")
            short.append(f'"{phrase}" said for {_reps(told, total)}, measured on '
                         f"{_reps(seen, total)}")
    if wrong:
        return Check("fault_reps", WARN, "; ".join(wrong), "; ".join(short))
    return Check("fault_reps", OK, "the reps named for each fault are the reps measured")


def check_feedback(text: str, measurement: Measurement) -> Checks:
    """Checks `text` against the clip's `measurement` (module docstring)."""
    stated_reps = text_lib.reps_from_text(text)
    stated_tempo = text_lib.tempo_from_text(text)
    tempo = measurement.tempo_sec
    named = text_lib.faults_from_text(text, measurement.exercise)
    measured = measurement.faults
    extra = [f for f in named if f not in measured]
    missing = [f for f in measured if f not in named]
    items = (
        _rep_count(stated_reps, measurement.reps),
        _tempo(stated_tempo, tempo),
        Check("faults_not_measured", WARN,
              f"the feedback names {_phrases(extra)}, which the measurement does not find",
              f"named but not measured: {_phrases(extra)}")
        if extra else Check("faults_not_measured", OK, "every fault named was measured"),
        Check("faults_not_named", WARN,
              f"measured in the clip but not named in the feedback: {_phrases(missing)}",
              f"measured but not named: {_phrases(missing)}")
        if missing else Check("faults_not_named", OK, "every fault measured is named"),
        _fault_reps(text, measurement, [f for f in named if f in measured]),
    )
    return Checks(items=items, stated_reps=stated_reps, measured_reps=measurement.reps,
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
