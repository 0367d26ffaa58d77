"""Coaching text and its facts: what a text states, the reference texts, and grounding.

Every fact a coaching text can state about a set has one phrasing this module reads and writes:

* the rep count: "8 reps", "eight reps", "1 rep" (`reps_from_text`);
* the tempo, seconds per rep: "2.1 seconds per rep", "2.1 s each", "each taking around 2.1
  seconds", "your tempo averaged 2.1 s per rep" (`tempo_from_text`);
* each fault, by its canonical phrase (`faults.phrase_for`; `faults_from_text`), followed by
  the reps it hit when it did not hit them all: "shallow depth on reps 3 and 4", "incomplete
  lockout on every rep but rep 2" (`rep_list`, `rep_faults_from_text`; a phrase without a rep
  list means every rep).

No phrase contains another, no praise or cue sentence contains a phrase, and no phrasing
negates one ("no shallow depth"), so the facts read back out of any text, including text a
model generated. `compose_feedback` writes the reference texts of generated clips.

`ground_feedback(text, ...)` makes a generated text state only what the measurement says, one
sentence at a time (`GROUNDING_RULES`): the model chooses the words and which faults to name;
the rep count, the tempo and the reps each named fault is said for are the measured ones; a
sentence with any other number is left out. `Grounded.edits` lists every change.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np

from wavepose_jax.data import faults as faults_lib


def _normalize(text: str) -> str:
    """Lower case, every non-alphanumeric run -> one space, padded with spaces."""
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def _pool(exercise: str | None) -> list[faults_lib.Fault]:
    """The faults of an exercise, or of the whole vocabulary for None."""
    return list(faults_lib.FAULTS.values()) if exercise is None else faults_lib.faults_for(exercise)


def fault_from_phrase(phrase: str) -> str | None:
    """The fault id whose canonical phrase this is (case/punctuation-insensitive), or None."""
    key = _normalize(phrase)
    return next((f.id for f in faults_lib.FAULTS.values() if _normalize(f.phrase) == key), None)


def faults_from_text(text: str, exercise: str | None = None) -> list[str]:
    """Fault ids whose canonical phrase occurs in the text, in vocabulary order.

    Args:
      text: feedback text (ground truth or generated).
      exercise: when given, only that exercise's faults are looked for.
    """
    norm = _normalize(text)
    return [f.id for f in _pool(exercise) if _normalize(f.phrase) in norm]


_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                 "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
_REPS_RE = re.compile(
    r"(?<![\w.])(\d+|" + "|".join(_NUMBER_WORDS) + r")\s+(?:(?:full|good|clean|solid)\s+)?"
    r"(?:reps?|repetitions?)\b", re.IGNORECASE)


_REP_LIST_RE = re.compile(r" on (every rep but )?reps? (\d+(?: \d+)*(?: and \d+)?) ")


def rep_list(faulty: Sequence[bool]) -> str:
    """Which reps a fault hit, as the composer writes it after the phrase ("" for every rep).

    Reps are numbered from 1; the shorter of naming the reps hit and naming the others wins:
    " on rep 3", " on reps 3 and 4", " on every rep but reps 2 and 5".
    """
    hit = [i + 1 for i, f in enumerate(faulty) if f]
    spared = [i + 1 for i, f in enumerate(faulty) if not f]
    if not spared or not hit:
        return ""
    named, prefix = (hit, " on ") if len(hit) <= len(spared) else (spared, " on every rep but ")
    numbers = [str(i) for i in named]
    return f"{prefix}{'rep' if len(numbers) == 1 else 'reps'} {_join(numbers)}"


def rep_faults_from_text(text: str, reps: int, exercise: str | None = None) -> list[list[str]]:
    """Per rep (1..`reps`), the faults a text names for it, in vocabulary order.

    A fault phrase followed by a rep list (`rep_list`) applies to those reps; a phrase without
    one applies to every rep. Rep numbers outside 1..`reps` are ignored.
    """
    norm = _normalize(text)
    out: list[list[str]] = [[] for _ in range(max(int(reps), 0))]
    for fault in _pool(exercise):
        phrase = _normalize(fault.phrase)
        at = norm.find(phrase)
        if at < 0:
            continue
        m = _REP_LIST_RE.match(norm, at + len(phrase) - 1)
        named = set(range(1, len(out) + 1))
        if m is not None:
            listed = {int(x) for x in re.findall(r"\d+", m.group(2))}
            named = named - listed if m.group(1) else named & listed
        for i in sorted(named):
            out[i - 1].append(fault.id)
    return out


def reps_from_text(text: str) -> int | None:
    """The first rep count stated in a text ("8 reps", "eight reps"), or None."""
    m = _REPS_RE.search(text)
    if m is None:
        return None
    word = m.group(1).lower()
    return int(word) if word.isdigit() else _NUMBER_WORDS.index(word)


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

    Understands the phrasings of `compose_feedback` and close variants: "at about 2.5 seconds
    per rep", "averaging 3.1 s each", "each taking around 2.5 seconds", "your tempo averaged
    2.8 s per rep".
    """
    found = [(m.start(), float(m.group(1))) for pattern in _TEMPO_RES
             for m in [pattern.search(text)] if m is not None]
    return min(found)[1] if found else None


# ----------------------------------------------------------------------------- composer

_EXERCISE_NAMES = {"squat": "squats", "pushup": "push-ups", "deadlift": "deadlifts",
                   "press": "overhead presses"}

_REP_SENTENCES = (
    "You completed {n} {rw} of {ex} at about {t} seconds per rep.",
    "I counted {n} {rw}, averaging {t} s each.",
    "That set of {ex} had {n} {rw} at a pace of roughly {t} seconds per rep.",
    "{n} {rw} of {ex} logged, each taking around {t} seconds.",
    "Nice effort on {n} {rw} of {ex}; your tempo averaged {t} s per rep.",
    "You moved through {n} {rw} of {ex} at roughly {t} seconds per rep.",
)
_FAULT_SENTENCES = (
    ("The main thing to fix is {f}.", "The main things to fix are {f}."),
    ("I noticed {f} in this set.", "I noticed {f} in this set."),
    ("Watch for {f}.", "Watch for {f}."),
    ("Your form showed {f}.", "Your form showed {f}."),
    ("Work on correcting the {f}.", "Work on correcting the {f}."),
)
_CUES: dict[str, tuple[str, ...]] = {
    "shallow_depth": ("Sit lower until your hips pass your knees.",
                      "Aim to break parallel on every rep."),
    "incomplete_lockout": ("Stand all the way up and squeeze your glutes at the top.",
                           "Finish each rep with straight knees."),
    "pushup_partial_range": ("Lower until your chest nearly touches the floor.",
                             "Bring your chest down to fist height from the floor."),
    "pushup_hip_sag": ("Brace your abs and glutes to keep a straight plank.",
                       "Keep your body in one line from shoulders to heels."),
    "deadlift_incomplete_lockout": ("Drive your hips through and stand tall at the top.",
                                    "Finish with the hips fully extended."),
    "deadlift_hips_rise_early": ("Push the floor away so hips and shoulders rise together.",
                                 "Keep your chest up as you leave the bottom."),
    "press_incomplete_lockout": ("Press until your elbows are straight and the bar is over your "
                                 "head.", "Finish with arms straight overhead."),
    "press_incomplete_lowering": ("Bring the bar back down to your shoulders each rep.",
                                  "Lower to the front rack before pressing again."),
    "fast_eccentric": ("Take about two seconds on the way down.",
                       "Slow the lowering and stay in control."),
    "uneven_tempo": ("Keep the same rhythm from the first rep to the last.",
                     "Try counting a steady beat for every rep."),
}
_PRAISE: dict[str, tuple[str, ...]] = {
    "squat": ("Depth and lockout looked solid on every rep.",
              "You hit good depth and stood all the way up each time."),
    "pushup": ("Your body stayed in a straight line and your chest came close to the floor.",
               "Great full push-ups with a rigid plank throughout."),
    "deadlift": ("Hips and shoulders rose together and you stood tall at the top.",
                 "You finished every pull with the hips fully extended."),
    "press": ("You locked out overhead and brought the bar back to your shoulders every rep.",
              "Full presses from the shoulders to straight arms overhead."),
}
_TEMPO_PRAISE = ("The lowering stayed controlled and the rhythm was consistent.",
                 "Your tempo was steady with a controlled way down.",
                 "Good control on the way down and a consistent rhythm.")
_CLOSINGS_CLEAN = ("Keep it up.", "Nice work, keep building on this.",
                   "Keep this quality in your next set.")
_CLOSINGS_FAULTS = ("Fix these and the set will look much cleaner.",
                    "Film your next set to check the change.", "You are close, keep at it.")
MIN_WORDS, MAX_WORDS = 25, 60


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _words(sentences: Sequence[str]) -> int:
    return sum(len(s.split()) for s in sentences)


def compose_feedback(exercise: str, reps: int, faults: Sequence[str], tempo_sec_per_rep: float,
                     rng: np.random.Generator,
                     rep_faults: Sequence[Sequence[str]] | None = None) -> str:
    """Ground-truth coaching text: rep count (digits), tempo, every fault by its phrase.

    Args:
      exercise: exercise id or alias.
      reps: rep count (stated with digits, e.g. "8 reps").
      faults: fault ids of the clip (any order; each must apply to the exercise).
      tempo_sec_per_rep: mean rep duration in seconds.
      rng: picks among the phrasings.
      rep_faults: optional, per rep (`reps` entries) the faults that rep shows; a clip fault
        that misses some reps is followed by the reps it hit (`rep_list`).

    Returns:
      1-4 sentences, `MIN_WORDS`..`MAX_WORDS` words.
    """
    ex = faults_lib.exercise_id(exercise)
    allowed = {f.id for f in faults_lib.faults_for(ex)}
    bad = [f for f in faults if f not in allowed]
    if bad:
        raise ValueError(f"faults {bad} do not apply to {ex}; "
                                          f"expected a subset of {sorted(allowed)}")
    if rep_faults is not None and len(rep_faults) != int(reps):
        raise ValueError(f"rep_faults has {len(rep_faults)} entries for {int(reps)} reps")
    ordered = [f.id for f in faults_lib.faults_for(ex) if f.id in set(faults)]

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    rep_sentence = pick(_REP_SENTENCES).format(
        n=int(reps), rw="rep" if int(reps) == 1 else "reps", ex=_EXERCISE_NAMES[ex],
        t=f"{float(tempo_sec_per_rep):.1f}")
    sentences = [rep_sentence[0].upper() + rep_sentence[1:]]
    if not ordered:
        sentences += [pick(_PRAISE[ex]), pick(_TEMPO_PRAISE)]
        closing = pick(_CLOSINGS_CLEAN)
    else:
        one, many = _FAULT_SENTENCES[int(rng.integers(len(_FAULT_SENTENCES)))]
        phrases = [faults_lib.phrase_for(f) + (
            "" if rep_faults is None or f not in faults_lib.PER_REP_FAULTS else
            rep_list([f in r for r in rep_faults])) for f in ordered]
        sentences.append((one if len(phrases) == 1 else many).format(f=_join(phrases)))
        cue = pick(_CUES[ordered[int(rng.integers(len(ordered)))]])
        if _words(sentences + [cue]) <= MAX_WORDS:
            sentences.append(cue)
        closing = pick(_CLOSINGS_FAULTS)
    if len(sentences) < 4 and (_words(sentences) < MIN_WORDS or rng.random() < 0.5) and \
            _words(sentences + [closing]) <= MAX_WORDS:
        sentences.append(closing)
    return " ".join(sentences)


# ----------------------------------------------------------------------------- grounding

GROUNDING_RULES: dict[str, str] = {
    "rep_count": "every rep count the text states is the number of reps measured",
    "tempo": "every tempo it states is the measured seconds per rep (the mean duration of the "
             "counted reps), to 0.1 s",
    "fault_reps": "each per-rep fault it names is said for the reps that break the rule, by "
                  "number (no list when every rep does; none when no rep does); uneven tempo, "
                  "a fault of the set, gets no rep list",
    "unverified": "a sentence that states any other number is left out",
}

_MARK, _END = "\x00", "\x01"  # around the facts grounding writes, while it works
_MARKED = re.compile(_MARK + "[^" + _END + "]*" + _END)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_LIST = r"\d+(?:\s*,\s*\d+)*(?:,?\s+and\s+\d+)?"
# A rep list right after a fault phrase, as any text may write it: " on reps 3 and 4",
# " on every rep but rep 2", " on every rep", " in all reps".
_RAW_REP_LIST = re.compile(
    r"\s+(?:on|in|during)\s+(?:every\s+rep(?:\s+but\s+reps?\s+" + _LIST + r")?"
    r"|all\s+(?:the\s+)?reps|reps?\s+" + _LIST + r")\b", re.IGNORECASE)
_COUNT = re.compile(
    r"(?<![\w.])(\d+|" + "|".join(_NUMBER_WORDS) + r")(\s+(?:(?:full|good|clean|solid)\s+)?)"
    r"(reps?|repetitions?)\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Edit:
    """One change grounding made: which rule (`GROUNDING_RULES`), the model's words, and the
    words now in their place ("" when they were left out)."""

    rule: str
    said: str
    written: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Grounded:
    """A text that states only measured facts, and the changes that made it so."""

    text: str
    edits: tuple[Edit, ...]


def _phrase_re(phrase: str) -> re.Pattern:
    words = [re.escape(w) for w in phrase.split()]
    return re.compile(r"\b" + r"[\s-]+".join(words) + r"\b", re.IGNORECASE)


def _mark(value: str) -> str:
    return _MARK + value + _END if value else ""


def _unmark(text: str) -> str:
    return text.replace(_MARK, "").replace(_END, "")


def _rewrite_rep_lists(sentence: str, pool: Sequence[faults_lib.Fault],
                       write: Callable[[faults_lib.Fault], str], edits: list[Edit]) -> str:
    """Every fault phrase of `pool` in `sentence` followed by `write(fault)` (marked) instead
    of the rep list it had; each change is recorded in `edits`."""
    for fault in pool:
        pattern = _phrase_re(fault.phrase)
        at = 0
        while (m := pattern.search(sentence, at)) is not None:
            old = _RAW_REP_LIST.match(sentence, m.end())
            said = old.group(0) if old else ""
            new = write(fault)
            if said.strip().lower() != new.strip().lower():
                edits.append(Edit("fault_reps", (m.group(0) + said).strip(),
                                  (m.group(0) + new).strip()))
            sentence = sentence[:m.end()] + _mark(new) + sentence[m.end() + len(said):]
            at = m.end() + len(_mark(new))
    return sentence


def without_rep_lists(text: str) -> str:
    """`text` with the rep list after every fault phrase taken out ("shallow depth on reps 3
    and 4" -> "shallow depth"): the training target of a model whose rep lists grounding
    writes (`ground_feedback`)."""
    return _unmark(_rewrite_rep_lists(text, list(faults_lib.FAULTS.values()), lambda f: "", []))


def _ground_counts(sentence: str, reps: int, edits: list[Edit]) -> str:
    def write(m: re.Match) -> str:
        noun = m.group(3).lower()
        noun = "repetition" if noun.startswith("repetition") else "rep"
        noun += "" if reps == 1 else "s"
        new = f"{reps}{m.group(2)}{noun}"
        if m.group(0).lower() != new.lower():
            edits.append(Edit("rep_count", m.group(0), new))
        return _mark(new)

    return _COUNT.sub(write, sentence)


def _ground_tempo(sentence: str, tempo_sec: float | None, edits: list[Edit]) -> str:
    if tempo_sec is None:
        return sentence  # a stated tempo stays unmarked: the sentence is left out
    value = f"{tempo_sec:.1f}"
    for pattern in _TEMPO_RES:
        def write(m: re.Match) -> str:
            start, end = m.span(1)
            if m.group(1) != value:
                edits.append(Edit("tempo", m.group(0), m.group(0)[:start - m.start()] + value +
                                  m.group(0)[end - m.start():]))
            whole = m.group(0)
            return whole[:start - m.start()] + _mark(value) + whole[end - m.start():]

        sentence = pattern.sub(write, sentence)
    return sentence


def sentences(text: str) -> list[str]:
    """A text's sentences (split after ".", "!" or "?" followed by white space)."""
    return [s for s in _SENTENCE_BREAK.split(text.strip()) if s]


def ground_feedback(text: str, exercise: str, reps: int, tempo_sec: float | None,
                    fault_reps: dict[str, Sequence[int]]) -> Grounded:
    """The text with every fact it states set to the measurement (`GROUNDING_RULES`).

    Sentence by sentence, so the complete sentences of a text still being written ground the
    same as they will in the whole text. The faults named stay the text's own.

    Args:
      text: a coaching text (generated).
      exercise: the clip's exercise.
      reps: the number of reps measured (at least 1: a clip without reps gets no text).
      tempo_sec: the measured seconds per rep.
      fault_reps: fault id -> numbers (from 1) of the reps that break its rule
        (`faults.FaultVerdict.reps`).
    """
    def measured(fault: faults_lib.Fault) -> str:
        if fault.id not in faults_lib.PER_REP_FAULTS:
            return ""
        hit = set(fault_reps.get(fault.id, ()))
        return rep_list([i + 1 in hit for i in range(reps)])

    edits: list[Edit] = []
    kept = []
    for sentence in sentences(text):
        changes: list[Edit] = []
        out = _rewrite_rep_lists(sentence, faults_lib.faults_for(exercise), measured, changes)
        out = _ground_counts(out, reps, changes)
        out = _ground_tempo(out, tempo_sec, changes)
        if re.search(r"\d", _MARKED.sub("", out)):
            edits.append(Edit("unverified", sentence, ""))
        else:
            edits += changes
            kept.append(_unmark(out))
    return Grounded(" ".join(kept), tuple(edits))
