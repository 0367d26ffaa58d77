"""Synthetic exercise clips: a COCO-17 skeleton doing squats, push-ups, deadlifts and presses.

The training data of the CPU demo. A model trained on one generator learns that generator, so
every clip draws what real recordings vary (`data/othergen.py`, an unrelated generator, is the
out-of-distribution benchmark and never used here):

* the body (`synthetic_body.py`): thigh, shank, upper-arm and forearm lengths relative to the
  torso, hip and shoulder widths (the athlete's height and distance only set the scale in
  the image);
* the set: 1-15 reps (mostly 3-7; a quarter of the sets uniform over 1-15), idle time before
  and after (0-4 s), rests of varying length between reps (sometimes one long breather), a
  velocity profile (cosine, minimum-jerk, smoothstep, or asymmetric: each move skewed to a
  fast start or a fast finish), pauses at the turning point, eccentric and concentric
  durations, and per-rep depth and lockout that vary within the set;
* faults: each fault of the exercise with probability `FAULT_PROB`, on all reps or on at least
  `FAULTY_REP_FRAC` of them (sometimes a fault on a minority of reps instead), every measure
  drawn around the threshold of its rule in `faults.py` with a severity from borderline to
  gross (`_per_rep`);
* the camera (`synthetic_camera.py`): a 3D pinhole camera on either side of the athlete
  (facing left or right), up to 40 degrees off the side view, pitched, rolled, at a distance
  and field of view that frame the body at 30-90% of one of several landscape, portrait or
  square image sizes, the athlete anywhere in the frame, drifting, the camera panning;
  keypoints in pixels, or normalised by image width and height (with `image_size`);
* the pose estimator (`synthetic_camera.py`): jitter, per-joint confidences (the far side and
  the face lower), unconfident bursts at wrong positions, joints and whole frames not
  detected (null);
* the frame rate (15-60 fps).

The 7 signals come from `pose.keypoints_to_signals` (with the aspect correction the loader
applies to normalised keypoints); reps, features and faults are then *measured* (`waves`,
`faults`). A clip's labels are what the rules say about it -- `faults` for the clip and
`rep_faults` for every rep -- never the intent, so a borderline draw gets the label its
measurements give; a draw whose measured rep count differs from the intended one is redrawn.
The coaching text names the measured faults and, when a fault missed some reps, which reps.

Command line (one JSON file per clip, deterministic per seed; the flags of `wavepose-clips`):

  wavepose-clips synthetic --out DIR --n N [--seed S] [--exercises squat,pushup,deadlift,press]
      [--noise LEVEL] [--max_reps N] [--fps 24,30,60] [--nokeypoints]
  python -m wavepose_jax.clips synthetic --out DIR --n N ...   (the same)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from wavepose_jax.data import faults as fault_rules
from wavepose_jax.data import text as text_lib
from wavepose_jax.data import pose, synthetic_body, synthetic_camera, waves
from wavepose_jax.data.schema import EXERCISES, canonical_exercise
from wavepose_jax.data.synthetic_body import Body

FAULT_PROB = 0.3          # prior probability of each applicable fault
FAULTY_REP_FRAC = 0.6     # a drawn per-rep fault is imposed on at least this share of reps
MINORITY_PROB = 0.15      # a per-rep fault on fewer than half of the reps (not a clip fault)
BORDERLINE_PROB = 0.25    # share of measures drawn close to their rule threshold
MAX_ATTEMPTS = 8          # redraws when the measured rep count differs from the intended one
# Faults that cannot share a clip (both shrink the same range to almost nothing).
EXCLUSIVE = (("press_incomplete_lockout", "press_incomplete_lowering"),)
NORMALISED_PROB = 0.4     # keypoints normalised by image width and height (else pixels)


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What a clip is meant to show. Everything else is drawn when rendering; the clip's labels
    are what its measurement gives."""

    exercise: str
    reps: int
    faults: tuple[str, ...]
    fps: float
    noise: float = 1.0  # keypoint jitter and dropout level (0 = clean)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


DEFAULT_FPS = (15, 20, 24, 25, 30, 30, 48, 50, 60)
MAX_REPS = 15
LONG_SET_PROB = 0.25  # share of sets with a rep count uniform over 1..MAX_REPS


def draw_spec(rng: np.random.Generator, exercise: str | None = None, *,
              max_reps: int = MAX_REPS, fps_choices: Sequence[float] = DEFAULT_FPS,
              **overrides) -> ClipSpec:
    """Draws a clip's intent (1..`max_reps` reps, fps from `fps_choices`, faults).

    `overrides` fix any `ClipSpec` field.
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ClipSpec)}
    if unknown:
        raise TypeError(f"unknown overrides {sorted(unknown)}")
    ex = canonical_exercise(exercise) if exercise is not None else str(rng.choice(EXERCISES))
    if ex is None:
        raise ValueError(f"unknown exercise {exercise!r}; expected one of {EXERCISES}")
    # Mostly around 5 reps, but a quarter of the sets uniform over 1..max_reps, so long sets
    # (10-15 reps) and their counts ("12 reps") are common enough to learn.
    if "reps" in overrides:
        rng.binomial(MAX_REPS - 1, 0.3)  # drawn and unused: a seed's clip keeps its stream
        reps = int(overrides["reps"])
    elif rng.random() < LONG_SET_PROB:
        reps = int(rng.integers(1, max_reps + 1))
    else:
        reps = min(max_reps, 1 + int(rng.binomial(MAX_REPS - 1, 0.3)))
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if "faults" in overrides:
        drawn = tuple(overrides["faults"])
    else:
        drawn = tuple(f.id for f in fault_rules.faults_for(ex) if rng.random() < FAULT_PROB)
        for a, b in EXCLUSIVE:
            if a in drawn and b in drawn:
                drop = a if rng.random() < 0.5 else b
                drawn = tuple(f for f in drawn if f != drop)
        if reps < 3:
            drawn = tuple(f for f in drawn if f != "uneven_tempo")
    order = [f.id for f in fault_rules.faults_for(ex)]
    bad = [f for f in drawn if f not in order]
    if bad:
        raise ValueError(f"faults {bad} do not apply to {ex}")
    return ClipSpec(exercise=ex, reps=reps, faults=tuple(f for f in order if f in drawn),
                    fps=float(overrides.get("fps", rng.choice(fps_choices))),
                    noise=float(overrides.get("noise", 1.0)))


# ----------------------------------------------------------------------------- motion plan


def _level(rng: np.random.Generator) -> float:
    """How far a measure sits from its rule threshold: 0 (on it) .. 1 (far); a share
    `BORDERLINE_PROB` of the draws is under 0.15 (borderline)."""
    return _u(rng, 0.0, 0.15) if rng.random() < BORDERLINE_PROB else _u(rng, 0.15, 1.0)


def _per_rep(rng: np.random.Generator, faulty: np.ndarray, threshold: float, clean_end: float,
             faulty_end: float, spread: float = 0.08) -> np.ndarray:
    """Per-rep values of a rule's measure: faulty reps past `threshold` towards `faulty_end`
    (severity borderline to gross), clean reps towards `clean_end`; one level per side and
    clip (`_level`) plus a per-rep spread, so reps within a set differ."""
    n = faulty.size
    bad = np.clip(0.04 + 0.96 * _level(rng) + rng.normal(0.0, spread, n), 0.02, 1.0)
    good = np.clip(0.04 + 0.96 * _level(rng) + rng.normal(0.0, spread, n), 0.02, 1.0)
    return np.where(faulty, threshold + (faulty_end - threshold) * bad,
                    threshold + (clean_end - threshold) * good)


def _fault_reps(spec: ClipSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per per-rep fault of the exercise, which reps it is imposed on: a drawn fault on all reps
    or on a random >= `FAULTY_REP_FRAC` of them; sometimes an undrawn one on a minority."""
    n = spec.reps
    ids = [f.id for f in fault_rules.faults_for(spec.exercise)
           if f.id in fault_rules.PER_REP_FAULTS]
    out = {f: np.zeros(n, bool) for f in ids}
    for f in ids:
        if f in spec.faults:
            k = n if rng.random() < 0.5 else int(
                rng.integers(math.ceil(FAULTY_REP_FRAC * n), n + 1))
            out[f][rng.choice(n, size=k, replace=False)] = True
    blocked = {b if a in spec.faults else a for a, b in EXCLUSIVE if {a, b} & set(spec.faults)}
    spare = [f for f in ids if f not in spec.faults and f not in blocked]
    if n >= 3 and spare and rng.random() < MINORITY_PROB:
        f = spare[int(rng.integers(len(spare)))]
        out[f][rng.choice(n, size=int(rng.integers(1, (n - 1) // 2 + 1)), replace=False)] = True
    return out


@dataclasses.dataclass
class _Segment:
    duration: float
    a: dict[str, float]
    b: dict[str, float]
    windows: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


# _Keyframes of one set: the rest pose before it, then per rep the turning pose, the rest pose
# after it and the easing windows of the way back ({param: (u0, u1)}: the param moves within
# that part of the move). Every measure is drawn by `_per_rep` around the threshold of its rule
# in `faults.py`; `bad` says which reps carry which per-rep fault (`_fault_reps`).
_Keyframes = tuple[dict[str, float], list[dict[str, float]], list[dict[str, float]],
                  list[dict[str, tuple[float, float]]]]


def _squat_keyframes(n: int, body: Body, rng: np.random.Generator,
                     bad: dict[str, np.ndarray]) -> _Keyframes:
    """Rests standing, turns at the bottom; the knee angle is the rule's measure."""
    del body  # the squat's parameters are joint angles alone
    shallow, soft = bad["shallow_depth"], bad["incomplete_lockout"]
    lean_k, hip_off = _u(rng, 0.22, 0.42), _u(rng, -28, 4)

    def stand(knee):
        return {"lean": _u(rng, 0, 5), "knee": knee, "hip": min(179.5, knee + _u(rng, -4, 2))}

    rest0 = stand(_u(rng, 166, 179))
    # Soft lockouts stay clear of shallow bottoms when both occur.
    lock = _per_rep(rng, soft, fault_rules.SQUAT_MIN_LOCKOUT_DEG, 179.0,
                    146.0 if shallow.any() else 128.0)
    depth = _per_rep(rng, shallow, fault_rules.SQUAT_MAX_DEPTH_DEG, 58.0, 138.0)
    around = np.minimum(np.concatenate([[rest0["knee"]], lock[:-1]]), lock)
    depth = np.minimum(depth, around - 26.0)  # every rep a clear excursion
    turns = [{"lean": (180 - k) * lean_k, "knee": k, "hip": k + hip_off + _u(rng, -3, 3)}
             for k in depth]
    rests = [stand(v) for v in lock]
    return rest0, turns, rests, [{} for _ in range(n)]


def _deadlift_keyframes(n: int, body: Body, rng: np.random.Generator,
                        bad: dict[str, np.ndarray]) -> _Keyframes:
    """Rests standing, turns at the floor; the hips may open late on the way up."""
    del body  # the deadlift's parameters are joint angles alone
    soft, early = bad["deadlift_incomplete_lockout"], bad["deadlift_hips_rise_early"]

    def stand_dl(hip):
        return {"lean": _u(rng, 0, 5), "knee": _u(rng, 168, 179), "hip": hip}

    rest0 = stand_dl(_u(rng, 166, 179))
    lock = _per_rep(rng, soft, fault_rules.DEADLIFT_MIN_LOCKOUT_DEG, 179.0, 132.0)
    bottom_knee, bottom_hip = _u(rng, 105, 150), _u(rng, 55, 95)
    turns = [{"lean": _u(rng, 6, 20), "knee": bottom_knee + _u(rng, -5, 5),
              "hip": bottom_hip + _u(rng, -5, 5)} for _ in range(n)]
    rests = [stand_dl(v) for v in lock]
    # Hips rising early: the knees finish their extension before the hips have opened much;
    # lag 0 moves both together, lag 1 straightens the knees first, then the hips.
    lag = _per_rep(rng, early, 0.42, 0.0, 1.0)
    windows = [{"knee": (0.0, 1.0 - 0.55 * g), "lean": (0.0, 1.0 - 0.55 * g),
                "hip": (0.55 * g, 1.0)} for g in lag]
    return rest0, turns, rests, windows


def _pushup_keyframes(n: int, body: Body, rng: np.random.Generator,
                      bad: dict[str, np.ndarray]) -> _Keyframes:
    """Rests in the plank, turns at the bottom; `key` is the shoulders' height over the hands."""
    partial, sag = bad["pushup_partial_range"], bad["pushup_hip_sag"]
    top = body.arm * _u(rng, 0.93, 0.97)
    reach = _u(rng, -0.08, 0.12)

    def plank():
        return {"key": top, "hip": _u(rng, 168, 179.5), "knee": _u(rng, 170, 179.5),
                "reach_x": reach}

    rest0 = plank()
    bottom = _per_rep(rng, partial, fault_rules.PUSHUP_MAX_DEPTH, 0.1, min(0.85, top - 0.22))
    hip = _per_rep(rng, sag, fault_rules.PUSHUP_MIN_HIP_DEG, 179.0, 134.0)
    turns = [{"key": b, "hip": h, "knee": _u(rng, 170, 179.5), "reach_x": reach}
             for b, h in zip(bottom, hip)]
    rests = [plank() for _ in range(n)]
    return rest0, turns, rests, [{} for _ in range(n)]


def _press_keyframes(n: int, body: Body, rng: np.random.Generator,
                     bad: dict[str, np.ndarray]) -> _Keyframes:
    """Rests in the front rack, turns at the overhead lockout; `key` is the hands' height over
    the shoulders."""
    soft, short = bad["press_incomplete_lockout"], bad["press_incomplete_lowering"]
    lean, knee, hip = _u(rng, -7, 0), _u(rng, 170, 179.5), _u(rng, 170, 179.5)

    def rack(key):
        return {"key": key, "reach_x": _u(rng, 0.15, 0.28), "lean": lean, "knee": knee,
                "hip": hip}

    rest0 = rack(_u(rng, -0.05, 0.2))
    top = _per_rep(rng, soft, fault_rules.PRESS_MIN_LOCKOUT, 0.97 * body.arm, 0.5)
    low = _per_rep(rng, short, fault_rules.PRESS_MAX_DEPTH, -0.05, 0.62)
    low = np.minimum(low, top - 0.3)  # every rep a clear excursion
    turns = [{"key": v, "reach_x": _u(rng, -0.02, 0.06), "lean": lean, "knee": knee,
              "hip": hip} for v in top]
    rests = [rack(v) for v in low]
    return rest0, turns, rests, [{} for _ in range(n)]


_KEYFRAMES: dict[str, Callable[[int, Body, np.random.Generator, dict[str, np.ndarray]],
                               _Keyframes]] = {
    "squat": _squat_keyframes, "deadlift": _deadlift_keyframes,
    "pushup": _pushup_keyframes, "press": _press_keyframes}


def _tempo(spec: ClipSpec, rng: np.random.Generator, rushed: np.ndarray) -> np.ndarray:
    """Per-rep (eccentric, pause at the turn, concentric, rest after) durations [n, 4], seconds.

    Eccentrics are drawn around the `fast_eccentric` threshold (`rushed` reps under it); the
    spread of rep durations around the `uneven_tempo` one (a coefficient of variation from
    nearly 0 to 0.7). Rests vary per rep; some sets have one long breather.
    """
    n = spec.reps
    ecc_end, con = _u(rng, 1.0, 2.8), _u(rng, 0.5, 1.7)
    pause = 0.0 if rng.random() < 0.4 else _u(rng, 0.05, 1.3)
    e = _per_rep(rng, rushed, fault_rules.MIN_DESCENT_SEC, ecc_end, 0.2)
    uneven = "uneven_tempo" in spec.faults
    level = 0.04 + 0.96 * _level(rng)
    cv = (fault_rules.MAX_TEMPO_CV + (0.7 - fault_rules.MAX_TEMPO_CV) * level if uneven
          else fault_rules.MAX_TEMPO_CV * (1.0 - level))
    z = rng.normal(0.0, 1.0, n)
    m = np.clip(1.0 + cv * (z - z.mean()) / (z.std() or 1.0), 0.35, 3.0)
    e = np.where(rushed, e, np.maximum(e * m, fault_rules.MIN_DESCENT_SEC + 0.02))
    turn = pause * m
    if rushed.any() and not rushed.all() and rng.random() < 0.5:
        turn = turn + np.where(rushed, np.median(e[~rushed]) - e, 0.0)  # a pause in the hole
    rest = _u(rng, 0.0, 2.5) * rng.uniform(0.4, 1.6, n)
    if n > 2 and rng.random() < 0.2:
        rest[int(rng.integers(n - 1))] = _u(rng, 2.0, 5.0)
    return np.stack([e, turn, con * m, rest], -1)


def _cosine(u: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * u)


# Velocity profiles of a move, u in [0, 1] -> progress in [0, 1].
PROFILES = {
    "cosine": _cosine,
    "minimum_jerk": lambda u: u ** 3 * (10.0 - 15.0 * u + 6.0 * u ** 2),
    "smoothstep": lambda u: u * u * (3.0 - 2.0 * u),
}


def _tracks(spec: ClipSpec, body: Body, rng: np.random.Generator,
            bad: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-frame joint-parameter tracks of the whole clip: idle, the reps, idle."""
    rest0, turns, rests, windows = _KEYFRAMES[spec.exercise](spec.reps, body, rng, bad)
    d = _tempo(spec, rng, bad["fast_eccentric"])
    turn_first = spec.exercise != "press"  # press: concentric to the turn, eccentric back
    segs = [_Segment(_u(rng, 0.0, 4.0), rest0, rest0)]
    prev = rest0
    for i in range(spec.reps):
        to_turn, from_turn = (d[i, 0], d[i, 2]) if turn_first else (d[i, 2], d[i, 0])
        segs.append(_Segment(to_turn, prev, turns[i]))
        segs.append(_Segment(d[i, 1], turns[i], turns[i]))
        segs.append(_Segment(from_turn, turns[i], rests[i], windows[i]))
        segs.append(_Segment(d[i, 3] if i + 1 < spec.reps else _u(rng, 0.3, 4.0),
                             rests[i], rests[i]))
        prev = rests[i]
    # A velocity profile per clip; "asymmetric" skews each move (fast start or fast finish).
    name = ("cosine", "minimum_jerk", "smoothstep", "asymmetric")[int(rng.integers(4))]
    ease = PROFILES.get(name, _cosine)
    skew = rng.uniform(0.55, 1.8, len(segs)) if name == "asymmetric" else np.ones(len(segs))
    fps = spec.fps
    bounds = np.concatenate([[0.0], np.cumsum([s.duration for s in segs])])
    t = np.arange(int(bounds[-1] * fps) + 1) / fps
    idx = np.clip(np.searchsorted(bounds, t, side="right") - 1, 0, len(segs) - 1)
    dur = np.array([max(s.duration, 1e-9) for s in segs])[idx]
    u_seg = np.clip((t - bounds[idx]) / dur, 0.0, 1.0) ** skew[idx]
    out = {}
    for param in rest0:
        a = np.array([s.a[param] for s in segs])[idx]
        b = np.array([s.b[param] for s in segs])[idx]
        w0 = np.array([s.windows.get(param, (0.0, 1.0))[0] for s in segs])[idx]
        w1 = np.array([s.windows.get(param, (0.0, 1.0))[1] for s in segs])[idx]
        out[param] = a + (b - a) * ease(np.clip((u_seg - w0) / (w1 - w0), 0.0, 1.0))
    return out


def _render(spec: ClipSpec, rng: np.random.Generator) -> dict:
    """Animates and films one clip: keypoints [T, 17, 2] in pixels (y down; NaN = missing),
    confidence [T, 17], image size, and which reps carry which per-rep fault."""
    body = synthetic_body.draw_body(rng)
    style = [(_u(rng, -25, 12), _u(rng, 0, 35)),       # squat: arms reaching forward
             (_u(rng, -130, -110), _u(rng, 140, 160)),  # hands at a bar on the back
             (_u(rng, -100, -80), _u(rng, 0, 20))][int(rng.integers(3))]  # arms down
    bad = _fault_reps(spec, rng)
    tracks = _tracks(spec, body, rng, bad)
    joints = synthetic_body.sagittal_joints(spec.exercise, body, tracks, style)
    kp, near, size = synthetic_camera.film(synthetic_camera.to_world(joints, body, rng), rng)
    kp, conf = synthetic_camera.estimator_noise(kp, near, size, spec.noise, rng)
    return {"keypoints": kp, "confidence": conf, "image_size": size, "imposed": bad}


def render_clip(spec: ClipSpec, rng: np.random.Generator) -> dict:
    """Renders and measures one draw of `spec`.

    Returns keypoints (in the clip file's convention: pixels, or normalised by the image size
    with `normalised` True), confidence, image_size, signals, analysis, the measured clip
    `faults`, the measured per-rep `rep_faults` and the per-rep faults `imposed` on purpose.
    """
    out = _render(spec, rng)
    kp, size = out["keypoints"], out["image_size"]
    normalised = rng.random() < NORMALISED_PROB
    if normalised:
        kp = kp / np.array(size, np.float64)
    signals = pose.keypoints_to_signals(kp, out["confidence"], spec.fps,
                                        aspect_ratio=size[0] / size[1] if normalised else 1.0)
    analysis = waves.analyze_reps(signals, spec.fps, spec.exercise)
    return {**out, "keypoints": kp, "normalised": normalised, "signals": signals,
            "analysis": analysis, "faults": fault_rules.detect_faults(analysis),
            "rep_faults": fault_rules.per_rep_faults(analysis)}


def _round(x: np.ndarray, decimals: int) -> list:
    """Rounded nested lists; NaN -> null."""
    a = np.round(np.asarray(x, dtype=np.float64), decimals)
    if not np.isnan(a).any():
        return a.tolist()
    obj = a.astype(object)
    obj[np.isnan(a)] = None
    return obj.tolist()


def generate_clip(rng_or_seed: np.random.Generator | int | Sequence[int],
                  exercise: str | None = None, *, video_id: str | None = None,
                  keypoints: bool = True, max_reps: int = MAX_REPS,
                  fps_choices: Sequence[float] = DEFAULT_FPS, **overrides) -> dict:
    """One synthetic clip as a JSON-ready dict (the clip contract of docs/architecture.md).

    Args:
      rng_or_seed: a numpy Generator, or a seed for `np.random.default_rng`.
      exercise: exercise id or alias; drawn when None.
      video_id: the clip id; derived from the draw when None.
      keypoints: include `keypoints` / `confidence` / `image_size` (the bulk of the file).
      max_reps, fps_choices: the range of drawn rep counts and frame rates.
      **overrides: fix `ClipSpec` fields: reps, faults (the intended ones), fps, noise.

    Returns:
      keypoints [T][17][2] (pixels, or normalised by `image_size`; null = not detected),
      confidence [T][17], image_size, the 7 signals, wave_features (with the rules' per-rep
      verdicts), faults and rep_faults (measured: what `faults.py` says about this clip and
      each of its reps), reps (ground truth, equal to the measured count unless no draw agreed
      within `MAX_ATTEMPTS`), fps, n_frames, exercise, video_id, expert, CAMERA_POSITION and
      LANGUAGE (ground-truth coaching text, from the measured labels).
    """
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else \
        np.random.default_rng(rng_or_seed)
    spec = draw_spec(rng, exercise, max_reps=max_reps, fps_choices=fps_choices, **overrides)
    for _ in range(MAX_ATTEMPTS):
        out = render_clip(spec, rng)
        if len(out["analysis"].reps) == spec.reps:
            break
    analysis, signals = out["analysis"], out["signals"]
    features = fault_rules.wave_features(signals, spec.fps, spec.exercise, analysis=analysis)
    tempo = analysis.tempo_sec or 0.0
    rep_faults = out["rep_faults"] if len(out["rep_faults"]) == spec.reps else None
    clip = {"video_id": video_id or f"synth-{int(rng.integers(1 << 62)):016x}",
            "exercise": spec.exercise, "fps": spec.fps,
            "n_frames": int(out["keypoints"].shape[0]), "reps": spec.reps,
            "faults": list(out["faults"]), "expert": not out["faults"],
            "CAMERA_POSITION": "side"}
    if rep_faults is not None:
        clip["rep_faults"] = rep_faults
    if keypoints:
        clip["keypoints"] = _round(out["keypoints"], 5 if out["normalised"] else 1)
        clip["confidence"] = _round(out["confidence"], 2)
        clip["image_size"] = list(out["image_size"])
    clip.update({name: _round(v, 4) for name, v in signals.items()})
    clip["wave_features"] = features.to_json()
    clip["LANGUAGE"] = text_lib.compose_feedback(spec.exercise, spec.reps, out["faults"],
                                                 tempo, rng, rep_faults=rep_faults)
    return clip


def _write_clip(out: str, seed: int, i: int, pool: Sequence[str], options: dict) -> str:
    """Draws clip i of a dataset (it depends only on (seed, i)) and writes it; returns the path."""
    rng = np.random.default_rng([seed, i])
    ex = pool[int(rng.integers(len(pool)))]
    clip = generate_clip(rng, ex, video_id=f"synth-s{seed}-{i:05d}", **options)
    path = os.path.join(out, clip["video_id"] + ".json")
    with open(path, "w") as fh:
        fh.write(json.dumps(clip, separators=(",", ":")))  # the C encoder: fast
    return path


def write_dataset(out: str | os.PathLike, n: int, seed: int, *,
                  exercises: Sequence[str] | None = None, noise: float = 1.0,
                  keypoints: bool = True, max_reps: int = MAX_REPS,
                  fps_choices: Sequence[float] = DEFAULT_FPS, progress: bool = True,
                  workers: int = 1) -> list[str]:
    """Writes `n` clips to `out/<video_id>.json`; clip i depends only on (seed, i), so the
    files are the same for any number of `workers` (processes; 1 = this one).

    Returns the written paths.
    """
    pool = [canonical_exercise(e) for e in exercises] if exercises else list(EXERCISES)
    if None in pool:
        raise ValueError(f"unknown exercise in {list(exercises)}; expected some of {EXERCISES}")
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    options = dict(keypoints=keypoints, max_reps=max_reps, fps_choices=tuple(fps_choices),
                   noise=noise)
    jobs = [(out, seed, i, pool, options) for i in range(n)]
    if workers <= 1 or n < 2 * workers:
        return [_write_clip(*job) for job in tqdm(jobs, desc="clips", disable=not progress)]
    # Spawned (not forked) workers: the caller may already run JAX threads.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as executor:
        results = executor.map(_write_clip, *zip(*jobs), chunksize=max(1, n // (8 * workers)))
        return list(tqdm(results, total=n, desc="clips", disable=not progress))
