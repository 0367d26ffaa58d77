"""Tests for data/pose.py: COCO-17 keypoints -> the 7 signals."""

import numpy as np
import pytest

from wavepose_jax.data import pose
from wavepose_jax.data.schema import SIGNAL_NAMES

_J = {name: i for i, name in enumerate(pose.COCO17)}


def _unit(deg: float) -> np.ndarray:
    return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])


def _frame(knee_deg: float, hip_deg: float, shank_deg: float = 90.0) -> np.ndarray:
    """One side-view skeleton in world units (y UP), ankle at the origin -> [17, 2].

    The knee angle (hip-knee-ankle) is ``knee_deg`` and the hip angle (shoulder-hip-knee)
    ``hip_deg`` by construction; shank 0.9, thigh 0.9, torso 1.0 long.
    """
    ankle = np.zeros(2)
    knee = ankle + 0.9 * _unit(shank_deg)
    knee_to_ankle = shank_deg + 180.0
    hip = knee + 0.9 * _unit(knee_to_ankle - knee_deg)
    hip_to_knee = knee_to_ankle - knee_deg + 180.0
    shoulder = hip + 1.0 * _unit(hip_to_knee + hip_deg)
    wrist = shoulder + np.array([0.6, -0.1])
    elbow = (shoulder + wrist) / 2
    nose = shoulder + np.array([0.1, 0.35])
    points = {"shoulder": shoulder, "elbow": elbow, "wrist": wrist, "hip": hip,
              "knee": knee, "ankle": ankle, "eye": nose + [0.03, 0.03], "ear": nose - [0.08, 0.0]}
    out = np.zeros((17, 2))
    out[_J["nose"]] = nose
    for name, j in _J.items():
        if "_" in name:
            out[j] = points[name.split("_", 1)[1]]
    return out


def _squat(num_frames: int = 60, bottom_knee: float = 90.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth rep: knee 180 -> bottom -> 180; returns (world [T,17,2], knee deg, hip deg)."""
    s = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(num_frames) / (num_frames - 1))  # 0 -> 1 -> 0
    knee = 180.0 - (180.0 - bottom_knee) * s
    hip = 180.0 - 100.0 * s
    shank = 90.0 - 30.0 * s
    world = np.stack([_frame(k, h, a) for k, h, a in zip(knee, hip, shank)])
    return world, knee, hip


def _to_image(world: np.ndarray, scale: float, offset=(0.0, 0.0)) -> np.ndarray:
    """World (y up) -> image coordinates (y DOWN), scaled and shifted."""
    return np.stack([offset[0] + scale * world[..., 0], offset[1] - scale * world[..., 1]], -1)


def test_known_angles_exact():
    cases = [(180.0, 180.0), (135.0, 120.0), (90.0, 90.0), (100.0, 60.0)]
    world = np.stack([_frame(k, h, 70.0) for k, h in cases])
    out = pose.keypoints_to_signals(_to_image(world, 300.0, (500, 900)), smooth=False)
    assert set(out) == set(SIGNAL_NAMES)
    assert all(v.dtype == np.float32 and v.shape == (len(cases),) for v in out.values())
    np.testing.assert_allclose(out["knee_angle_trajectory"], [k for k, _ in cases], atol=1.0)
    np.testing.assert_allclose(out["back_trajectory"], [h for _, h in cases], atol=1.0)


def test_up_positive_and_torso_units():
    world, _, _ = _squat()
    out = pose.keypoints_to_signals(_to_image(world, 250.0, (640, 700)), fps=30.0)
    hip = out["trajectory"]
    # Standing frames are above the median (the origin); the bottom of the squat is below.
    assert hip[0] > 0 > hip[30]
    assert hip[0] - hip[30] > 0.5  # the hip drops by more than half a torso
    # Upright: shoulders one torso above the hips, knees below, wrists above the hips.
    assert out["core_"][0] == pytest.approx(1.0, abs=0.02)
    assert out["shoulder_trajectory"][0] > hip[0] > out["legs_trajectory"][0]
    assert out["arm_Trajectory"][0] > hip[0]


def test_invariant_to_scale_offset_and_normalised_coordinates():
    world, knee, _ = _squat()
    pixels = _to_image(world, 400.0, (900, 950))  # a 1920x1080 frame
    reference = pose.keypoints_to_signals(pixels, fps=30.0)
    normalised = pixels / np.array([1920.0, 1080.0])
    variants = [
        pose.keypoints_to_signals(_to_image(world, 0.2, (0.5, 0.9)), fps=30.0),
        pose.keypoints_to_signals(_to_image(world, 37.0, (-80, 20)), fps=30.0),
        pose.keypoints_to_signals(normalised, fps=30.0, aspect_ratio=1920 / 1080),
    ]
    for out in variants:
        for name in SIGNAL_NAMES:
            np.testing.assert_allclose(out[name], reference[name], atol=1e-3, err_msg=name)
    # Smoothing keeps the known angles.
    np.testing.assert_allclose(reference["knee_angle_trajectory"], knee, atol=1.0)
    # Per-axis normalisation without the aspect ratio distorts angles: the option matters.
    distorted = pose.keypoints_to_signals(normalised, fps=30.0)
    assert np.abs(distorted["knee_angle_trajectory"] - knee).max() > 5.0


def test_low_confidence_and_nan_joints_interpolated():
    world, knee, hip = _squat()
    clean = _to_image(world, 300.0, (600, 900))
    conf = np.full(clean.shape[:2], 0.9)
    corrupted = clean.copy()
    gap = slice(24, 30)
    for side in ("left", "right"):
        corrupted[gap, _J[f"{side}_knee"]] = [5.0, 5.0]  # garbage far from the body
        conf[gap, _J[f"{side}_knee"]] = 0.05
    corrupted[40:43, _J["left_hip"]] = np.nan
    out = pose.keypoints_to_signals(corrupted, conf, fps=30.0)
    np.testing.assert_allclose(out["knee_angle_trajectory"], knee, atol=3.0)
    np.testing.assert_allclose(out["back_trajectory"], hip, atol=3.0)
    assert np.isfinite(np.stack(list(out.values()))).all()
    # Trusting the garbage (threshold 0) ruins the angles, so the threshold is what helps.
    trusted = pose.keypoints_to_signals(corrupted, conf, fps=30.0, conf_threshold=0.0)
    assert np.nanmax(np.abs(trusted["knee_angle_trajectory"] - knee)) > 20.0


def test_occluded_far_side_is_ignored():
    world, knee, _ = _squat()
    image = _to_image(world, 300.0, (600, 900))
    conf = np.full(image.shape[:2], 0.95)
    far = [j for name, j in _J.items() if name.startswith("right_")]
    rng = np.random.default_rng(0)
    image[:, far] += rng.normal(0, 200.0, size=(image.shape[0], len(far), 2))
    conf[:, far] = 0.1
    out = pose.keypoints_to_signals(image, conf, fps=30.0)
    np.testing.assert_allclose(out["knee_angle_trajectory"], knee, atol=1.0)


def test_joint_never_seen_gives_nan_signal():
    world, _, _ = _squat(20)
    image = _to_image(world, 300.0, (600, 900))
    image[:, [_J["left_wrist"], _J["right_wrist"]]] = np.nan
    out = pose.keypoints_to_signals(image, fps=30.0)
    assert np.isnan(out["arm_Trajectory"]).all()
    assert all(np.isfinite(out[n]).all() for n in SIGNAL_NAMES if n != "arm_Trajectory")


@pytest.mark.parametrize("fps,num_frames", [(24.0, 40), (60.0, 90), (30.0, 3), (30.0, 1)])
def test_frame_rates_and_short_clips(fps, num_frames):
    world, _, _ = _squat(max(num_frames, 2))
    out = pose.keypoints_to_signals(_to_image(world[:num_frames], 100.0), fps=fps)
    assert all(v.shape == (num_frames,) and np.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("keypoints,confidence,fps,match", [
    (np.zeros((5, 17, 3)), None, 30.0, r"\[T, 17, 2\], got \[5, 17, 3\]"),
    (np.zeros((5, 16, 2)), None, 30.0, r"\[T, 17, 2\]"),
    (np.zeros((0, 17, 2)), None, 30.0, "no frames"),
    (np.zeros((5, 17, 2)), np.ones((5, 16)), 30.0, "confidence must have shape"),
    (np.zeros((5, 17, 2)), None, 0.0, "fps"),
    (np.zeros((5, 17, 2)), None, 30.0, "torso length 0"),
    (np.full((5, 17, 2), np.nan), None, 30.0, "no reliable hip or shoulder"),
    ([[["a", "b"]] * 17], None, 30.0, "numeric"),
])
def test_bad_input_raises_value_error(keypoints, confidence, fps, match):
    with pytest.raises(ValueError, match=match):
        pose.keypoints_to_signals(keypoints, confidence, fps)
