"""Wave analysis on squats drawn by a second, unrelated generator (not data/synthetic.py).

Different kinematics (segment lengths, how shin and torso lean with knee flexion), a raised-cosine
motion profile, idle time, mirrored facing, pixel noise, a weak far side and confidence drops:
the clip loader, the pose front end, rep segmentation and the fault rules must get the truth.
"""

import numpy as np
import pytest

from wavepose_jax.data import faults
from wavepose_jax.data import waves
from wavepose_jax.data.clip import clip_from_dict


def _squat_keypoints(rng, reps, fps, depth, lockout, rep_sec, descent_frac, facing):
    segs = [np.full(int(rng.uniform(0, 2) * fps), lockout)]
    for _ in range(reps):
        n = max(int(rep_sec * fps * rng.uniform(0.95, 1.05)), 4)
        nd = int(n * descent_frac)
        bottom = depth + rng.normal(0, 1.5)
        ramp = lambda k: 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
        segs += [lockout - (lockout - bottom) * ramp(nd), bottom + (lockout - bottom) * ramp(n - nd),
                 np.full(int(0.5 * fps), lockout)]
    segs.append(np.full(int(rng.uniform(0, 2) * fps), lockout))
    knee = np.concatenate(segs)  # degrees
    flex = np.radians(180.0 - knee)
    shin, thigh, torso = 0.45, 0.47, 0.55
    lean_s, lean_t, lean_b = 0.3 * flex, 0.7 * flex, np.radians(10) + 0.45 * flex
    ankle = np.zeros((len(knee), 2))
    k = ankle + shin * np.stack([np.sin(lean_s), np.cos(lean_s)], -1)
    h = k + thigh * np.stack([-np.sin(lean_t), np.cos(lean_t)], -1)
    s = h + torso * np.stack([np.sin(lean_b), np.cos(lean_b)], -1)
    w = s + [0.5, -0.05]
    joints = {0: s + [0.08, 0.25], 5: s, 7: (s + w) / 2 - [0, 0.08], 9: w, 11: h, 13: k, 15: ankle}
    kp = np.zeros((len(knee), 17, 2))
    for j in range(17):
        left = j if j % 2 == 1 or j == 0 else j - 1  # COCO: odd = left, the next even = right
        p = joints.get(left, joints[0]).copy()  # eyes and ears sit at the nose
        p[:, 0] *= facing
        kp[:, j] = [640, 620] + 300 * p * [1, -1]
    kp += rng.normal(0, 2.0, kp.shape)
    conf = np.where(np.arange(17) % 2 == 0, 0.55, 0.9)[None].repeat(len(knee), 0)
    drop = rng.random(conf.shape) < 0.03
    conf[drop] = 0.1
    kp[drop] += rng.normal(0, 40, (int(drop.sum()), 2))
    return kp, conf


@pytest.mark.parametrize("seed", range(8))
def test_reps_and_faults_on_another_generator(seed):
    rng = np.random.default_rng(seed)
    reps, fps = int(rng.integers(1, 13)), float(rng.choice([24, 30, 60]))
    depth, lockout = float(rng.choice([88, 122])), float(rng.choice([176, 150]))
    rushed = bool(rng.random() < 0.4)
    rep_sec = float(rng.uniform(2.4, 3.6))
    kp, conf = _squat_keypoints(rng, reps, fps, depth, lockout, rep_sec,
                                0.12 if rushed else 0.5, int(rng.choice([1, -1])))
    clip = clip_from_dict({"fps": fps, "exercise": "squat", "keypoints": kp.tolist(),
                           "confidence": conf.tolist()})
    analysis = waves.analyze_reps(clip.signals, fps, "squat")
    expected = {"shallow_depth"} if depth > 110 else set()
    expected |= {"incomplete_lockout"} if lockout < 160 and reps > 1 else set()
    expected |= {"fast_eccentric"} if rushed else set()
    assert len(analysis.reps) == reps
    assert clip.wave_features["harmonic"]["oscillation_count"] == reps
    assert set(faults.detect_faults(analysis)) == expected
