"""Fault vocabulary: measurable technique faults, their canonical phrases, and coaching text.

Every fault is a rule on the measurements of `waves.analyze_reps` (side view, 7 signals). A
per-rep rule marks a clip when at least half of its reps break it (complete reps only, when the
clip has any); `uneven_tempo` is a clip-level rule. Each fault has one canonical phrase; the
ground-truth coaching text (`compose_feedback`) names every fault of a clip with its phrase
verbatim and no other, so `faults_from_text` reads the faults back out of any text, including
text a model generated. No phrase contains another, no praise or cue sentence contains a
phrase, and no phrasing negates one ("no shallow depth").

Per rep: `per_rep_faults` lists the per-rep rules each rep breaks, and `compose_feedback`
says which reps a clip fault hit when it did not hit them all, right after its phrase
("shallow depth on reps 3 and 4", "incomplete lockout on every rep but rep 2");
`rep_faults_from_text` reads that back (a phrase without a rep list means every rep).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np

from wavepose_jax.data.schema import EXERCISES, canonical_exercise
from wavepose_jax.data.waves import Rep, RepAnalysis, analyze_reps, compute_wave_features

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


def _exercise(exercise: str) -> str:
    ex = canonical_exercise(exercise)
    if ex is None:
        raise ValueError(f"unknown exercise {exercise!r}; expected one of {EXERCISES}")
    return ex


def faults_for(exercise: str) -> list[Fault]:
    """The faults that apply to an exercise, in vocabulary order."""
    ex = _exercise(exercise)
    return [f for f in FAULTS.values() if f.exercise in (ex, ANY_EXERCISE)]


def rep_faults(rep: Rep, exercise: str) -> list[str]:
    """Ids of the per-rep rules this rep breaks."""
    return [f.id for f in faults_for(exercise)
                    if f.id in _PER_REP_RULES and _PER_REP_RULES[f.id](rep)]


def per_rep_faults(analysis: RepAnalysis) -> list[list[str]]:
    """The per-rep rules each rep of the analysis breaks: one list of fault ids per rep."""
    return [rep_faults(r, analysis.exercise) for r in analysis.reps]


def wave_features(signals: dict[str, np.ndarray], fps: float, exercise: str, *,
                  analysis: RepAnalysis | None = None) -> dict:
    """`waves.compute_wave_features` plus `rep_faults`: the rules' verdict on every rep."""
    analysis = analysis or analyze_reps(signals, fps, exercise)
    features = compute_wave_features(signals, fps, exercise, analysis=analysis)
    features["rep_faults"] = per_rep_faults(analysis)
    return features


def detect_faults(analysis: RepAnalysis) -> list[str]:
    """Fault ids of a clip by the rules, in vocabulary order."""
    reps = [r for r in analysis.reps if r.complete] or analysis.reps
    if not reps:
        return []
    out = []
    for fault in faults_for(analysis.exercise):
        if fault.id in _PER_REP_RULES:
            hits = sum(_PER_REP_RULES[fault.id](r) for r in reps)
            if 2 * hits >= len(reps):
                out.append(fault.id)
        elif fault.id == "uneven_tempo" and len(reps) >= 3:
            d = np.array([r.duration_sec for r in reps])
            if d.mean() > 0 and d.std() / d.mean() > MAX_TEMPO_CV:
                out.append(fault.id)
    return out


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


# ----------------------------------------------------------------------------- text <-> faults


def _normalize(text: str) -> str:
    """Lower case, every non-alphanumeric run -> one space, padded with spaces."""
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def phrase_for(fault_id: str) -> str:
    """The canonical phrase of a fault id."""
    if fault_id not in FAULTS:
        raise KeyError(f"unknown fault id {fault_id!r}")
    return FAULTS[fault_id].phrase


def fault_from_phrase(phrase: str) -> str | None:
    """The fault id whose canonical phrase this is (case/punctuation-insensitive), or None."""
    key = _normalize(phrase)
    return next((f.id for f in FAULTS.values() if _normalize(f.phrase) == key), None)


def faults_from_text(text: str, exercise: str | None = None) -> list[str]:
    """Fault ids whose canonical phrase occurs in the text, in vocabulary order.

    Args:
      text: feedback text (ground truth or generated).
      exercise: when given, only that exercise's faults are looked for.
    """
    pool = faults_for(exercise) if exercise is not None else list(FAULTS.values())
    norm = _normalize(text)
    return [f.id for f in pool if _normalize(f.phrase) in norm]


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
    pool = faults_for(exercise) if exercise is not None else list(FAULTS.values())
    norm = _normalize(text)
    out: list[list[str]] = [[] for _ in range(max(int(reps), 0))]
    for fault in pool:
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
    ex = _exercise(exercise)
    allowed = {f.id for f in faults_for(ex)}
    bad = [f for f in faults if f not in allowed]
    if bad:
        raise ValueError(f"faults {bad} do not apply to {ex}; "
                                          f"expected a subset of {sorted(allowed)}")
    if rep_faults is not None and len(rep_faults) != int(reps):
        raise ValueError(f"rep_faults has {len(rep_faults)} entries for {int(reps)} reps")
    ordered = [f.id for f in faults_for(ex) if f.id in set(faults)]

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
        phrases = [phrase_for(f) + ("" if rep_faults is None or f not in _PER_REP_RULES else
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
