"""The synthetic athlete's body: its proportions, and its pose in each exercise.

`draw_body` draws limb lengths and half-widths relative to the torso (stocky to long-limbed);
`sagittal_joints` turns the joint-parameter tracks of `synthetic.py`'s motion plan into
sagittal joints (world coordinates, y up, facing +x): the squat, deadlift and press stand on
the ankle (shank lean, knee and hip angles; the press's hands by inverse kinematics), the
push-up lies on the floor with its body angle solved so the shoulders sit at the planned
height.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Body:
    """Segment lengths and half-widths in torso units (shoulder-hip distance = 1)."""

    thigh: float
    shank: float
    upper_arm: float
    forearm: float
    hip_half: float = 0.35       # hip centre to each hip joint
    shoulder_half: float = 0.45  # shoulder centre to each shoulder joint

    @property
    def arm(self) -> float:
        return self.upper_arm + self.forearm


def draw_body(rng: np.random.Generator) -> Body:
    """Limb proportions from stocky to long-limbed."""
    return Body(thigh=_u(rng, 0.78, 1.08), shank=_u(rng, 0.74, 1.02),
                upper_arm=_u(rng, 0.52, 0.72), forearm=_u(rng, 0.46, 0.64),
                hip_half=_u(rng, 0.26, 0.42), shoulder_half=_u(rng, 0.36, 0.56))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _dir(deg: np.ndarray) -> np.ndarray:
    """Unit vectors [T, 2] at angles (degrees from +x, counter-clockwise)."""
    r = np.radians(deg)
    return np.stack([np.cos(r), np.sin(r)], -1)


def _ik_elbow(shoulder: np.ndarray, wrist: np.ndarray,
              body: Body) -> tuple[np.ndarray, np.ndarray]:
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


def sagittal_joints(ex: str, body: Body, p: dict[str, np.ndarray],
                    arm_style: tuple[float, float]) -> dict[str, np.ndarray]:
    """Sagittal joints [T, 2] (world, y up, facing +x) from the parameter tracks `p` ([T] each).

    `arm_style` is the squat's (upper-arm direction, elbow bend) in degrees.
    """
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
