"""Synthetic exercise clips: a COCO-17 skeleton doing squats, push-ups, deadlifts and presses.

A side-view stick figure is posed by 2D forward kinematics from segment lengths and joint
angles (inverse kinematics for hands fixed on the floor or pressing a bar), animated rep by
rep, and filmed by a random camera (scale, offset, slight roll, facing left or right). Each
clip draws body proportions, fps (24-60), 1-15 reps, tempo, depth, pauses at the top and
bottom, idle time before and after, keypoint jitter and confidence drops (the far side of
the body is less confident), and its faults: each fault of the exercise with probability
`FAULT_PROB`, imposed on at least 60% of the reps (rushed descents on all of them) while the
clean reps stay clearly inside the good range, so the rules of `wavepose_jax.data.faults` are
unambiguous. The 7 signals come from `pose.keypoints_to_signals`, the features and faults are
then *measured* (`waves`, `faults.detect_faults`); a draw whose measurement disagrees with its
intended reps or faults is redrawn, so labels, features and text always agree.

Command line (one JSON file per clip, deterministic per seed):

  python -m wavepose_jax.data.synthetic --out DIR --n N --seed S \
      [--exercises squat,pushup,deadlift,press] [--noise LEVEL] [--max-reps N] \
      [--fps 24,30,60] [--no-keypoints]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from wavepose_jax.data import faults as fault_rules
from wavepose_jax.data import pose, waves
from wavepose_jax.data.schema import EXERCISES, canonical_exercise

FAULT_PROB = 0.3          # prior probability of each applicable fault
FAULTY_REP_FRAC = 0.6     # a drawn per-rep fault is imposed on at least this share of reps
MAX_ATTEMPTS = 8          # redraws when the measurement disagrees with the intent
# Faults that cannot share a clip (both shrink the same range to almost nothing).
EXCLUSIVE = (("press_incomplete_lockout", "press_incomplete_lowering"),)

_J = {name: i for i, name in enumerate(pose.COCO17)}


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What a clip shows: the ground truth. Everything else is drawn when rendering."""

    exercise: str
    reps: int
    faults: tuple[str, ...]
    fps: float
    noise: float = 1.0  # keypoint jitter and confidence-drop level (0 = clean)


@dataclasses.dataclass(frozen=True)
class Body:
    """Segment lengths in torso units (shoulder-hip distance = 1)."""

    thigh: float
    shank: float
    upper_arm: float
    forearm: float

    @property
    def arm(self) -> float:
        return self.upper_arm + self.forearm


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


DEFAULT_FPS = (24, 25, 30, 30, 30, 48, 60)
MAX_REPS = 15


def draw_spec(rng: np.random.Generator, exercise: str | None = None, *,
              max_reps: int = MAX_REPS, fps_choices: Sequence[float] = DEFAULT_FPS,
              **overrides) -> ClipSpec:
    """Draws a clip's ground truth (1..`max_reps` reps, fps from `fps_choices`).

    `overrides` fix any `ClipSpec` field.
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ClipSpec)}
    if unknown:
        raise TypeError(f"unknown overrides {sorted(unknown)}")
    ex = canonical_exercise(exercise) if exercise is not None else str(rng.choice(EXERCISES))
    if ex is None:
        raise ValueError(f"unknown exercise {exercise!r}; expected one of {EXERCISES}")
    reps = int(overrides.get("reps", min(max_reps, 1 + rng.binomial(MAX_REPS - 1, 0.3))))
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


# ----------------------------------------------------------------------------- kinematics


def _dir(deg: np.ndarray) -> np.ndarray:
    """Unit vectors [T, 2] at angles (degrees from +x, counter-clockwise)."""
    r = np.radians(deg)
    return np.stack([np.cos(r), np.sin(r)], -1)


def _ik_elbow(shoulder: np.ndarray, wrist: np.ndarray, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Elbow of a 2-link arm reaching `wrist` (clamped to the reachable range), bent clockwise.

    Returns (elbow, wrist) [T, 2] each.
    """
    l1, l2 = body.upper_arm, body.forearm
    d = wrist - shoulder
    dist = np.linalg.norm(d, axis=-1)
    reach = np.clip(dist, abs(l1 - l2) + 1e-3, 0.999 * (l1 + l2))
    unit = d / np.maximum(dist, 1e-9)[:, None]
    wrist = shoulder + unit * reach[:, None]
    cos_alpha = (l1 ** 2 + reach ** 2 - l2 ** 2) / (2 * l1 * reach)
    alpha = np.degrees(np.arccos(np.clip(cos_alpha, -1.0, 1.0)))
    base = np.degrees(np.arctan2(unit[:, 1], unit[:, 0]))
    return shoulder + l1 * _dir(base - alpha), wrist


def _legs_and_torso(body: Body, lean, knee, hip, ankle) -> dict[str, np.ndarray]:
    """Standing chain ankle -> knee -> hip -> shoulder from the shank lean and joint angles."""
    shank_dir = 90.0 - lean
    thigh_dir = shank_dir + (180.0 - knee)
    torso_dir = thigh_dir - (180.0 - hip)
    knee_p = ankle + body.shank * _dir(shank_dir)
    hip_p = knee_p + body.thigh * _dir(thigh_dir)
    return {"ankle": ankle, "knee": knee_p, "hip": hip_p, "shoulder": hip_p + _dir(torso_dir)}


def _pose(ex: str, body: Body, p: dict[str, np.ndarray], arm_style: tuple[float, float]
          ) -> dict[str, np.ndarray]:
    """Near-side joints [T, 2] (world, y up, facing +x) from the parameter tracks `p`."""
    t = next(iter(p.values())).shape[0]
    if ex in ("squat", "deadlift"):
        j = _legs_and_torso(body, p["lean"], p["knee"], p["hip"], np.zeros((t, 2)))
        arm_dir, elbow_bend = ((-90.0, 0.0) if ex == "deadlift" else arm_style)
        j["elbow"] = j["shoulder"] + body.upper_arm * _dir(np.full(t, arm_dir))
        j["wrist"] = j["elbow"] + body.forearm * _dir(np.full(t, arm_dir + elbow_bend))
    elif ex == "press":
        j = _legs_and_torso(body, p["lean"], p["knee"], p["hip"], np.zeros((t, 2)))
        target = j["shoulder"] + np.stack([p["reach_x"], p["key"]], -1)
        j["elbow"], j["wrist"] = _ik_elbow(j["shoulder"], target, body)
    else:  # push-up: feet on the floor, body angle solved so the shoulders sit at `key`
        floor_ankle, floor_wrist = 0.05, 0.03

        def shoulder_at(beta):
            thigh_dir = beta - (180.0 - p["knee"])
            torso_dir = thigh_dir + (180.0 - p["hip"])
            return (body.shank * _dir(beta) + body.thigh * _dir(thigh_dir) + _dir(torso_dir)
                    + np.array([0.0, floor_ankle]))

        lo, hi = np.zeros(t), np.full(t, 70.0)
        for _ in range(40):  # bisection on the body angle, vectorised over frames
            mid = (lo + hi) / 2
            above = shoulder_at(mid)[:, 1] > floor_wrist + p["key"]
            hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
        beta = (lo + hi) / 2
        thigh_dir = beta - (180.0 - p["knee"])
        ankle = np.tile([0.0, floor_ankle], (t, 1))
        knee_p = ankle + body.shank * _dir(beta)
        hip_p = knee_p + body.thigh * _dir(thigh_dir)
        shoulder = shoulder_at(beta)
        wrist_x = shoulder[0, 0] + p["reach_x"][0]
        target = np.stack([np.full(t, wrist_x), np.full(t, floor_wrist)], -1)
        elbow, wrist = _ik_elbow(shoulder, target, body)
        j = {"ankle": ankle, "knee": knee_p, "hip": hip_p, "shoulder": shoulder,
             "elbow": elbow, "wrist": wrist}
    up = j["shoulder"] - j["hip"]
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    fwd = np.stack([up[:, 1], -up[:, 0]], -1)  # torso direction turned clockwise: the face
    head = j["shoulder"] + 0.35 * up
    j["nose"] = head + 0.12 * fwd
    j["eye"] = head + 0.09 * fwd + 0.05 * up
    j["ear"] = head - 0.03 * fwd + 0.03 * up
    return j


# ----------------------------------------------------------------------------- motion plan


def _ease(u: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0.0, 1.0))


@dataclasses.dataclass
class _Segment:
    duration: float
    a: dict[str, float]
    b: dict[str, float]
    windows: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


_HIPS_EARLY = {"knee": (0.0, 0.45), "lean": (0.0, 0.45), "hip": (0.4, 1.0)}


def _keyframes(spec: ClipSpec, body: Body, rng: np.random.Generator):
    """Rest pose before the set, then per rep the turning pose, the rest pose after it and the
    easing windows of the way back ({param: (u0, u1)}: the param moves within that part)."""
    ex, n, f = spec.exercise, spec.reps, set(spec.faults)
    k = math.ceil(FAULTY_REP_FRAC * n)

    def faulty(fid: str) -> np.ndarray:
        mask = np.zeros(n, bool)
        if fid in f:
            mask[rng.choice(n, size=int(rng.integers(k, n + 1)), replace=False)] = True
        return mask

    if ex == "squat":
        shallow, soft = faulty("shallow_depth"), faulty("incomplete_lockout")
        both = shallow & soft

        def stand(knee):
            return {"lean": _u(rng, 1, 4), "knee": knee, "hip": min(179.0, knee + _u(rng, -3, 2))}

        rest0 = stand(_u(rng, 170, 178))
        turns, rests = [], []
        for i in range(n):
            knee = (_u(rng, 114, 118) if both[i] else _u(rng, 114, 126) if shallow[i]
                    else _u(rng, 70, 92))
            turns.append({"lean": (180 - knee) * _u(rng, 0.3, 0.38), "knee": knee,
                          "hip": knee + _u(rng, -20, 0)})
            rests.append(stand(_u(rng, 150, 154) if both[i] else _u(rng, 140, 152) if soft[i]
                               else _u(rng, 170, 178)))
    elif ex == "deadlift":
        soft = faulty("deadlift_incomplete_lockout")

        def stand_dl(hip):
            return {"lean": _u(rng, 1, 4), "knee": _u(rng, 170, 178), "hip": hip}

        rest0 = stand_dl(_u(rng, 170, 178))
        turns = [{"lean": _u(rng, 8, 18), "knee": _u(rng, 115, 140), "hip": _u(rng, 65, 90)}
                 for _ in range(n)]
        rests = [stand_dl(_u(rng, 140, 152) if soft[i] else _u(rng, 170, 178)) for i in range(n)]
        early = faulty("deadlift_hips_rise_early")  # knees extend first, the hip angle follows
        return rest0, turns, rests, [_HIPS_EARLY if early[i] else {} for i in range(n)]
    elif ex == "pushup":
        partial, sag = faulty("pushup_partial_range"), faulty("pushup_hip_sag")
        top = body.arm * _u(rng, 0.95, 0.97)
        reach = _u(rng, -0.05, 0.1)

        def plank():
            return {"key": top, "hip": _u(rng, 170, 179), "knee": _u(rng, 172, 179),
                    "reach_x": reach}

        rest0 = plank()
        turns = [{"key": _u(rng, 0.6, 0.7) if partial[i] else _u(rng, 0.18, 0.38),
                  "hip": _u(rng, 138, 150) if sag[i] else _u(rng, 170, 179),
                  "knee": _u(rng, 172, 179), "reach_x": reach} for i in range(n)]
        rests = [plank() for _ in range(n)]
    else:  # press: rests in the front rack, turns at the overhead lockout
        soft, short = faulty("press_incomplete_lockout"), faulty("press_incomplete_lowering")
        lean, knee, hip = _u(rng, -5, -1), _u(rng, 172, 179), _u(rng, 172, 179)

        def rack(key):
            return {"key": key, "reach_x": _u(rng, 0.18, 0.25), "lean": lean, "knee": knee,
                    "hip": hip}

        rest0 = rack(_u(rng, 0.0, 0.15))
        turns = [{"key": _u(rng, 0.55, 0.68) if soft[i] else body.arm * _u(rng, 0.95, 0.98),
                  "reach_x": _u(rng, 0.0, 0.05), "lean": lean, "knee": knee, "hip": hip}
                 for i in range(n)]
        rests = [rack(_u(rng, 0.5, 0.65) if short[i] else _u(rng, 0.0, 0.15)) for i in range(n)]
    return rest0, turns, rests, [{} for _ in range(n)]


def _tempo(spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """Per-rep (eccentric, pause at the turn, concentric, rest after) durations [n, 4], seconds.

    Even tempo keeps the planned rep-duration CV under 0.1; uneven tempo pushes it over 0.35.
    The eccentric stays >= 1.4 s unless it is rushed (0.3-0.5 s, every rep).
    """
    n = spec.reps
    ecc, pause, con = _u(rng, 1.4, 2.2), _u(rng, 0.0, 0.4), _u(rng, 0.7, 1.5)
    uneven = "uneven_tempo" in spec.faults
    rushed = "fast_eccentric" in spec.faults
    for _ in range(100):
        if uneven:
            m = np.where(rng.random(n) < 0.5, rng.uniform(0.45, 0.65, n), rng.uniform(1.6, 2.2, n))
        else:
            m = 1.0 + rng.normal(0.0, 0.04, n)
        e = rng.uniform(0.3, 0.5, n) if rushed else np.maximum(ecc * m, 1.4)
        d = np.stack([e, pause * m, con * m, rng.uniform(0.0, 0.8, n)], -1)
        planned = 0.8 * (d[:, 0] + d[:, 2]) + d[:, 1]
        cv = planned.std() / planned.mean()
        if (cv > 0.35) if uneven else (cv < 0.1):
            return d
    raise RuntimeError("could not draw a tempo matching the spec")


def _tracks(spec: ClipSpec, body: Body, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame joint-parameter tracks of the whole clip."""
    rest0, turns, rests, windows = _keyframes(spec, body, rng)
    d = _tempo(spec, rng)
    turn_first = spec.exercise != "press"  # press: concentric to the turn, eccentric back
    segs = [_Segment(_u(rng, 0.0, 1.2), rest0, rest0)]
    prev = rest0
    for i in range(spec.reps):
        to_turn, from_turn = (d[i, 0], d[i, 2]) if turn_first else (d[i, 2], d[i, 0])
        segs.append(_Segment(to_turn, prev, turns[i]))
        segs.append(_Segment(d[i, 1], turns[i], turns[i]))
        segs.append(_Segment(from_turn, turns[i], rests[i], windows[i]))
        segs.append(_Segment(d[i, 3] if i + 1 < spec.reps else _u(rng, 0.3, 1.2),
                             rests[i], rests[i]))
        prev = rests[i]
    fps = spec.fps
    bounds = np.concatenate([[0.0], np.cumsum([s.duration for s in segs])])
    t = np.arange(int(bounds[-1] * fps) + 1) / fps
    idx = np.clip(np.searchsorted(bounds, t, side="right") - 1, 0, len(segs) - 1)
    out = {}
    for name in rest0:
        a = np.array([s.a[name] for s in segs])[idx]
        b = np.array([s.b[name] for s in segs])[idx]
        w0 = np.array([s.windows.get(name, (0.0, 1.0))[0] for s in segs])[idx]
        w1 = np.array([s.windows.get(name, (0.0, 1.0))[1] for s in segs])[idx]
        dur = np.array([max(s.duration, 1e-9) for s in segs])[idx]
        u = (t - bounds[idx]) / dur
        out[name] = a + (b - a) * _ease((u - w0) / (w1 - w0))
    return out


# ----------------------------------------------------------------------------- camera, noise


def _render(spec: ClipSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Animates and films one clip. Returns keypoints [T, 17, 2] (pixels, y down), conf [T, 17]."""
    body = Body(thigh=_u(rng, 0.85, 1.0), shank=_u(rng, 0.8, 0.95),
                upper_arm=_u(rng, 0.56, 0.66), forearm=_u(rng, 0.52, 0.6))
    arm_style = (_u(rng, -20, 10), _u(rng, 0, 30))  # squat: arms reaching forward
    joints = _pose(spec.exercise, body, _tracks(spec, body, rng), arm_style)
    t = joints["hip"].shape[0]
    # The far side is the near side seen slightly offset (depth parallax).
    far = np.array([_u(rng, 0.02, 0.08), _u(rng, 0.0, 0.04)])
    world = np.zeros((t, 17, 2))
    near_is_left = rng.random() < 0.5
    for name in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear"):
        near_side, far_side = ("left", "right") if near_is_left else ("right", "left")
        world[:, _J[f"{near_side}_{name}"]] = joints[name]
        world[:, _J[f"{far_side}_{name}"]] = joints[name] + far
    world[:, _J["nose"]] = joints["nose"]
    # Camera: facing left or right, slight roll, scale (pixels per torso unit) and offset.
    facing = 1.0 if rng.random() < 0.5 else -1.0
    roll = np.radians(_u(rng, -2.0, 2.0))
    rot = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    scale = _u(rng, 70, 160)
    xy = (world * np.array([facing, 1.0])) @ rot.T * scale
    center = np.array([_u(rng, 300, 980), _u(rng, 450, 650)])
    kp = np.stack([center[0] + xy[..., 0], center[1] - xy[..., 1]], -1)  # image y down
    # Jitter and confidences: near side confident, far side and face less so; dropouts.
    near = np.array([name.startswith("left") == near_is_left and not name.endswith(("eye", "ear"))
                     for name in pose.COCO17])
    base = np.where(near, rng.uniform(0.82, 0.98, 17), rng.uniform(0.45, 0.8, 17))
    conf = np.clip(base + rng.normal(0.0, 0.03, (t, 17)), 0.0, 1.0)
    kp = kp + rng.normal(0.0, 0.006 * spec.noise * scale, kp.shape)
    if spec.noise > 0:
        n_drops = rng.poisson(0.01 * spec.noise * t * 17 / 3.5)
        for _ in range(n_drops):  # bursts of 1-6 frames of an unreliable keypoint
            j, s = int(rng.integers(17)), int(rng.integers(t))
            e = min(t, s + int(rng.integers(1, 7)))
            conf[s:e, j] = rng.uniform(0.02, 0.25)
            kp[s:e, j] += rng.normal(0.0, 0.3 * scale, 2)
    return kp, conf


def _measure(spec: ClipSpec, kp: np.ndarray, conf: np.ndarray):
    signals = pose.keypoints_to_signals(kp, conf, spec.fps)
    analysis = waves.analyze_reps(signals, spec.fps, spec.exercise)
    return signals, analysis, fault_rules.detect_faults(analysis)


def render_clip(spec: ClipSpec, rng: np.random.Generator) -> dict:
    """Renders and measures one draw of `spec`: keypoints, signals, analysis, measured faults."""
    kp, conf = _render(spec, rng)
    signals, analysis, measured = _measure(spec, kp, conf)
    return {"keypoints": kp, "confidence": conf, "signals": signals, "analysis": analysis,
            "faults": measured}


def _round(x: np.ndarray, decimals: int) -> list:
    return np.round(np.asarray(x, dtype=np.float64), decimals).tolist()


def generate_clip(rng_or_seed: np.random.Generator | int | Sequence[int],
                  exercise: str | None = None, *, video_id: str | None = None,
                  keypoints: bool = True, max_reps: int = MAX_REPS,
                  fps_choices: Sequence[float] = DEFAULT_FPS, **overrides) -> dict:
    """One synthetic clip as a JSON-ready dict (the clip contract of docs/architecture.md).

    Args:
      rng_or_seed: a numpy Generator, or a seed for `np.random.default_rng`.
      exercise: exercise id or alias; drawn when None.
      video_id: the clip id; derived from the draw when None.
      keypoints: include `keypoints` / `confidence` (the bulk of the file).
      max_reps, fps_choices: the range of drawn rep counts and frame rates.
      **overrides: fix `ClipSpec` fields: reps, faults, fps, noise.

    Returns:
      keypoints [T][17][2] (pixels), confidence [T][17], the 7 signals, wave_features, faults
      (measured and equal to the intended ones unless no draw agreed within `MAX_ATTEMPTS`),
      reps (ground truth), fps, n_frames, exercise, video_id, expert, CAMERA_POSITION and
      LANGUAGE (ground-truth coaching text).
    """
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else \
        np.random.default_rng(rng_or_seed)
    spec = draw_spec(rng, exercise, max_reps=max_reps, fps_choices=fps_choices, **overrides)
    for _ in range(MAX_ATTEMPTS):
        out = render_clip(spec, rng)
        if len(out["analysis"].reps) == spec.reps and out["faults"] == list(spec.faults):
            break
    analysis, signals = out["analysis"], out["signals"]
    features = waves.compute_wave_features(signals, spec.fps, spec.exercise, analysis=analysis)
    reps = [r for r in analysis.reps if r.complete] or analysis.reps
    tempo = float(np.mean([r.duration_sec for r in reps])) if reps else 0.0
    clip = {"video_id": video_id or f"synth-{int(rng.integers(1 << 62)):016x}",
            "exercise": spec.exercise, "fps": spec.fps,
            "n_frames": int(out["keypoints"].shape[0]), "reps": spec.reps,
            "faults": list(spec.faults), "expert": not spec.faults,
            "CAMERA_POSITION": "side"}
    if keypoints:
        clip["keypoints"] = _round(out["keypoints"], 1)
        clip["confidence"] = _round(out["confidence"], 2)
    clip.update({name: _round(v, 4) for name, v in signals.items()})
    clip["wave_features"] = features
    clip["LANGUAGE"] = fault_rules.compose_feedback(spec.exercise, spec.reps, spec.faults,
                                                    tempo, rng)
    return clip


def write_dataset(out: str | os.PathLike, n: int, seed: int, *,
                  exercises: Sequence[str] | None = None, noise: float = 1.0,
                  keypoints: bool = True, max_reps: int = MAX_REPS,
                  fps_choices: Sequence[float] = DEFAULT_FPS, progress: bool = True) -> list[str]:
    """Writes `n` clips to `out/<video_id>.json`; clip i depends only on (seed, i).

    Returns the written paths.
    """
    pool = [canonical_exercise(e) for e in exercises] if exercises else list(EXERCISES)
    if None in pool:
        raise ValueError(f"unknown exercise in {list(exercises)}; expected some of {EXERCISES}")
    os.makedirs(out, exist_ok=True)
    paths = []
    for i in tqdm(range(n), desc="clips", disable=not progress):
        rng = np.random.default_rng([seed, i])
        ex = pool[int(rng.integers(len(pool)))]
        clip = generate_clip(rng, ex, video_id=f"synth-s{seed}-{i:05d}", keypoints=keypoints,
                             max_reps=max_reps, fps_choices=fps_choices, noise=noise)
        path = os.path.join(out, clip["video_id"] + ".json")
        with open(path, "w") as fh:
            json.dump(clip, fh, separators=(",", ":"))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wavepose_jax.data.synthetic",
        description="Writes synthetic exercise clips (one JSON file each).")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--n", type=int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--exercises", default=",".join(EXERCISES),
                        help="comma-separated exercises to draw from")
    parser.add_argument("--noise", type=float, default=1.0,
                        help="keypoint jitter / dropout level (0 = clean, 1 = default)")
    parser.add_argument("--max-reps", type=int, default=MAX_REPS, help="most reps in a clip")
    parser.add_argument("--fps", default=",".join(str(f) for f in DEFAULT_FPS),
                        help="comma-separated frame rates to draw from")
    parser.add_argument("--no-keypoints", action="store_true",
                        help="store only the derived signals (much smaller files)")
    args = parser.parse_args(argv)
    exercises = [e for e in args.exercises.split(",") if e.strip()]
    bad = [e for e in exercises if canonical_exercise(e) is None]
    if bad or not exercises:
        print(f"error: --exercises: unknown {bad or exercises}; expected some of {EXERCISES}",
              file=sys.stderr)
        return 2
    try:
        fps_choices = [float(f) for f in args.fps.split(",") if f.strip()]
    except ValueError:
        fps_choices = []
    if not fps_choices or min(fps_choices) <= 0:
        print(f"error: --fps: expected positive numbers, got {args.fps!r}", file=sys.stderr)
        return 2
    if args.n < 0 or args.noise < 0 or args.max_reps < 1:
        print("error: --n and --noise must be >= 0 and --max-reps >= 1", file=sys.stderr)
        return 2
    write_dataset(args.out, args.n, args.seed, exercises=exercises, noise=args.noise,
                  keypoints=not args.no_keypoints, max_reps=args.max_reps,
                  fps_choices=fps_choices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
