"""COCO-17 keypoints over time -> the 7 body-region signals.

Input is what pose estimators (MediaPipe, RTMPose, YOLO-pose) produce: per frame 17 COCO
keypoints as (x, y) in pixels or normalised to [0, 1], image y pointing DOWN, with optional
per-keypoint confidences. The steps:

1. Cleaning. A keypoint is unreliable in a frame when it is NaN/inf or its confidence is below
   ``conf_threshold``; each joint's unreliable frames are filled by linear interpolation over
   time from its reliable frames (the first/last reliable value is held at the clip edges).
   A joint with no reliable frame at all stays NaN.
2. Left/right combination. Each joint pair (and each per-side joint angle) is combined as a
   mean weighted by the side's per-clip reliability: the mean over frames of its confidence,
   counting unreliable frames as 0. In a side view the far side is often occluded and gets
   little weight; in a front view both sides weigh the same and the result is the midpoint.
   The weights are fixed per clip so the combination never jumps between sides frame to frame.
   A side whose joints are never reliable is ignored.
3. Coordinates. The vertical axis is flipped (up positive). The origin is FIXED per clip at
   the median hip-midpoint position over the frames, not re-centred every frame: a per-frame
   hip-centred ``trajectory`` would be identically 0, while the fixed origin keeps the hip's
   vertical motion (squat depth) visible. The unit is the median over frames of the
   shoulder-midpoint -> hip-midpoint distance (the torso length), so body size, camera
   distance, image offset and the choice of pixels vs normalised coordinates all cancel.
   Normalised coordinates must share one unit on both axes for angles to be right: pass
   ``aspect_ratio`` (image width / height) when x and y were divided by width and height.
4. Signals (see ``schema.SIGNAL_NAMES``):
   ``trajectory``, ``legs_trajectory``, ``shoulder_trajectory``, ``arm_Trajectory`` are the
   hip-, knee-, shoulder- and wrist-midpoint heights in torso units relative to the origin;
   ``core_`` is shoulder-midpoint minus hip-midpoint height in the same frame;
   ``back_trajectory`` is the hip angle shoulder-hip-knee and ``knee_angle_trajectory`` the
   knee angle hip-knee-ankle, in degrees in [0, 180] (180 = straight).
   A signal that needs a joint pair with no reliable frame on either side is all NaN.
5. Smoothing. A Savitzky-Golay filter (polynomial order 2, window ~0.2 s: the odd number of
   frames nearest ``0.2 * fps``, at least 5, at most the clip length) on every signal; skipped
   for clips shorter than 5 frames.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import savgol_filter

from wavepose_jax.data.schema import SIGNAL_NAMES

COCO17: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_J = {name: i for i, name in enumerate(COCO17)}

SMOOTH_WINDOW_S = 0.2  # Savitzky-Golay window length in seconds.
SMOOTH_POLYORDER = 2
_MIN_WINDOW = 5


def _interpolate_joints(kp: np.ndarray, reliable: np.ndarray) -> np.ndarray:
    """Fills each joint's unreliable frames by linear interpolation in time, edges held.

    Args:
      kp: [T, 17, 2] coordinates.
      reliable: [T, 17] bool.

    Returns:
      [T, 17, 2]; joints with no reliable frame are NaN.
    """
    t = np.arange(kp.shape[0])
    out = np.full_like(kp, np.nan)
    for j in range(kp.shape[1]):
        idx = np.flatnonzero(reliable[:, j])
        if idx.size:
            for c in range(2):
                out[:, j, c] = np.interp(t, idx, kp[idx, j, c])
    return out


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angle a-b-c at b in degrees, [T, 2] points -> [T] in [0, 180]."""
    u, v = a - b, c - b
    cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    dot = (u * v).sum(-1)
    return np.degrees(np.arctan2(np.abs(cross), dot))


def _weighted(values: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Mean of per-side arrays weighted by per-clip side weights; NaN when no side has weight."""
    total = sum(weights)
    if total <= 0:
        return np.full_like(values[0], np.nan)
    return sum(w * np.nan_to_num(v) for v, w in zip(values, weights) if w > 0) / total


def _smooth(x: np.ndarray, fps: float) -> np.ndarray:
    """Light Savitzky-Golay smoothing (~0.2 s window) along time (axis 0) of [T] or [T, C];
    identity for very short clips or when anything is NaN."""
    window = max(_MIN_WINDOW, 2 * int(round(SMOOTH_WINDOW_S * fps / 2)) + 1)
    if window > x.shape[0]:
        window = x.shape[0] if x.shape[0] % 2 else x.shape[0] - 1
    if window < _MIN_WINDOW or not np.isfinite(x).all():
        return x
    return savgol_filter(x, window, SMOOTH_POLYORDER, axis=0)


def keypoints_to_signals(
    keypoints: np.ndarray,
    confidence: np.ndarray | None = None,
    fps: float = 30.0,
    *,
    conf_threshold: float = 0.3,
    smooth: bool = True,
    aspect_ratio: float = 1.0,
) -> dict[str, np.ndarray]:
    """Derives the 7 signals from COCO-17 keypoints (method in the module docstring).

    Args:
      keypoints: [T, 17, 2] (x, y) per frame in COCO order, image y down; NaN = missing.
      confidence: [T, 17] per-keypoint confidence, or None (every finite keypoint reliable).
      fps: frame rate, sets the smoothing window.
      conf_threshold: keypoints below this confidence are treated as missing.
      smooth: apply the Savitzky-Golay smoothing.
      aspect_ratio: image width / height when x and y are normalised separately to [0, 1];
        1 for pixel coordinates.

    Returns:
      Every name of ``SIGNAL_NAMES`` -> float32 [T]; a signal whose joints are never
      reliable on either side is all NaN.

    Raises:
      ValueError: wrong shapes or types, bad fps, or no usable shoulders/hips.
    """
    try:
        kp = np.asarray(keypoints, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"keypoints must be numeric [T, 17, 2], got unconvertible data ({e})") from None
    if kp.ndim != 3 or kp.shape[1:] != (len(COCO17), 2):
        raise ValueError(f"keypoints must have shape [T, 17, 2], got {list(kp.shape)}")
    num_frames = kp.shape[0]
    if num_frames == 0:
        raise ValueError("keypoints has no frames")
    if confidence is None:
        conf = np.ones(kp.shape[:2])
    else:
        try:
            conf = np.asarray(confidence, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"confidence must be numeric [T, 17], got unconvertible data ({e})") from None
        if conf.shape != kp.shape[:2]:
            raise ValueError(f"confidence must have shape {list(kp.shape[:2])} to match keypoints, "
                             f"got {list(conf.shape)}")
        conf = np.nan_to_num(conf, nan=0.0)
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}") from None
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if not (math.isfinite(aspect_ratio) and aspect_ratio > 0):
        raise ValueError(f"aspect_ratio must be a positive finite number, got {aspect_ratio!r}")

    reliable = np.isfinite(kp).all(-1) & (conf >= conf_threshold)  # [T, 17]
    xy = _interpolate_joints(kp, reliable) * np.array([aspect_ratio, -1.0])  # [T, 17, 2], up +
    weight = np.where(reliable, conf, 0.0).mean(0)  # [17] per-clip reliability of each joint

    def joint(side: str, name: str) -> tuple[np.ndarray, float]:
        j = _J[f"{side}_{name}"]
        return xy[:, j], float(weight[j])

    def midpoint(name: str) -> np.ndarray:  # [T, 2]
        (left, wl), (right, wr) = joint("left", name), joint("right", name)
        return _weighted([left, right], [wl, wr])

    def angle(a: str, b: str, c: str) -> np.ndarray:  # [T]
        per_side, weights = [], []
        for side in ("left", "right"):
            (pa, wa), (pb, wb), (pc, wc) = joint(side, a), joint(side, b), joint(side, c)
            per_side.append(_angle(pa, pb, pc))
            weights.append(min(wa, wb, wc))
        return _weighted(per_side, weights)

    hip, shoulder = midpoint("hip"), midpoint("shoulder")
    if np.isnan(hip).any() or np.isnan(shoulder).any():
        raise ValueError("no reliable hip or shoulder keypoint in any frame; cannot normalise")
    torso = float(np.median(np.linalg.norm(shoulder - hip, axis=-1)))
    extent = float(np.abs(xy[np.isfinite(xy)]).max())
    if not torso > 1e-6 * max(extent, 1e-12):
        raise ValueError("shoulders and hips coincide (torso length 0); cannot normalise")
    origin = float(np.median(hip[:, 1]))

    def height(point: np.ndarray) -> np.ndarray:
        return (point[:, 1] - origin) / torso

    derived = {
        "trajectory": height(hip),
        "legs_trajectory": height(midpoint("knee")),
        "shoulder_trajectory": height(shoulder),
        "back_trajectory": angle("shoulder", "hip", "knee"),
        "knee_angle_trajectory": angle("hip", "knee", "ankle"),
        "arm_Trajectory": height(midpoint("wrist")),
        "core_": (shoulder[:, 1] - hip[:, 1]) / torso,
    }
    signals = {name: derived[name] for name in SIGNAL_NAMES}
    if smooth:  # one filter call over every gap-free channel (channels with NaN stay as they are)
        whole = [k for k, v in signals.items() if np.isfinite(v).all()]
        if whole:
            smoothed = _smooth(np.stack([signals[k] for k in whole], -1), fps)
            signals.update({k: smoothed[:, i] for i, k in enumerate(whole)})
    return {k: v.astype(np.float32) for k, v in signals.items()}


# The joints each signal is measured from (on one side; a midpoint needs either side's joint,
# an angle all three joints of one side).
_SIGNAL_JOINTS: dict[str, tuple[str, ...]] = {
    "trajectory": ("hip",), "legs_trajectory": ("knee",), "shoulder_trajectory": ("shoulder",),
    "back_trajectory": ("shoulder", "hip", "knee"),
    "knee_angle_trajectory": ("hip", "knee", "ankle"),
    "arm_Trajectory": ("wrist",), "core_": ("shoulder", "hip"),
}


def signal_coverage(keypoints: np.ndarray, confidence: np.ndarray | None = None, *,
                    conf_threshold: float = 0.3) -> dict[str, float]:
    """Per signal, the fraction of frames it is measured in rather than interpolated.

    A frame measures a signal when, on at least one side, every joint it needs is reliable
    (finite, with confidence >= `conf_threshold`, as in `keypoints_to_signals`).

    Args:
      keypoints: [T, 17, 2]; confidence: [T, 17] or None (every finite keypoint reliable).
    """
    kp = np.asarray(keypoints, np.float64)
    conf = np.ones(kp.shape[:2]) if confidence is None else np.nan_to_num(
        np.asarray(confidence, np.float64), nan=0.0)
    reliable = np.isfinite(kp).all(-1) & (conf >= conf_threshold)  # [T, 17]
    out = {}
    for name in SIGNAL_NAMES:
        sides = [np.all([reliable[:, _J[f"{side}_{j}"]] for j in _SIGNAL_JOINTS[name]], axis=0)
                 for side in ("left", "right")]
        out[name] = float(np.mean(sides[0] | sides[1])) if kp.shape[0] else 0.0
    return out
