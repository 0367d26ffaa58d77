"""A battery of bad clip files: each one is refused in one line naming the file and the field,
by the validator, by a directory inference (the good files are still answered) and by the
training data scan (the good files are still used). Nothing is a traceback, nothing is
silently wrong."""

import json
import os

import numpy as np
import pytest

from wavepose_jax import dataset, infer
from wavepose_jax.data import synthetic
from wavepose_jax.data.clip import clip_error_line, load_clip
from wavepose_jax.data.schema import SIGNAL_NAMES, ClipError
from wavepose_jax.files import list_clip_files
from wavepose_jax.testing import tiny_run_spec



def _good() -> dict:
    """A small valid squat clip with signals only (plus LANGUAGE and faults)."""
    clip = json.loads(json.dumps(synthetic.generate_clip(11, "squat", reps=3)))
    return {k: v for k, v in clip.items() if k not in ("keypoints", "confidence")}


def _with(**changes) -> dict:
    clip = _good()
    for key, value in changes.items():
        if value is _DROP:
            clip.pop(key, None)
        else:
            clip[key] = value
    return clip


_DROP = object()
N = len(_good()["trajectory"])


def _series(value) -> list:
    return [value] * N


def _bad_files() -> dict[str, tuple[object, str]]:
    """name -> (file content: dict, or raw text/bytes), the field the error must name."""
    knee = _good()["knee_angle_trajectory"]
    keypoints = json.loads(json.dumps(synthetic.generate_clip(11, "squat", reps=3)))
    kp = {k: v for k, v in keypoints.items() if k not in SIGNAL_NAMES and k != "wave_features"}
    deep = "[" * 100_000 + "]" * 100_000
    cases = {
        # The file itself.
        "empty": (b"", "<json>"),
        "truncated": (json.dumps(_good())[:200], "<json>"),
        "not_json": ("squat, 8 reps", "<json>"),
        "not_utf8": (b'{"fps": "\xff\xfe"}', "<json>"),
        "too_deep": (deep, "<json>"),
        "top_level_list": ([1, 2, 3], "<root>"),
        # fps and duration: refused before anything is allocated from them.
        "fps_string": (_with(fps="fast"), "fps"),
        "fps_zero": (_with(fps=0), "fps"),
        "fps_negative": (_with(fps=-30), "fps"),
        "fps_tiny": (_with(fps=1e-300), "fps"),
        "fps_micro_no_features": (_with(fps=1e-6, wave_features={}), "fps"),
        "fps_huge": (_with(fps=1e9), "fps"),
        "fps_bool": (_with(fps=True), "fps"),
        "fps_nan": ('{"fps": NaN, "knee_angle_trajectory": [170, 90, 170]}', "fps"),
        "too_long": ({"fps": 1, "knee_angle_trajectory": [170.0] * 4000}, "fps"),
        # The exercise.
        "exercise_unknown": (_with(exercise="curl"), "exercise"),
        "exercise_number": (_with(exercise=3), "exercise"),
        # Signals.
        "signal_string": (_with(knee_angle_trajectory="170, 90"), "knee_angle_trajectory"),
        "signal_object": (_with(trajectory={"a": 1}), "trajectory"),
        "signal_nested": (_with(trajectory=[[0.1, 0.2]] * N), "trajectory"),
        "signal_mixed": (_with(trajectory=_series(0.1)[:-1] + ["x"]), "trajectory"),
        "signal_bool": (_with(trajectory=_series(True)), "trajectory"),
        "signal_empty": (_with(trajectory=[]), "trajectory"),
        "signal_infinite": ('{"knee_angle_trajectory": [170, Infinity, 90]}',
                            "knee_angle_trajectory"),
        "signal_1e308": (_with(trajectory=[1e308 if i % 2 else -1e308 for i in range(N)]),
                         "trajectory"),
        "angle_3e38": (_with(knee_angle_trajectory=knee[:-1] + [3e38]), "knee_angle_trajectory"),
        "positions_in_pixels": (_with(trajectory=_series(640.0)), "trajectory"),
        "lengths_differ": (_with(core_=_series(0.5)[:-3]), "signals"),
        "all_null": ({k: [None] * 5 for k in SIGNAL_NAMES}, "signals"),
        "no_signals": ({"fps": 30, "exercise": "squat"}, "signals"),
        "too_many_frames": ({"knee_angle_trajectory": [170] * 100_001, "fps": 1000},
                            "knee_angle_trajectory"),
        # Keypoints.
        "keypoints_3d": ({**kp, "keypoints": [[[0, 0, 0]] * 17] * 4, "confidence": None},
                         "keypoints"),
        "keypoints_16_joints": ({**kp, "keypoints": [[[0, 0]] * 16] * 4, "confidence": None},
                                "keypoints"),
        "keypoints_huge": ({**kp, "keypoints": [[[1e30, 1e30]] * 17] * 4, "confidence": None},
                           "keypoints"),
        "confidence_shape": ({**kp, "confidence": [[1.0] * 17] * 3}, "confidence"),
        "confidence_alone": ({"confidence": [[1.0] * 17] * 3,
                              "knee_angle_trajectory": [170, 90, 170]}, "confidence"),
        "image_size_bad": ({**kp, "image_size": [0, 720]}, "image_size"),
        # Declared frame count.
        "n_frames_wrong": (_with(n_frames=N + 1), "n_frames"),
        "n_frames_string": (_with(n_frames="many"), "n_frames"),
        # wave_features.
        "features_not_object": (_with(wave_features=[1, 2]), "wave_features"),
        "grade_3000_chars": (_with(wave_features={**_good()["wave_features"], "quality": {
            **_good()["wave_features"]["quality"], "grade": "A" * 3000}}),
            "wave_features.quality.grade"),
        "absurd_rep_count": (_with(wave_features={**_good()["wave_features"], "harmonic": {
            "oscillation_count": 10 ** 9, "is_harmonic": True}}),
            "wave_features.harmonic.oscillation_count"),
        "negative_rep_count": (_with(wave_features={**_good()["wave_features"], "harmonic": {
            "oscillation_count": -2, "is_harmonic": True}}),
            "wave_features.harmonic.oscillation_count"),
        "duration_1e308": (_with(wave_features={**_good()["wave_features"], "waves": [
            {"type": "descent", "duration_sec": 1e308, "mean_velocity": 0, "smoothness": 1}]}),
            "wave_features.waves[0].duration_sec"),
        "waves_not_list": (_with(wave_features={**_good()["wave_features"], "waves": "many"}),
                           "wave_features.waves"),
        # Labels and metadata.
        "faults_not_list": (_with(faults="shallow_depth"), "faults"),
        "fault_unknown": (_with(faults=["knees_cave"]), "faults"),
        "fault_of_other_exercise": (_with(faults=["pushup_hip_sag"]), "faults"),
        "language_number": (_with(LANGUAGE=42), "LANGUAGE"),
        "video_id_list": (_with(video_id=["a"]), "video_id"),
        "expert_yes": (_with(expert="yes"), "expert"),
    }
    return cases


def _write(directory, name, content) -> str:
    path = os.path.join(directory, f"{name}.json")
    if isinstance(content, (dict, list)):
        content = json.dumps(content)
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A directory of the bad files and three good ones: (dir, bad paths -> field, good paths)."""
    directory = tmp_path_factory.mktemp("battery")
    bad = {_write(directory, name, content): field
           for name, (content, field) in _bad_files().items()}
    good = [_write(directory, "good_no_features", _with(wave_features=_DROP)),
            _write(directory, "good_empty_features", _with(wave_features={})),
            _write(directory, "good_partial_features", _with(wave_features={
                "quality": {"grade": "B"}}))]
    return directory, bad, good


def test_the_battery_is_large_and_every_file_is_refused_by_the_validator(clip_dir):
    _, bad, good = clip_dir
    assert len(bad) >= 40
    for path, field in bad.items():
        with pytest.raises(ClipError) as info:
            load_clip(path)
        line = str(info.value)
        assert line.startswith(f"{path}: field '{field}'"), line
        assert "\n" not in line and len(line) < 400, line


def test_partial_or_empty_features_are_completed_from_the_signals(clip_dir):
    _, _, good = clip_dir
    computed, empty, partial = (load_clip(p) for p in good)  # the first has no wave_features
    for clip in (empty, partial):
        assert clip.wave_features.harmonic.oscillation_count == 3  # measured, not unknown
        assert clip.wave_features.waves == computed.wave_features.waves
    assert partial.wave_features.quality.grade == "B"  # what the file gives is kept
    assert partial.wave_features.quality.overall == computed.wave_features.quality.overall
    assert empty.wave_features == computed.wave_features


def test_an_unexpected_error_is_still_one_line():
    line = clip_error_line("x.json", ZeroDivisionError("division by zero"))
    assert line == "x.json: ZeroDivisionError: division by zero"


def test_training_scan_keeps_the_good_files(clip_dir, capsys):
    from wavepose_jax import hf

    directory, bad, good = clip_dir
    spec = tiny_run_spec("wavepose_jax:assets/tiny-phi3")
    tokenizer = hf.load_tokenizer(spec.llm.path)
    paths = list_clip_files(directory)
    kept, examples, errors = dataset.scan_clips(paths, tokenizer, spec.data)
    assert sorted(kept) == sorted(good) and len(examples) == 3
    assert len(errors) == len(bad)
    assert all(np.isfinite(e.inputs.waves).all() for e in examples)
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"skipped {len(bad)} of {len(paths)} clip files" in err


def test_directory_inference_answers_the_good_and_reports_the_bad(clip_dir, tiny_run, capsys):
    directory, bad, good = clip_dir
    rc = infer.main(["--input", str(directory), "--ckpt", str(tiny_run[0]), "--json",
                     "--max_new_tokens", "3", "--batch_size", "4"])
    out, err = capsys.readouterr()
    assert rc == 1, err[-3000:]  # done, some files skipped
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for path, field in bad.items():
        assert sum(line.startswith(f"error: {path}: field '{field}'") for line in errors) == 1
    answered = [json.loads(line)["video_id"] for line in out.splitlines()]
    assert len(answered) == len(good)
    assert f"{len(bad)} of {len(bad) + len(good)} clip files failed" in err
