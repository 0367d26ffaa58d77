"""The LLM prompt: a physics summary of the clip, rendered as a Phi-3 chat turn.

The prompt is built only from `PhysicsSummary`, i.e. from the clip's measured wave features.
Ground-truth fields of a clip (`LANGUAGE`, `faults`) never enter it, so the model cannot copy
its training target.

The prompt's length is bounded by design. Every free-text or integer field is capped (grade
at `MAX_GRADE_CHARS` characters, rep counts above `MAX_REPS` become unknown, numbers print
with 3 significant digits), and `fit_prompt_ids` fits a summary to a token budget by
shortening its least important part: the phase list, last phase first, and then the compact
one-line form. The summaries the project's own wave analysis produces (any exercise, all four
phases, the widest numbers) take at most 430 tokens with the tiny demo tokenizer
(tests/test_prompt.py), within `data.max_prompt_tokens` of configs/base.py.

The fault vocabulary (fault id <-> canonical phrase) lives in `wavepose_jax.data.faults`,
the text it is read from and written in in `wavepose_jax.data.text`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from wavepose_jax.data.features import Quality, Wave, WaveFeatures
from wavepose_jax.data.schema import canonical_exercise

__all__ = [
    "COMPACT_SYSTEM_PROMPT", "FittedPrompt", "PhysicsSummary", "SYSTEM_PROMPT",
    "build_messages", "build_prompt", "fit_prompt_ids", "prompt_ids",
]

SYSTEM_PROMPT = (
    "You are an expert strength coach. You receive motion tokens from a pose-based motion "
    "encoder and a physics summary of one exercise set. Give short, specific coaching feedback: "
    "state how many reps were performed, name each technique fault you see, and say how to fix it."
)
COMPACT_SYSTEM_PROMPT = "Coach the lifter."

_UNKNOWN = "unknown"
MAX_GRADE_CHARS = 12  # a longer grade string is cut to this many characters
MAX_REPS = 9999  # a larger rep count is reported as unknown


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, text, NaN, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _fmt(value: float | None, unit: str = "") -> str:
    return _UNKNOWN if value is None else f"{value:.3g}{unit}"


def _rep_count(wave_features: WaveFeatures) -> int | None:
    harmonic = wave_features.harmonic
    count = _float(harmonic.oscillation_count) if harmonic is not None else None
    if count is None:  # a file's own top-level `reps`, kept with the keys the schema lacks
        count = _number(wave_features.extra.get("reps"))
    return None if count is None or not 0 <= count <= MAX_REPS else int(round(count))


def _grade(value: str | None) -> str:
    text = (value or "").strip()
    return text[:MAX_GRADE_CHARS].strip() or _UNKNOWN


def _phases(waves: tuple[Wave, ...]) -> tuple[tuple[str, float], ...]:
    """Mean duration of each wave type, in order of first appearance."""
    totals: dict[str, list[float]] = {}
    for wave in waves:
        kind, duration = wave.type, _float(wave.duration_sec)
        if kind is not None and kind.strip() and duration is not None and duration >= 0:
            totals.setdefault(kind.strip(), []).append(duration)
    return tuple((kind, sum(d) / len(d)) for kind, d in totals.items())


# The wave phase that is rest between reps rather than part of one: standing / arms extended
# at the top, except for the press, which rests with the bar at the shoulders.
_REST_PHASE = {"press": "bottom"}


@dataclasses.dataclass(frozen=True)
class PhysicsSummary:
    """What the model is told about a clip. None marks a quantity the features did not give."""

    exercise: str
    reps: int | None
    grade: str
    overall: float | None
    smoothness: float | None
    control: float | None
    consistency: float | None
    tempo_sec: float | None  # mean rep duration (rest between reps excluded)
    phases: tuple[tuple[str, float], ...]  # (wave type, mean duration in seconds)
    dominant_hz: float | None
    expert: bool | None = None

    @classmethod
    def from_wave_features(cls, wave_features: WaveFeatures | None, exercise: str,
                           expert: bool | None = None) -> PhysicsSummary:
        """Summary of a clip's `WaveFeatures` (data/features.py); missing parts become unknown."""
        wf = WaveFeatures() if wave_features is None else wave_features
        quality = wf.quality or Quality()
        reps = _rep_count(wf)
        waves = wf.waves or ()
        phases = _phases(waves)
        dominant_hz = _float(wf.frequency.dominant_hz) if wf.frequency is not None else None
        exercise_id = canonical_exercise(str(exercise))
        rest = _REST_PHASE.get(exercise_id, "lockout")
        total = sum(_float(w.duration_sec) or 0.0 for w in waves if w.type != rest)
        if reps and total > 0:
            tempo = total / reps
        elif dominant_hz is not None and dominant_hz > 0:
            tempo = 1.0 / dominant_hz
        else:
            tempo = None
        name = str(exercise).strip()
        return cls(
            exercise=canonical_exercise(name) or name.lower() or _UNKNOWN,
            reps=reps,
            grade=_grade(quality.grade),
            overall=_float(quality.overall),
            smoothness=_float(quality.smoothness),
            control=_float(quality.control),
            consistency=_float(quality.consistency),
            tempo_sec=tempo,
            phases=phases,
            dominant_hz=dominant_hz,
            expert=expert if isinstance(expert, bool) else None,
        )

    def to_text(self, compact: bool = False) -> str:
        """Short human-readable lines; `compact` gives one terse line for tiny models."""
        reps = _UNKNOWN if self.reps is None else str(self.reps)
        if compact:
            tempo = _fmt(self.tempo_sec, "s")
            return f"{self.exercise} reps {reps} grade {self.grade} tempo {tempo}"
        lines = [
            f"Exercise: {self.exercise}",
            f"Reps: {reps}",
            f"Quality: grade {self.grade}, overall {_fmt(self.overall)}, smoothness "
            f"{_fmt(self.smoothness)}, control {_fmt(self.control)}, consistency "
            f"{_fmt(self.consistency)}",
            f"Tempo: {_fmt(self.tempo_sec, ' s')} per rep",
        ]
        if self.phases:
            lines.append("Phases: " + ", ".join(f"{k} {d:.2f} s" for k, d in self.phases))
        lines.append(f"Dominant frequency: {_fmt(self.dominant_hz, ' Hz')}")
        if self.expert is not None:
            lines.append(f"Lifter level: {'expert' if self.expert else 'non-expert'}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready dict (phases as a list of {type, duration_sec})."""
        out = dataclasses.asdict(self)
        out["phases"] = [{"type": k, "duration_sec": d} for k, d in self.phases]
        return out


def build_messages(summary: PhysicsSummary, compact: bool = False) -> list[dict]:
    """System and user chat turns asking for feedback on the summarised clip."""
    if compact:
        system = COMPACT_SYSTEM_PROMPT
        user = f"{summary.to_text(compact=True)}\nFeedback:"
    else:
        system = SYSTEM_PROMPT
        reps = "the number of reps" if summary.reps is None else f"the rep count ({summary.reps})"
        user = (f"Here is the motion analysis of one {summary.exercise} set.\n"
                f"{summary.to_text()}\n"
                f"Write coaching feedback for this set. Mention {reps}, then any technique "
                f"faults and how to fix them.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_prompt(summary: PhysicsSummary, tokenizer: Any, compact: bool = False) -> str:
    """The chat-formatted prompt text, ending with the assistant header."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("tokenizer has no chat_template; load the tokenizer of a chat model")
    return tokenizer.apply_chat_template(build_messages(summary, compact), tokenize=False,
                                         add_generation_prompt=True)


def prompt_ids(summary: PhysicsSummary, tokenizer: Any, compact: bool = False) -> list[int]:
    """Token ids of `build_prompt` (the chat template supplies every special token)."""
    return list(tokenizer.encode(build_prompt(summary, tokenizer, compact),
                                 add_special_tokens=False))


@dataclasses.dataclass(frozen=True)
class FittedPrompt:
    """The prompt ids of a summary within a token budget, and what was cut to fit it."""

    ids: list[int]
    shortened: str | None  # e.g. "2 of 4 phases dropped"; None when nothing was cut


def fit_prompt_ids(summary: PhysicsSummary, tokenizer: Any, max_tokens: int,
                   compact: bool = False) -> FittedPrompt:
    """`prompt_ids` of `summary`, shortened until it has at most `max_tokens` tokens.

    The least important part goes first: the phase list, last phase first; then the compact
    one-line form (exercise, reps, grade, tempo) of the summary.

    Raises:
      ValueError: even the compact form is longer than `max_tokens` (a budget too small for
        any prompt: a config error, not a property of the clip).
    """
    ids = prompt_ids(summary, tokenizer, compact)
    if len(ids) <= max_tokens:
        return FittedPrompt(ids, None)
    n = len(summary.phases)
    if not compact:
        for keep in range(n - 1, -1, -1):
            ids = prompt_ids(dataclasses.replace(summary, phases=summary.phases[:keep]), tokenizer)
            if len(ids) <= max_tokens:
                return FittedPrompt(ids, f"{n - keep} of {n} phases dropped")
    ids = prompt_ids(summary, tokenizer, compact=True)
    if len(ids) <= max_tokens:
        return FittedPrompt(ids, "compact form")
    raise ValueError(f"a prompt budget of {max_tokens} tokens is below the shortest prompt of "
                     f"this summary ({len(ids)} tokens, compact form)")
