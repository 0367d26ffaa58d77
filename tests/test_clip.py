"""Tests for data/clip.py: loading, validation, model input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from wavepose_jax import clips
from wavepose_jax.data import clip as clip_lib
from wavepose_jax.data import validate
from wavepose_jax.data.schema import SIGNAL_NAMES, ClipError

WAVE_FEATURES = {
    "quality": {"grade": "B", "overall": 0.8, "smoothness": 0.7, "control": 0.9,
                "efficiency": 0.6, "consistency": 0.75},
    "energy": {"work_positive": 120.0, "work_negative": -110.0, "efficiency_pct": 91.0,
               "peak_power_w": 300.0},
    "damping": {"ratio": 0.4, "control_quality": "good"},
    "frequency": {"dominant_hz": 0.4, "spectral_entropy": 0.3,
                  "band_power": {"slow": 0.7, "medium": 0.2, "fast": 0.05, "harmonic": 0.05}},
    "harmonic": {"oscillation_count": 5, "is_harmonic": True},
    "waves": [{"type": "eccentric", "duration_sec": 1.2, "mean_velocity": 0.3, "smoothness": 0.8}],
    "wave_count": 1,
}


def _squat_signals(num_frames: int = 60, bottom_knee: float = 90.0) -> dict[str, list[float]]:
    s = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(num_frames) / (num_frames - 1))
    hip = -0.6 * s * (180 - bottom_knee) / 90
    return {
        "trajectory": hip.tolist(),
        "legs_trajectory": (-0.9 + 0.0 * s).tolist(),
        "shoulder_trajectory": (hip + 1.0 - 0.2 * s).tolist(),
        "back_trajectory": (180 - 80 * s).tolist(),
        "knee_angle_trajectory": (180 - (180 - bottom_knee) * s).tolist(),
        "arm_Trajectory": (hip + 0.8).tolist(),
        "core_": (1.0 - 0.2 * s).tolist(),
    }


_DROP = object()  # marks a key to leave out


def _clip_dict(**overrides) -> dict:
    d = {"video_id": "v1", "exercise": "squat", "fps": 30, **_squat_signals(),
         "wave_features": WAVE_FEATURES, "LANGUAGE": "Good depth.", "faults": [],
         "expert": True, "reps": 1}
    d.update(overrides)
    return {k: v for k, v in d.items() if v is not _DROP}


def _write(tmp_path, obj, name="clip.json") -> str:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def _keypoints(num_frames: int) -> list:
    """A standing skeleton swaying vertically, image y down, in pixels -> [T][17][2]."""
    base = np.zeros((17, 2))
    base[0] = [500, 100]                       # nose
    base[1:5] = [500, 95]                      # eyes, ears
    base[5:7] = [500, 150]                     # shoulders
    base[7:9] = [530, 200]                     # elbows
    base[9:11] = [560, 250]                    # wrists
    base[11:13] = [500, 350]                   # hips
    base[13:15] = [500, 500]                   # knees
    base[15:17] = [500, 650]                   # ankles
    sway = 10 * np.sin(np.arange(num_frames) / 5)[:, None, None] * np.array([0, 1])
    return (base[None] + sway).tolist()


def test_valid_clip_loads(tmp_path):
    c = clip_lib.load_clip(_write(tmp_path, _clip_dict(exercise="Push-Up", CAMERA_POSITION="side")))
    assert (c.video_id, c.exercise, c.fps, c.n_frames) == ("v1", "pushup", 30.0, 60)
    assert set(c.signals) == set(SIGNAL_NAMES) and all(c.present.values())
    assert all(v.dtype == np.float32 and v.shape == (60,) for v in c.signals.values())
    assert c.wave_features.to_json() == WAVE_FEATURES
    assert (c.language, c.faults, c.expert) == ("Good depth.", [], True)
    assert c.meta == {"reps": 1, "CAMERA_POSITION": "side"}
    assert c.keypoints is None and c.confidence is None


def test_defaults_when_optional_keys_missing(tmp_path):
    d = _clip_dict(video_id=_DROP, exercise=_DROP, fps=None, LANGUAGE=_DROP, faults=None,
                   expert=_DROP)
    c = clip_lib.load_clip(_write(tmp_path, d, "my_clip.json"))
    assert (c.video_id, c.exercise, c.fps) == ("my_clip", "squat", 30.0)
    assert (c.language, c.faults, c.expert) == (None, None, None)


def test_nan_and_null_gaps_interpolated(tmp_path):
    text = json.dumps(_clip_dict(trajectory=[None, 1.0, None, None, 4.0, None] + [0.0] * 54))
    text = text.replace("[null, 1.0, null, null, 4.0, null, 0.0", "[null, 1.0, NaN, null, 4.0, NaN, 0.0")
    assert "NaN" in text
    c = clip_lib.load_clip(_write(tmp_path, text))
    np.testing.assert_allclose(c.signals["trajectory"][:7], [1, 1, 2, 3, 4, 2, 0])
    assert c.present["trajectory"]


def test_missing_and_all_null_channels_absent(tmp_path):
    c = clip_lib.load_clip(_write(tmp_path, _clip_dict(arm_Trajectory=_DROP, core_=[None] * 60)))
    for name in ("arm_Trajectory", "core_"):
        assert not c.present[name]
        np.testing.assert_array_equal(c.signals[name], np.zeros(60, np.float32))
    waves, _ = c.model_input(60)
    np.testing.assert_array_equal(waves[:, SIGNAL_NAMES.index("arm_Trajectory")], 0.0)
    assert c.present["trajectory"] and np.abs(waves).sum() > 0


def test_keypoints_only_clip_derives_signals(tmp_path):
    kp = _keypoints(40)
    conf = np.full((40, 17), 0.9).tolist()
    d = {"exercise": "squat", "fps": 30, "keypoints": kp, "confidence": conf,
         "wave_features": WAVE_FEATURES}
    c = clip_lib.load_clip(_write(tmp_path, d))
    assert c.n_frames == 40 and all(c.present.values())
    assert c.keypoints.shape == (40, 17, 2) and c.confidence.shape == (40, 17)
    np.testing.assert_allclose(c.signals["core_"], 1.0, atol=1e-3)  # shoulders 1 torso above hips
    np.testing.assert_allclose(c.signals["knee_angle_trajectory"], 180.0, atol=0.5)
    # Given signals win over derived ones for the channels they provide.
    d["knee_angle_trajectory"] = [100.0] * 40
    c = clip_lib.load_clip(_write(tmp_path, d))
    np.testing.assert_allclose(c.signals["knee_angle_trajectory"], 100.0)
    np.testing.assert_allclose(c.signals["core_"], 1.0, atol=1e-3)


def test_wave_features_computed_when_absent(tmp_path):
    s = 0.5 - 0.5 * np.cos(2 * np.pi * 3 * np.arange(180) / 179)  # three reps
    d = _clip_dict(wave_features=_DROP, **{name: np.zeros(180).tolist() for name in SIGNAL_NAMES})
    d.update(knee_angle_trajectory=(180 - 90 * s).tolist(), trajectory=(-0.6 * s).tolist())
    c = clip_lib.load_clip(_write(tmp_path, d))
    assert set(c.wave_features.to_json()) >= set(validate.WAVE_FEATURES_SCHEMA)
    assert c.wave_features.harmonic.oscillation_count == 3
    # The computed features satisfy the validation applied to features given in a file.
    again = clip_lib.load_clip(_write(tmp_path, {**d, "wave_features": c.wave_features.to_json()}))
    assert again.wave_features == c.wave_features


_N = len(_squat_signals()["trajectory"])
_KP_NO_HIPS = [[[None, None] if j in (11, 12) else [1.0, 2.0 + j] for j in range(17)]] * 5

# (file content, field named in the error)
BAD_CLIPS = {
    "malformed_json": ('{"trajectory": [1, 2', "<json>"),
    "top_level_list": ("[1, 2, 3]", "<root>"),
    "top_level_string": ('"clip"', "<root>"),
    "string_value": (_clip_dict(trajectory=["1"] * _N), "trajectory"),
    "bool_value": (_clip_dict(core_=[True] * _N), "core_"),
    "object_value": (_clip_dict(core_=[{"a": 1}] * _N), "core_"),
    "scalar_channel": (_clip_dict(core_=3.0), "core_"),
    "nested_channel": (_clip_dict(trajectory=[[1.0, 2.0]] * _N), "trajectory"),
    "infinite_value": ('{"trajectory": [1, Infinity, 2]}', "trajectory"),
    "empty_object": ({}, "signals"),
    "only_metadata": ({"fps": 30, "exercise": "squat", "LANGUAGE": "x"}, "signals"),
    "empty_channel": (_clip_dict(trajectory=[]), "trajectory"),
    "all_channels_null": ({"trajectory": [None] * 4, "core_": [None] * 4}, "signals"),
    "too_many_frames": ({"trajectory": [0.0] * (validate.MAX_FRAMES + 1)}, "trajectory"),
    "different_lengths": (_clip_dict(core_=[1.0] * (_N - 1)), "signals"),
    "n_frames_mismatch": (_clip_dict(n_frames=_N + 5), "n_frames"),
    "n_frames_string": (_clip_dict(n_frames="60"), "n_frames"),
    "fps_zero": (_clip_dict(fps=0), "fps"),
    "fps_negative": (_clip_dict(fps=-30), "fps"),
    "fps_string": (_clip_dict(fps="30"), "fps"),
    "fps_bool": (_clip_dict(fps=True), "fps"),
    "fps_nan": ('{"fps": NaN, "trajectory": [1, 2, 3]}', "fps"),
    "fps_absurd": (_clip_dict(fps=1e9), "fps"),
    "keypoints_empty": ({"keypoints": []}, "keypoints"),
    "keypoints_3_coords": ({"keypoints": [[[0.0, 0.0, 1.0]] * 17] * 5}, "keypoints"),
    "keypoints_16_joints": ({"keypoints": [[[0.0, 0.0]] * 16] * 5}, "keypoints"),
    "keypoints_ragged": ({"keypoints": [[[0.0, 0.0]] * 17, [[0.0, 0.0]] * 16]}, "keypoints"),
    "keypoints_string": ({"keypoints": [[["a", "b"]] * 17] * 5}, "keypoints"),
    "keypoints_no_hips": ({"keypoints": _KP_NO_HIPS}, "keypoints"),
    "keypoints_frames_mismatch": ({"keypoints": _keypoints(10), "core_": [1.0] * 9}, "keypoints"),
    "confidence_shape": ({"keypoints": _keypoints(5), "confidence": [[1.0] * 16] * 5}, "confidence"),
    "confidence_without_keypoints": (_clip_dict(confidence=[[1.0] * 17] * _N), "confidence"),
    "wave_features_list": (_clip_dict(wave_features=[1, 2]), "wave_features"),
    "wave_features_bad_number": (
        _clip_dict(wave_features={**WAVE_FEATURES, "quality": {"grade": "B", "overall": "high"}}),
        "wave_features.quality.overall"),
    "wave_features_bad_wave": (
        _clip_dict(wave_features={"waves": [{"type": "up", "duration_sec": "1s"}]}),
        "wave_features.waves[0].duration_sec"),
    "wave_features_bad_count": (_clip_dict(wave_features={"wave_count": 2.5}),
                                "wave_features.wave_count"),
    "unknown_exercise": (_clip_dict(exercise="yoga"), "exercise"),
    "exercise_not_string": (_clip_dict(exercise=3), "exercise"),
    "language_not_string": (_clip_dict(LANGUAGE=["good"]), "LANGUAGE"),
    "faults_string": (_clip_dict(faults="shallow_depth"), "faults"),
    "faults_numbers": (_clip_dict(faults=[1, 2]), "faults"),
    "expert_string": (_clip_dict(expert="yes"), "expert"),
    "video_id_list": (_clip_dict(video_id=[1]), "video_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLIPS))
def test_bad_clip_raises_clip_error_naming_file_and_field(tmp_path, case):
    content, field = BAD_CLIPS[case]
    path = _write(tmp_path, content, f"{case}.json")
    with pytest.raises(ClipError) as info:
        clip_lib.load_clip(path)
    err = info.value
    assert err.field == field and err.source == path
    assert path in str(err) and f"'{field}'" in str(err) and "\n" not in str(err)


def test_missing_file_and_directory(tmp_path):
    for path, problem in [(tmp_path / "nope.json", "not found"), (tmp_path, "directory")]:
        with pytest.raises(ClipError, match=problem) as info:
            clip_lib.load_clip(path)
        assert info.value.field == "<file>" and str(path) in str(info.value)


def test_clip_from_dict_accepts_arrays():
    d = {k: np.asarray(v) for k, v in _squat_signals().items()}
    c = clip_lib.clip_from_dict({**d, "wave_features": WAVE_FEATURES}, source="mem")
    assert c.source == "mem" and c.n_frames == 60
    with pytest.raises(ClipError, match="mem: field '<root>'"):
        clip_lib.clip_from_dict([1], source="mem")


def test_normalize_signals_physical_constants():
    x = np.array([[0.5, -1.0, 1.0, 180.0, 90.0, 2.0, 1.0],
                  [0.0, 0.0, 0.0, 0.0, 135.0, 0.0, 0.0]])
    out = clip_lib.normalize_signals(x)
    np.testing.assert_allclose(out[0], [0.25, -0.5, 0.5, 1.0, 0.0, 1.0, 0.5])
    np.testing.assert_allclose(out[1], [0, 0, 0, -1.0, 0.5, 0, 0])
    as_dict = clip_lib.normalize_signals(dict(zip(SIGNAL_NAMES, x.T)))
    np.testing.assert_array_equal(as_dict, out)
    with pytest.raises(ValueError, match="unknown normalization"):
        clip_lib.normalize_signals(x, "zscore")


def test_physical_normalisation_keeps_amplitude():
    deep = clip_lib.clip_from_dict({**_squat_signals(61, bottom_knee=80.0),
                                    "wave_features": WAVE_FEATURES})
    shallow = clip_lib.clip_from_dict({**_squat_signals(61, bottom_knee=120.0),
                                       "wave_features": WAVE_FEATURES})
    knee = SIGNAL_NAMES.index("knee_angle_trajectory")
    deep_w, _ = deep.model_input(61)
    shallow_w, _ = shallow.model_input(61)
    assert shallow_w[:, knee].min() - deep_w[:, knee].min() == pytest.approx(40 / 90, abs=1e-4)
    deep_m, _ = deep.model_input(61, normalization="minmax")
    shallow_m, _ = shallow.model_input(61, normalization="minmax")
    np.testing.assert_allclose(deep_m, shallow_m, atol=1e-5)  # min-max erases the depth


def test_pad_truncate_and_mask():
    c = clip_lib.clip_from_dict({**_squat_signals(50), "wave_features": WAVE_FEATURES})
    full, _ = c.model_input(50)
    waves, mask = c.model_input(80)
    assert waves.shape == (80, 7) and waves.dtype == np.float32 and mask.dtype == bool
    assert mask.sum() == 50 and mask[:50].all()
    np.testing.assert_array_equal(waves[:50], full)
    np.testing.assert_array_equal(waves[50:], 0.0)
    waves, mask = c.model_input(30)
    assert mask.all() and waves.shape == (30, 7)
    np.testing.assert_array_equal(waves, full[:30])


def test_resample_60_to_30_fps_halves_frames():
    t = np.arange(120, dtype=float)
    signals = {name: (t / 100.0).tolist() for name in SIGNAL_NAMES}
    c = clip_lib.clip_from_dict({**signals, "fps": 60, "wave_features": WAVE_FEATURES})
    waves, mask = c.model_input(300, target_fps=30.0)
    assert mask.sum() == 60
    expected = clip_lib.normalize_signals(c.signals)[::2]
    np.testing.assert_allclose(waves[:60], expected, atol=1e-6)
    same, same_mask = c.model_input(300, target_fps=60.0)
    assert same_mask.sum() == 120
    assert clip_lib.resample(np.zeros((90, 7)), 30.0, 60.0).shape == (179, 7)


def test_cli_summary_and_errors(tmp_path, capsys):
    good = _write(tmp_path, _clip_dict(core_=_DROP), "good.json")
    bad = _write(tmp_path, _clip_dict(fps=-1), "bad.json")
    assert clips.main(["check", good]) == 0
    assert clips.main(["check", good, bad]) == 1
    out, err = capsys.readouterr()
    assert out.count("good.json: video_id=v1") == 2 and "absent: core_" in out
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "bad.json: field 'fps'" in errors[0]
    assert clips.main([]) == 2 and clips.main(["check"]) == 2
    assert clips.main(["--help"]) == 0 and "wavepose-clips check" in capsys.readouterr().out


def test_cli_module_entry_point(tmp_path):
    bad = _write(tmp_path, "{", "broken.json")
    proc = subprocess.run([sys.executable, "-m", "wavepose_jax.clips", "check", bad],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == f"error: {bad}: field '<json>': malformed JSON: " \
        "Expecting property name enclosed in double quotes at line 1 column 2"


def test_image_size_corrects_separately_normalised_keypoints():
    from wavepose_jax.data.synthetic import generate_clip

    d = generate_clip(3, "squat", max_reps=3)
    pixels = np.asarray(d["keypoints"], np.float64)
    w, h = 1920.0, 1080.0
    normalised = (pixels / np.array([w, h])).tolist()
    ref = clip_lib.clip_from_dict({"fps": d["fps"], "keypoints": d["keypoints"],
                                   "confidence": d["confidence"], "exercise": "squat"})
    fixed = clip_lib.clip_from_dict({"fps": d["fps"], "keypoints": normalised, "image_size": [w, h],
                                     "confidence": d["confidence"], "exercise": "squat"})
    raw = clip_lib.clip_from_dict({"fps": d["fps"], "keypoints": normalised,
                                   "confidence": d["confidence"], "exercise": "squat"})
    knee = "knee_angle_trajectory"
    np.testing.assert_allclose(fixed.signals[knee], ref.signals[knee], atol=1e-2)
    assert np.abs(raw.signals[knee] - ref.signals[knee]).max() > 2.0  # uncorrected: distorted
    with pytest.raises(ClipError, match="image_size"):
        clip_lib.clip_from_dict({"fps": 30, "keypoints": normalised, "image_size": [0, 1]})
