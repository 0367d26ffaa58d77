"""How a synthetic clip is filmed: the athlete in 3D, a pinhole camera, a pose estimator.

`to_world` places the sagittal joints of `synthetic_body.sagittal_joints` in 3D as COCO-17
(the left and right joints apart by the body's half-widths, the athlete drifting a little);
`film` views them with a 3D pinhole camera on either side of the athlete, up to 40 degrees
off the side view, pitched, rolled, at a distance and field of view that frame the body at
30-90% of one of `IMAGE_SIZES`, anywhere in the frame, panning slowly; `estimator_noise` adds
what a pose estimator does: jitter, per-joint confidences (the far side and the face lower),
unconfident bursts at wrong positions, joints and whole frames not detected.
"""

from __future__ import annotations

import math

import numpy as np

from wavepose_jax.data import pose
from wavepose_jax.data.synthetic_body import Body

# Image sizes (width, height) in pixels: landscape, portrait and square.
IMAGE_SIZES = ((1920, 1080), (1280, 720), (854, 480), (640, 480), (1080, 1920), (720, 1280),
               (1080, 1080))

_J = {name: i for i, name in enumerate(pose.COCO17)}  # COCO-17 joint name -> index
# Joint -> the `Body` half-width that sets it apart from the body's mid-plane.
_HALF_WIDTH = {"shoulder": "shoulder_half", "elbow": "shoulder_half", "wrist": "shoulder_half",
               "hip": "hip_half", "knee": "hip_half", "ankle": "hip_half"}


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def to_world(joints: dict[str, np.ndarray], body: Body, rng: np.random.Generator) -> np.ndarray:
    """Sagittal joints -> COCO-17 [T, 17, 3] in torso units (x forward, y up, z to the left),
    the athlete drifting a little along x."""
    t = joints["hip"].shape[0]
    world = np.zeros((t, 17, 3))
    world[:, _J["nose"], :2] = joints["nose"]
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for name in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear"):
            j = _J[f"{side}_{name}"]
            world[:, j, :2] = joints[name]
            half = getattr(body, _HALF_WIDTH[name]) if name in _HALF_WIDTH else (
                0.1 if name == "eye" else 0.22)
            world[:, j, 2] = sign * half * (0.9 if name in ("knee", "ankle") else 1.0)
    drift = np.linspace(0.0, _u(rng, -0.8, 0.8), t) + 0.05 * np.sin(
        np.linspace(0.0, _u(rng, 0.5, 6.0), t) + _u(rng, 0, 6.3))
    world[..., 0] += drift[:, None]
    return world


def film(world: np.ndarray, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Films the clip: a 3D pinhole camera on either side of the athlete, up to 40 degrees off
    the side view, pitched, rolled, at a distance that frames the body at 30-90% of the image,
    placed anywhere in it and panning slowly. `world` is `to_world`'s [T, 17, 3].

    Returns keypoints [T, 17, 2] in pixels (y down), the [17] mask of joints on the camera's
    side of the body, and the image size (width, height).
    """
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    t = world.shape[0]
    side = 1.0 if rng.random() < 0.5 else -1.0
    yaw = math.radians(_u(rng, -5, 5) if rng.random() < 0.3 else _u(rng, -40, 40))
    pitch, roll = math.radians(_u(rng, -8, 20)), math.radians(_u(rng, -4, 4))
    # Camera axes: looking at the side of the body, turned by yaw, tilted down by pitch.
    look = np.array([math.sin(yaw) * side * -1.0, 0.0, -math.cos(yaw) * side])
    look = look * math.cos(pitch) + np.array([0.0, -math.sin(pitch), 0.0])
    right = np.cross(look, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, look)
    right, up = (math.cos(roll) * right + math.sin(roll) * up,
                 math.cos(roll) * up - math.sin(roll) * right)
    focal = (w / 2) / math.tan(math.radians(_u(rng, 40, 80)) / 2)
    flat = world.reshape(-1, 3)
    centre = (flat.min(0) + flat.max(0)) / 2
    span = max(max(np.ptp(flat[:, 0]), np.ptp(flat[:, 2])) / w, np.ptp(flat[:, 1]) / h)
    distance = max(focal * span / _u(rng, 0.3, 0.9), 4.0)
    eye = centre - distance * look
    pan = rng.normal(0.0, 0.08, 3)                   # the aim drifts over the clip
    rel = world - eye - np.linspace(0.0, 1.0, t)[:, None, None] * pan
    depth = rel @ look
    xy = np.stack([focal * (rel @ right) / depth, -focal * (rel @ up) / depth], -1)
    lo, hi = xy.reshape(-1, 2).min(0), xy.reshape(-1, 2).max(0)
    size = np.array([w, h], np.float64)
    shrink = min(1.0, float(np.min(0.96 * size / np.maximum(hi - lo, 1e-9))))
    xy, lo, hi = xy * shrink, lo * shrink, hi * shrink
    room = np.maximum(size * 0.98 - (hi - lo), 0.0)
    xy = xy - lo + size * 0.01 + rng.uniform(0.0, 1.0, 2) * room
    return xy, world[0, :, 2] * side > 0, (w, h)


def estimator_noise(kp: np.ndarray, near: np.ndarray, size: tuple[int, int], noise: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What a pose estimator adds: jitter, per-joint confidences (the far side and the face
    lower), low-confidence bursts at wrong positions, joints and whole frames not detected
    (NaN, confidence 0). `noise` scales it all; 0 = exact keypoints, confident enough."""
    t = kp.shape[0]
    body_px = float(np.ptp(kp[..., 1])) or 1.0
    face = np.array([name in ("nose",) or name.endswith(("eye", "ear")) for name in pose.COCO17])
    base = np.where(near, rng.uniform(0.7, 0.98, 17), rng.uniform(0.35, 0.85, 17))
    base = np.where(face, rng.uniform(0.4, 0.95, 17), base)
    if noise <= 0:
        return kp, np.repeat(base[None], t, 0)
    conf = np.clip(base + rng.normal(0.0, 0.04, (t, 17)), 0.0, 1.0)
    kp = kp + rng.normal(0.0, _u(rng, 0.001, 0.008) * noise * body_px, kp.shape)
    for _ in range(rng.poisson(_u(rng, 0.002, 0.015) * noise * t * 17 / 6)):
        j, s = int(rng.integers(17)), int(rng.integers(t))
        e = min(t, s + int(rng.integers(1, 13)))
        if rng.random() < 0.7:          # a wrong, unconfident detection
            conf[s:e, j] = rng.uniform(0.0, 0.28)
            kp[s:e, j] += rng.normal(0.0, 0.25 * body_px, 2)
        else:                           # not detected at all
            conf[s:e, j] = 0.0
            kp[s:e, j] = np.nan
    kp = np.clip(kp, 0.0, np.array(size, np.float64) - 1.0)
    missing = rng.random(t) < _u(rng, 0.0, 0.03) * min(noise, 1.0)
    kp[missing], conf[missing] = np.nan, 0.0
    return kp, conf
