"""A second, independent clip generator: the out-of-distribution benchmark. Never training data.

`synthetic.py` makes the training clips; a model that only ever saw them may have learned that
generator rather than the exercises. The clips written here are drawn another way, and share
with synthetic.py nothing but the clip format and the fault rules of `faults.py` that define
the labels:

* Body (`othergen_body.py`): segment lengths in metres from a standing height (1.50-1.95 m)
  by anthropometric ratios with a personal jitter, and a real hip and shoulder width, so the
  left and right joints are apart in depth.
* Kinematics (`othergen_body.py`), one driver per exercise: the squat is driven by the knee
  angle alone (shin lean and torso lean follow the knee flexion by personal coefficients); the
  push-up by the height of the shoulders above the floor (the body angle in closed form, a sag
  bend at the hip); the deadlift by separate knee and hip angles (the hips may lag the knees
  on the way up); the press by the height of the hands above the shoulders (the elbow by the
  law of cosines).
* Motion: minimum-jerk or smoothstep moves, idle time before and after, rests between reps.
* Camera: a pinhole camera in 3D (yaw up to 25 degrees off the side view, either side, pitch,
  roll, field of view 45-75 degrees, distance from the framing), image sizes in landscape and
  portrait, a slow pan; keypoints in pixels or normalised by width and height (with
  `image_size`).
* Noise: pixel jitter, a slow per-joint wobble, a weaker far side, occlusion bursts with wrong
  positions, and a few frames with no detection at all (null keypoints).

Faults are imposed with margins around the rule thresholds (the truth is the intent: `faults`,
`rep_faults`); a per-rep fault of the clip hits at least 60% of its reps, and some clips have a
fault on a minority of reps (in `rep_faults`, but not a clip fault). Clips hold keypoints only,
as a user's file would: the loader derives the signals and the wave features.

Every clip carries `"benchmark": "othergen"`; `dataset.prepare_dataset` refuses such clips,
so the benchmark never becomes training data. Nothing here imports `synthetic`.

Command line (one JSON file per clip, deterministic per seed; the flags of `wavepose-clips`):

    wavepose-clips other --out DIR --n N [--seed S] [--exercises squat,press]
    python -m wavepose_jax.clips other --out DIR --n N [--seed S] [--exercises ...]  (the same)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from wavepose_jax.data import faults as fault_rules
from wavepose_jax.data import othergen_body
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.schema import EXERCISES, canonical_exercise

BENCHMARK = "othergen"     # the `benchmark` field of every clip written here
FPS_CHOICES = (20.0, 24.0, 25.0, 30.0, 50.0, 60.0)
IMAGE_SIZES = ((1920, 1080), (1280, 720), (960, 540), (640, 480), (1080, 1920), (720, 1280))
MAX_REPS = 12
FAULT_PROB = 0.3           # each applicable fault of the exercise
MINORITY_PROB = 0.15       # a per-rep fault on fewer than half of the reps (no clip fault)
FAULTY_SHARE = 0.6         # a clip's per-rep fault hits at least this share of its reps


# ----------------------------------------------------------------------------- motion timeline

PROFILES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "minimum_jerk": lambda u: u ** 3 * (10 - 15 * u + 6 * u ** 2),
    "smoothstep": lambda u: u * u * (3 - 2 * u),
}


@dataclasses.dataclass
class _Move:
    """One stretch of the timeline: each driver goes from a to b within [w0, w1] of it."""

    seconds: float
    start: dict[str, float]
    end: dict[str, float]
    window: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


def _play(moves: list[_Move], fps: float, profile: Callable) -> dict[str, np.ndarray]:
    """Samples the drivers at `fps`: {driver: [T]}."""
    edges = np.concatenate([[0.0], np.cumsum([m.seconds for m in moves])])
    t = np.arange(int(edges[-1] * fps) + 1) / fps
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(moves) - 1)
    out = {}
    for name in moves[0].start:
        values = np.empty(t.size)
        for k, m in enumerate(moves):
            sel = which == k
            u = (t[sel] - edges[k]) / max(m.seconds, 1e-9)
            w0, w1 = m.window.get(name, (0.0, 1.0))
            s = profile(np.clip((u - w0) / (w1 - w0), 0.0, 1.0))
            values[sel] = m.start[name] + (m.end[name] - m.start[name]) * s
        out[name] = values
    return out


# ----------------------------------------------------------------------------- ground truth


@dataclasses.dataclass(frozen=True)
class Truth:
    """What a clip shows: reps, clip faults, per-rep faults (per-rep rules only)."""

    exercise: str
    reps: int
    faults: tuple[str, ...]
    rep_faults: tuple[tuple[str, ...], ...]


def draw_truth(rng: np.random.Generator, exercise: str, reps: int | None = None) -> Truth:
    """The clip's reps and faults: each applicable fault with `FAULT_PROB`, on >= 60% of the
    reps (a per-rep fault), and sometimes a per-rep fault on a minority of reps."""
    ex = canonical_exercise(exercise)
    if ex is None:
        raise ValueError(f"unknown exercise {exercise!r}; expected one of {EXERCISES}")
    n = int(reps if reps is not None else rng.integers(1, MAX_REPS + 1))
    if n < 1:
        raise ValueError(f"reps must be >= 1, got {n}")
    ids = [f.id for f in fault_rules.faults_for(ex)]
    clip = {f for f in ids if rng.random() < FAULT_PROB}
    if {"press_incomplete_lockout", "press_incomplete_lowering"} <= clip:
        clip.discard(str(rng.choice(["press_incomplete_lockout", "press_incomplete_lowering"])))
    if n < 3:
        clip.discard("uneven_tempo")
    per_rep = {f: np.zeros(n, bool) for f in ids if f != "uneven_tempo"}
    for f in per_rep:
        if f in clip:
            k = n if rng.random() < 0.5 else int(rng.integers(math.ceil(FAULTY_SHARE * n), n + 1))
            per_rep[f][rng.choice(n, k, replace=False)] = True
    spare = [f for f in per_rep if f not in clip
             and not (f.startswith("press_") and any(c.startswith("press_") for c in clip))]
    if n >= 3 and spare and rng.random() < MINORITY_PROB:
        f = str(rng.choice(spare))
        per_rep[f][rng.choice(n, int(rng.integers(1, (n - 1) // 2 + 1)), replace=False)] = True
    order = [f for f in ids if f in clip]
    return Truth(ex, n, tuple(order),
                 tuple(tuple(f for f in ids if f in per_rep and per_rep[f][i]) for i in range(n)))


def _durations(rng: np.random.Generator, truth: Truth, rushed: np.ndarray) -> np.ndarray:
    """Per rep (eccentric, pause at the turn, concentric, rest after) in seconds, [n, 4].

    Even tempo keeps the timed rep durations' CV under 0.06, uneven tempo over 0.4.
    """
    n = truth.reps
    ecc, pause, con = rng.uniform(1.0, 2.4), rng.uniform(0.0, 0.6), rng.uniform(0.6, 1.6)
    uneven = "uneven_tempo" in truth.faults
    for _ in range(200):
        if uneven:
            scale = np.where(rng.random(n) < 0.5, rng.uniform(0.5, 0.7, n),
                             rng.uniform(1.6, 2.2, n))
        else:
            scale = rng.uniform(0.96, 1.04, n)
        e = np.where(rushed, rng.uniform(0.25, 0.42, n), np.maximum(ecc * scale, 0.95))
        # A rushed rep among unrushed ones spends the time it saved paused at the turn.
        saved = np.where(rushed & ~rushed.all(), np.maximum(ecc * scale, 0.95) - e, 0.0)
        d = np.stack([e, pause * scale + saved, con * scale, rng.uniform(0.0, 2.0, n)], -1)
        timed = 0.8 * (d[:, 0] + d[:, 2]) + d[:, 1]  # what the rep segmentation times
        cv = timed.std() / timed.mean()
        if (cv > 0.4) if uneven else (cv < 0.06):
            return d
    raise RuntimeError("could not draw a tempo for the truth")


# ----------------------------------------------------------------------------- camera, noise


def _camera(rng: np.random.Generator, world: np.ndarray, image: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Films the clip with a pinhole camera that frames it.

    Args:
      world: [T, 17, 3] joints (x forward, y up, z to the athlete's left), metres.
      image: (width, height) in pixels.

    Returns:
      keypoints [T, 17, 2] in pixels (image y down), and the [17] mask of joints on the
      camera's side of the body.
    """
    w, h = image
    t = world.shape[0]
    side = 1.0 if rng.random() < 0.5 else -1.0     # which side of the body faces the camera
    yaw = np.radians(rng.uniform(-25, 25))
    pitch = np.radians(rng.uniform(-4, 14))          # mostly looking slightly down
    roll = np.radians(rng.uniform(-3, 3))
    focal = (w / 2) / math.tan(math.radians(rng.uniform(45, 75)) / 2)
    lo, hi = world.reshape(-1, 3).min(0), world.reshape(-1, 3).max(0)
    direction = np.array([math.sin(yaw) * math.cos(pitch) * side, math.sin(pitch),
                          math.cos(yaw) * math.cos(pitch) * side])
    forward = -direction
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    right, up = (math.cos(roll) * right + math.sin(roll) * up,
                 -math.sin(roll) * right + math.cos(roll) * up)
    # Distance: the body's extent fills 35-75% of the image along its tighter side.
    extent = max((hi - lo)[0] / w, (hi - lo)[1] / h, (hi - lo)[2] / w)
    distance = focal * extent / rng.uniform(0.35, 0.75)
    pan = rng.normal(0, 0.05, 3) * np.array([1.0, 0.3, 1.0])   # the aim drifts over the clip
    eye = (lo + hi) / 2 + distance * direction
    rel = world - eye - np.linspace(0, 1, t)[:, None, None] * pan
    z = rel @ forward
    xy = np.stack([focal * (rel @ right) / z, -focal * (rel @ up) / z], -1)
    # Placed anywhere in the image that keeps the whole clip inside a 3% margin.
    low, high = xy.reshape(-1, 2).min(0), xy.reshape(-1, 2).max(0)
    size = np.array([w, h], np.float64)
    room = np.maximum(size * 0.94 - (high - low), 0.0)
    xy = xy - low + size * 0.03 + rng.uniform(0, 1, 2) * room
    return xy, world[0, :, 2] * side > 0


def _noisy(rng: np.random.Generator, kp: np.ndarray, near: np.ndarray,
           image: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Jitter, wobble, occlusion bursts and missing frames, kept inside the image.

    Returns (keypoints [T, 17, 2] with NaN for undetected frames, confidence [T, 17]).
    """
    t = kp.shape[0]
    body_px = float(np.ptp(kp[..., 1])) or 1.0
    jitter = rng.uniform(0.002, 0.008) * body_px
    wobble = np.cumsum(rng.normal(0, 1, (t, 17, 2)), 0)
    wobble -= np.linspace(0, 1, t)[:, None, None] * wobble[-1]  # a bridge: no net drift
    wobble *= rng.uniform(0.0, 0.004) * body_px / max(np.abs(wobble).max(), 1e-9)
    kp = kp + rng.normal(0, jitter, kp.shape) + wobble
    base = np.where(near, rng.uniform(0.75, 0.97, 17), rng.uniform(0.35, 0.75, 17))
    base[0] = rng.uniform(0.6, 0.95)                  # the nose
    conf = np.clip(base + rng.normal(0, 0.05, (t, 17)), 0.0, 1.0)
    for _ in range(rng.poisson(t * 0.004)):           # occlusion bursts
        j, s = int(rng.integers(17)), int(rng.integers(t))
        e = min(t, s + int(rng.integers(2, 10)))
        conf[s:e, j] = rng.uniform(0.0, 0.2)
        kp[s:e, j] += rng.normal(0, 0.15 * body_px, 2)
    kp = np.clip(kp, 0.0, np.array(image, np.float64) - 1.0)
    missing = rng.random(t) < rng.uniform(0.0, 0.02)  # frames without a detection
    kp[missing] = np.nan
    conf[missing] = 0.0
    return kp, conf


# ----------------------------------------------------------------------------- clips


def _round(x: np.ndarray, decimals: int) -> list:
    """Rounded nested lists, NaN -> null."""
    a = np.round(np.asarray(x, np.float64), decimals).astype(object)
    a[np.isnan(np.asarray(x, np.float64))] = None
    return a.tolist()


def generate_clip(rng_or_seed: np.random.Generator | int | Sequence[int], exercise: str, *,
                  video_id: str | None = None, reps: int | None = None) -> dict:
    """One benchmark clip as a JSON-ready dict (keypoints and the ground truth, no signals).

    Returns: video_id, benchmark, exercise, fps, n_frames, image_size, keypoints [T][17][2]
    (pixels, or normalised by image width and height; null = no detection), confidence
    [T][17], reps, faults, rep_faults (per rep, the per-rep faults it shows) and LANGUAGE.
    """
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else \
        np.random.default_rng(rng_or_seed)
    truth = draw_truth(rng, exercise, reps)
    n = truth.reps
    person = othergen_body.draw_person(rng)
    motion = othergen_body.MODELS[truth.exercise](person, rng)
    faulty = {f.id: np.array([f.id in r for r in truth.rep_faults])
              for f in fault_rules.faults_for(truth.exercise)}
    rest0, turns, rests, windows = motion.plan(rng, n, faulty)
    d = _durations(rng, truth, faulty["fast_eccentric"])
    moves = [_Move(float(rng.uniform(0.5, 3.0)), rest0, rest0)]
    before = rest0
    for i in range(n):
        into, out = (d[i, 0], d[i, 2]) if motion.turn_first else (d[i, 2], d[i, 0])
        moves += [_Move(into, before, turns[i]), _Move(d[i, 1], turns[i], turns[i]),
                  _Move(out, turns[i], rests[i], windows[i] if motion.turn_first else {}),
                  _Move(d[i, 3] if i + 1 < n else float(rng.uniform(0.5, 3.0)),
                        rests[i], rests[i])]
        before = rests[i]
    fps = float(rng.choice(FPS_CHOICES))
    profile = PROFILES[str(rng.choice(list(PROFILES)))]
    joints = motion.pose(_play(moves, fps, profile))
    world = othergen_body.to_coco(joints, person)
    t = world.shape[0]
    world[..., 0] += np.linspace(0, rng.uniform(-0.25, 0.25), t)[:, None]  # stepping about
    image = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    kp, near = _camera(rng, world, image)
    kp, conf = _noisy(rng, kp, near, image)
    normalised = rng.random() < 0.4
    if normalised:
        kp = kp / np.array(image, np.float64)
    tempo = float(np.mean(d[:, :3].sum(1)))
    clip = {
        "video_id": video_id or f"{BENCHMARK}-{int(rng.integers(1 << 62)):016x}",
        "benchmark": BENCHMARK, "exercise": truth.exercise, "fps": fps, "n_frames": t,
        "image_size": list(image),
        "keypoints": _round(kp, 5 if normalised else 1), "confidence": _round(conf, 2),
        "reps": n, "faults": list(truth.faults),
        "rep_faults": [list(r) for r in truth.rep_faults],
        "LANGUAGE": text_lib.compose_feedback(truth.exercise, n, truth.faults, tempo, rng,
                                              rep_faults=truth.rep_faults),
    }
    return clip


def write_dataset(out: str | os.PathLike, n: int, seed: int, *,
                  exercises: Sequence[str] | None = None) -> list[str]:
    """Writes `n` clips to `out/<video_id>.json`, exercises in turn; clip i depends only on
    (seed, i). Returns the paths."""
    pool = [canonical_exercise(e) for e in exercises] if exercises else list(EXERCISES)
    if not pool or None in pool:
        raise ValueError(f"unknown exercise in {exercises}; expected some of {EXERCISES}")
    os.makedirs(out, exist_ok=True)
    paths = []
    for i in range(n):
        clip = generate_clip(np.random.default_rng([seed, i, 7]), pool[i % len(pool)],
                             video_id=f"{BENCHMARK}-s{seed}-{i:05d}")
        path = os.path.join(out, clip["video_id"] + ".json")
        with open(path, "w") as fh:
            fh.write(json.dumps(clip, separators=(",", ":")))  # the C encoder: fast
        paths.append(path)
    return paths
