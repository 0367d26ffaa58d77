"""The benchmark's athlete: a body from a standing height, how it moves in each exercise.

The out-of-distribution generator's own body model (`othergen.py` films it; nothing here is
shared with the training generator): `draw_person` gives segment lengths in metres from a
standing height (1.50-1.95 m) by anthropometric ratios with a personal jitter, and a real hip
and shoulder width. `MODELS` holds one model per exercise, built from the person: its `plan`
draws the driver values of a set (rest before, turn and rest after each rep, with the faults
imposed with margins around the rule thresholds of `faults.py`), its `pose` turns the driver
tracks into sagittal joints. The squat is driven by the knee angle alone (shin lean and
torso lean follow the knee flexion by personal coefficients); the push-up by the height of
the shoulders above the floor (the body angle in closed form, a sag bend at the hip); the
deadlift by separate knee and hip angles (the hips may lag the knees on the way up); the press
by the height of the hands above the shoulders (the elbow by the law of cosines). `to_coco`
sets the joints in 3D as COCO-17, the left and right sides apart in depth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wavepose_jax.data import faults as fault_rules

# COCO-17 joint index by (side, name); the nose is 0.
_SIDE_JOINTS = ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
_COCO = {("left", n): 1 + 2 * i for i, n in enumerate(_SIDE_JOINTS)}
_COCO.update({("right", n): 2 + 2 * i for i, n in enumerate(_SIDE_JOINTS)})


@dataclasses.dataclass(frozen=True)
class Person:
    """Segment lengths and half-widths in metres."""

    height: float
    shank: float
    thigh: float
    torso: float      # hip centre to shoulder centre
    upper_arm: float
    forearm: float
    hip_half: float
    shoulder_half: float

    @property
    def arm(self) -> float:
        return self.upper_arm + self.forearm


def draw_person(rng: np.random.Generator) -> Person:
    """A body of 1.50-1.95 m: segments by anthropometric ratios, each with a personal jitter."""
    h = float(rng.uniform(1.50, 1.95))

    def seg(ratio: float) -> float:
        return ratio * h * float(rng.uniform(0.93, 1.07))

    return Person(height=h, shank=seg(0.246), thigh=seg(0.245), torso=seg(0.29),
                  upper_arm=seg(0.186), forearm=seg(0.146), hip_half=seg(0.095),
                  shoulder_half=seg(0.13))


# ----------------------------------------------------------------------------- exercises
# Each exercise: per-rep plans -> driver values (rest before, turn, rest after) and a pose
# function drivers -> sagittal joints {name: [T, 2]} (x forward, y up, metres, feet at x=0).


def _unit(angle_from_vertical: np.ndarray) -> np.ndarray:
    """Unit vectors leaning forward (+x) by the angle (radians) from straight up, [T, 2]."""
    return np.stack([np.sin(angle_from_vertical), np.cos(angle_from_vertical)], -1)


def _polar(deg_from_x: np.ndarray) -> np.ndarray:
    r = np.radians(deg_from_x)
    return np.stack([np.cos(r), np.sin(r)], -1)


def _two_link(root: np.ndarray, target: np.ndarray, l1: float, l2: float, bend: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Middle joint of a two-link chain from root towards target (law of cosines).

    `bend` +1 / -1 picks the side the middle joint bends to. Returns (middle, reached end).
    """
    d = target - root
    dist = np.clip(np.linalg.norm(d, axis=-1), abs(l1 - l2) + 1e-4, 0.995 * (l1 + l2))
    unit = d / np.maximum(np.linalg.norm(d, axis=-1), 1e-9)[:, None]
    cos_a = np.clip((l1 ** 2 + dist ** 2 - l2 ** 2) / (2 * l1 * dist), -1.0, 1.0)
    a = np.arccos(cos_a) * bend
    rot = np.stack([unit[:, 0] * np.cos(a) - unit[:, 1] * np.sin(a),
                    unit[:, 0] * np.sin(a) + unit[:, 1] * np.cos(a)], -1)
    return root + l1 * rot, root + unit * dist[:, None]


class _Squat:
    turn_first = True  # rests standing, turns at the bottom

    def __init__(self, p: Person, rng: np.random.Generator):
        self.p = p
        self.shin = rng.uniform(0.25, 0.4)      # share of the knee flexion taken by the shin
        self.lean0 = np.radians(rng.uniform(2, 12))
        self.lean_gain = rng.uniform(0.35, 0.6)  # torso lean per knee flexion
        self.arms = rng.choice(["forward", "bar", "hips"])

    def plan(self, rng, n, faulty):
        shallow, soft = faulty["shallow_depth"], faulty["incomplete_lockout"]
        t, lock_min = fault_rules.SQUAT_MAX_DEPTH_DEG, fault_rules.SQUAT_MIN_LOCKOUT_DEG
        # Soft lockouts stay high enough above shallow bottoms for a clear 28+ degree rep.
        soft_lo = t + 34 if shallow.any() else lock_min - 25
        lock = np.where(soft, rng.uniform(soft_lo, lock_min - 6, n), rng.uniform(168, 179, n))
        start = float(rng.uniform(170, 179))
        room = np.minimum(np.concatenate([[start], lock[:-1]]), lock) - 28  # deepest shallow
        depth = np.where(shallow, t + 6 + rng.uniform(0, 1, n) * np.clip(room - t - 6, 0, 22),
                         rng.uniform(62, t - 10, n))
        return ({"knee": start}, [{"knee": d} for d in depth], [{"knee": v} for v in lock],
                [{}] * n)

    def pose(self, d):
        p, flex = self.p, np.radians(180.0 - d["knee"])
        ls = self.shin * flex
        knee = p.shank * _unit(ls)
        hip = knee + p.thigh * _unit(-(flex - ls))
        shoulder = hip + p.torso * _unit(self.lean0 + self.lean_gain * flex)
        t = flex.size
        if self.arms == "forward":
            elbow = shoulder + p.upper_arm * _polar(np.full(t, -10.0))
            wrist = elbow + p.forearm * _polar(np.full(t, 5.0))
        elif self.arms == "bar":
            elbow = shoulder + p.upper_arm * _polar(np.full(t, -115.0))
            wrist = elbow + p.forearm * _polar(np.full(t, 95.0))
        else:
            elbow = shoulder + p.upper_arm * _polar(np.full(t, -120.0))
            wrist = hip + np.array([0.03, 0.05])
        return {"ankle": np.zeros((t, 2)), "knee": knee, "hip": hip, "shoulder": shoulder,
                "elbow": elbow, "wrist": wrist}


class _Pushup:
    turn_first = True  # rests in the plank, turns at the bottom
    WRIST_Y, TOE_Y = 0.04, 0.06

    def __init__(self, p: Person, rng: np.random.Generator):
        self.p = p
        self.knee = rng.uniform(172, 180)
        self.hand_offset = rng.uniform(-0.04, 0.08)

    def plan(self, rng, n, faulty):
        p, torso = self.p, self.p.torso
        partial, sag = faulty["pushup_partial_range"], faulty["pushup_hip_sag"]
        top = (p.arm * rng.uniform(0.93, 0.97) + self.WRIST_Y) * np.ones(n)
        bottom = np.where(partial, (fault_rules.PUSHUP_MAX_DEPTH + rng.uniform(0.12, 0.25, n)),
                          rng.uniform(0.08, 0.3, n)) * torso + self.WRIST_Y
        bend = np.where(sag, 180 - fault_rules.PUSHUP_MIN_HIP_DEG + rng.uniform(8, 20, n),
                        rng.uniform(-6, 6, n))
        rest_bend = rng.uniform(-4, 4)
        rest = {"height": float(top[0]), "sag": rest_bend}
        return (rest, [{"height": b, "sag": s} for b, s in zip(bottom, bend)],
                [dict(rest) for _ in range(n)], [{}] * n)

    def pose(self, d):
        p = self.p
        leg = p.shank + p.thigh
        sag = np.radians(d["sag"])
        # Legs at angle beta from the floor, torso at beta + sag: shoulder height
        # leg sin(beta) + torso sin(beta + sag) = A sin(beta + phi) in closed form.
        a = leg + p.torso * np.cos(sag)
        b = p.torso * np.sin(sag)
        amp, phi = np.hypot(a, b), np.arctan2(b, a)
        beta = np.arcsin(np.clip((d["height"] - self.TOE_Y) / amp, -1, 1)) - phi
        ankle = np.tile([0.0, self.TOE_Y], (beta.size, 1))
        leg_dir = np.stack([np.cos(beta), np.sin(beta)], -1)
        knee_drop = np.radians(180 - self.knee) / 2
        knee = ankle + p.shank * np.stack([np.cos(beta + knee_drop), np.sin(beta + knee_drop)], -1)
        hip = ankle + leg * leg_dir
        shoulder = hip + p.torso * np.stack([np.cos(beta + sag), np.sin(beta + sag)], -1)
        top = int(np.argmax(shoulder[:, 1]))
        wrist_target = np.tile([shoulder[top, 0] + self.hand_offset, self.WRIST_Y],
                               (beta.size, 1))
        elbow, wrist = _two_link(shoulder, wrist_target, p.upper_arm, p.forearm, bend=-1.0)
        return {"ankle": ankle, "knee": knee, "hip": hip, "shoulder": shoulder, "elbow": elbow,
                "wrist": wrist}


class _Deadlift:
    turn_first = True  # rests standing, turns at the floor

    def __init__(self, p: Person, rng: np.random.Generator):
        self.p = p
        self.shin = rng.uniform(0.2, 0.35)

    def plan(self, rng, n, faulty):
        soft, early = (faulty["deadlift_incomplete_lockout"],
                       faulty["deadlift_hips_rise_early"])
        t = fault_rules.DEADLIFT_MIN_LOCKOUT_DEG
        lock = np.where(soft, t - rng.uniform(8, 24, n), rng.uniform(169, 179, n))
        turns = [{"knee": rng.uniform(105, 140), "hip": rng.uniform(55, 90)} for _ in range(n)]
        rests = [{"knee": rng.uniform(171, 179), "hip": v} for v in lock]
        # Hips early: the knees straighten in the first half of the pull, the hips after.
        windows = [{"knee": (0.0, 0.45), "hip": (0.5, 1.0)} if e else
                   {"knee": (0.0, 1.0), "hip": (0.0, float(rng.uniform(0.85, 1.0)))}
                   for e in early]
        return ({"knee": rng.uniform(171, 179), "hip": rng.uniform(170, 179)}, turns, rests,
                windows)

    def pose(self, d):
        p = self.p
        t = d["knee"].size
        shin_dir = 90.0 - self.shin * (180.0 - d["knee"])   # degrees from +x
        thigh_dir = shin_dir + (180.0 - d["knee"])
        torso_dir = thigh_dir - (180.0 - d["hip"])
        knee = p.shank * _polar(shin_dir)
        hip = knee + p.thigh * _polar(thigh_dir)
        shoulder = hip + p.torso * _polar(torso_dir)
        elbow = shoulder + p.upper_arm * _polar(np.full(t, -88.0))
        wrist = elbow + p.forearm * _polar(np.full(t, -90.0))
        return {"ankle": np.zeros((t, 2)), "knee": knee, "hip": hip, "shoulder": shoulder,
                "elbow": elbow, "wrist": wrist}


class _Press:
    turn_first = False  # rests at the shoulders, turns overhead

    def __init__(self, p: Person, rng: np.random.Generator):
        self.p = p
        self.lean = np.radians(rng.uniform(-6, 0))  # leaning back a little
        self.knee = rng.uniform(172, 180)

    def plan(self, rng, n, faulty):
        torso = self.p.torso
        soft, short = faulty["press_incomplete_lockout"], faulty["press_incomplete_lowering"]
        reach = self.p.arm / torso  # arm length in torso units
        top = np.where(soft, fault_rules.PRESS_MIN_LOCKOUT - rng.uniform(0.12, 0.3, n),
                       reach * rng.uniform(0.9, 0.97, n))
        low = np.where(short, fault_rules.PRESS_MAX_DEPTH + rng.uniform(0.12, 0.3, n),
                       rng.uniform(-0.08, 0.12, n))
        return ({"hands": float(rng.uniform(-0.08, 0.12)) * torso},
                [{"hands": v * torso} for v in top], [{"hands": v * torso} for v in low],
                [{}] * n)

    def pose(self, d):
        p = self.p
        t = d["hands"].size
        knee = p.shank * _unit(np.full(t, np.radians(180 - self.knee) / 2))
        hip = knee + p.thigh * _unit(np.full(t, -np.radians(180 - self.knee) / 2))
        shoulder = hip + p.torso * _unit(np.full(t, self.lean))
        up = np.clip(d["hands"] / (0.95 * p.arm), -0.3, 1.0)
        forward = 0.16 * (1 - np.clip(up, 0, 1)) + 0.02
        target = shoulder + np.stack([forward, d["hands"]], -1)
        elbow, wrist = _two_link(shoulder, target, p.upper_arm, p.forearm, bend=-1.0)
        return {"ankle": np.zeros((t, 2)), "knee": knee, "hip": hip, "shoulder": shoulder,
                "elbow": elbow, "wrist": wrist}


# Exercise -> its model, built from the person and the clip's generator.
MODELS: dict[str, type] = {"squat": _Squat, "pushup": _Pushup, "deadlift": _Deadlift,
                           "press": _Press}


def to_coco(joints: dict[str, np.ndarray], p: Person) -> np.ndarray:
    """Sagittal joints -> 3D COCO-17 [T, 17, 3] (x forward, y up, z to the left)."""
    t = joints["hip"].shape[0]
    out = np.zeros((t, 17, 3))
    up = joints["shoulder"] - joints["hip"]
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    face = np.stack([up[:, 1], -up[:, 0]], -1)
    head = joints["shoulder"] + 0.1 * p.height * up
    joints = {**joints, "nose": head + 0.06 * p.height * face,
              "eye": head + 0.05 * p.height * face + 0.02 * p.height * up,
              "ear": head - 0.01 * p.height * face + 0.015 * p.height * up}
    half = {"eye": 0.018 * p.height, "ear": 0.04 * p.height, "shoulder": p.shoulder_half,
            "elbow": p.shoulder_half + 0.02, "wrist": p.shoulder_half, "hip": p.hip_half,
            "knee": p.hip_half * 0.9, "ankle": p.hip_half * 0.8}
    out[:, 0, :2] = joints["nose"]
    for (side, name), j in _COCO.items():
        out[:, j, :2] = joints[name]
        out[:, j, 2] = half[name] if side == "left" else -half[name]
    return out
