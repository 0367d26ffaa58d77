"""Validation of a clip file's fields: every problem becomes one `ClipError` naming the field.

`clip.clip_from_dict` reads a clip with these readers and checks:
- A channel's ``null``/NaN gaps are filled by linear interpolation (edges held). A channel
  that is missing or entirely null is absent: zeros with ``present[name] = False``.
- Present channels must be flat lists of numbers of one common length, 1..MAX_FRAMES, within
  plausible magnitudes (|angle| <= ANGLE_LIMIT_DEG, |position| <= POSITION_LIMIT torso units,
  |keypoint| <= KEYPOINT_LIMIT), so nothing overflows float32 downstream. Keypoints
  [T][17][2] (+ confidence [T][17]) give the channels the signals leave out
  (``pose.keypoints_to_signals``, with the width / height of ``image_size`` for normalised
  keypoints).
- ``fps`` defaults to 30 and must be a number in [MIN_FPS, MAX_FPS]; the clip may last at
  most MAX_DURATION_SEC. Both are checked before anything is allocated from them.
- An optional key set to null counts as missing.
- ``exercise`` defaults to "squat" only when missing; a given value must name a known
  exercise (``schema.EXERCISE_ALIASES``) and is stored in canonical form.
- ``wave_features`` must follow the seed schema's types where present
  (``WAVE_FEATURES_SCHEMA``: numbers finite and within float32, strings short, counts
  plausible).
- ``faults`` must name faults of the clip's exercise (``faults.faults_for``).
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, NamedTuple

import numpy as np

from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import pose
from wavepose_jax.data.schema import (ANGLE_SIGNALS, EXERCISES, SIGNAL_NAMES, ClipError,
                                      canonical_exercise)

MAX_FRAMES = 100_000
MIN_FPS, MAX_FPS = 1.0, 1000.0  # frame rates a pose estimator produces; others are refused
MAX_DURATION_SEC = 3600.0       # one set, not a day of footage
# Plausible magnitudes, far beyond any real body (and refusing what would overflow float32):
ANGLE_LIMIT_DEG = 360.0         # joint angles, degrees
POSITION_LIMIT = 50.0           # positions, torso units (pixels passed as signals fail here)
KEYPOINT_LIMIT = 1e5            # keypoints, pixels or normalised
MAX_TEXT = 64                   # characters of a short wave_features string (grade, type)
MAX_COUNT = 10_000              # reps or waves in wave_features
_F32_MAX = float(np.finfo(np.float32).max)
DEFAULT_FPS = 30.0
DEFAULT_EXERCISE = "squat"

# Types of the seed ``wave_features`` schema (typed: `features.WaveFeatures`): a dict is a
# nested object, a list of one dict a list of such objects; "number" excludes bool.
_NUM, _INT, _STR, _BOOL = "number", "integer", "string", "boolean"
WAVE_FEATURES_SCHEMA: dict[str, Any] = {
    "quality": {"grade": _STR, "overall": _NUM, "smoothness": _NUM, "control": _NUM,
                "efficiency": _NUM, "consistency": _NUM},
    "energy": {"work_positive": _NUM, "work_negative": _NUM, "efficiency_pct": _NUM,
               "peak_power_w": _NUM},
    "damping": {"ratio": _NUM, "control_quality": (_STR, _NUM)},
    "frequency": {"dominant_hz": _NUM, "spectral_entropy": _NUM,
                  "band_power": {"slow": _NUM, "medium": _NUM, "fast": _NUM, "harmonic": _NUM}},
    "harmonic": {"oscillation_count": _INT, "is_harmonic": _BOOL},
    "waves": [{"type": _STR, "duration_sec": _NUM, "mean_velocity": _NUM, "smoothness": _NUM}],
    "wave_count": _INT,
    "rep_faults": [[_STR]],
}



def type_name(value: Any) -> str:
    """A JSON value's type, for messages (null for None)."""
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _numeric_array(value: Any, shape: tuple[int | None, ...], src: str,
                   field: str) -> np.ndarray:
    """A nested list (or array) of numbers/nulls -> float64 array; nulls become NaN.

    Args:
      shape: expected shape; None = any length (the frame axis).
    """
    spelled = "[" + "][".join("T" if d is None else str(d) for d in shape) + "]"
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        arr = value.astype(np.float64)
    else:
        if not isinstance(value, (list, tuple, np.ndarray)) or getattr(value, "ndim", 1) == 0:
            raise ClipError(src, field,
                            f"expected a list {spelled} of numbers, got {type_name(value)}")
        if len(value) == 0:
            raise ClipError(src, field, "empty; a clip needs at least one frame")
        if len(value) > MAX_FRAMES:
            raise ClipError(src, field, f"{len(value)} frames exceeds the limit of {MAX_FRAMES}")
        try:
            obj = np.array(value, dtype=object)
        except ValueError:
            raise ClipError(src, field, f"ragged nested lists; expected {spelled}") from None
        if obj.ndim != len(shape):
            raise ClipError(src, field, f"ragged or wrongly nested lists; expected {spelled}")
        bad = {t for t in set(map(type, obj.flat))
               if t is not type(None) and not (issubclass(t, numbers.Real)
                                               and not issubclass(t, (bool, np.bool_)))}
        if bad:
            names = ", ".join(sorted("list" if issubclass(t, (list, tuple)) else t.__name__
                                     for t in bad))
            raise ClipError(src, field, f"non-numeric values ({names}); expected numbers or null")
        try:
            arr = np.array(value, dtype=np.float64)
        except (OverflowError, ValueError, TypeError) as e:
            raise ClipError(src, field, f"values not representable as numbers ({e})") from None
    if arr.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, arr.shape)):
        raise ClipError(src, field, f"expected shape {spelled}, got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ClipError(src, field, "empty; a clip needs at least one frame")
    if arr.shape[0] > MAX_FRAMES:
        raise ClipError(src, field, f"{arr.shape[0]} frames exceeds the limit of {MAX_FRAMES}")
    if np.isinf(arr).any():
        raise ClipError(src, field, "contains infinite values")
    limit = (ANGLE_LIMIT_DEG if field in ANGLE_SIGNALS else KEYPOINT_LIMIT
             if field == "keypoints" else 1.0 if field == "confidence" else POSITION_LIMIT)
    finite = arr[np.isfinite(arr)]
    if finite.size and np.abs(finite).max() > limit:
        worst = float(finite[np.argmax(np.abs(finite))])
        unit = ("degrees" if field in ANGLE_SIGNALS else "" if field in ("keypoints", "confidence")
                else "torso units (positions are relative to the hip, torso length 1)")
        raise ClipError(src, field, f"value {worst:.4g} is outside the plausible range "
                        f"+-{limit:g} {unit}".rstrip())
    return arr


def _fill_gaps(x: np.ndarray) -> np.ndarray:
    """[T] with NaN gaps -> linearly interpolated, edges held (all-NaN stays all-NaN)."""
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x
    t = np.arange(x.shape[0])
    return np.interp(t, t[ok], x[ok])


def check_wave_features(value: Any, src: str) -> None:
    """A file's `wave_features` follows ``WAVE_FEATURES_SCHEMA`` where present."""
    _check_schema(value, WAVE_FEATURES_SCHEMA, src, "wave_features")


def _check_schema(value: Any, spec: Any, src: str, field: str) -> None:
    """Checks ``value`` against a ``WAVE_FEATURES_SCHEMA`` node; missing keys are allowed."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ClipError(src, field, f"expected an object, got {type_name(value)}")
        for key, sub in spec.items():
            if key in value:
                _check_schema(value[key], sub, src, f"{field}.{key}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise ClipError(src, field, f"expected a list, got {type_name(value)}")
        for i, item in enumerate(value):
            _check_schema(item, spec[0], src, f"{field}[{i}]")
    else:
        allowed = spec if isinstance(spec, tuple) else (spec,)
        ok = any({
            _NUM: _is_number(value) and math.isfinite(value) and abs(value) <= _F32_MAX,
            _INT: (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
                   and 0 <= value <= MAX_COUNT),
            _STR: isinstance(value, str) and 0 < len(value.strip()) <= MAX_TEXT
                  and value.isprintable(),
            _BOOL: isinstance(value, (bool, np.bool_)),
        }[kind] for kind in allowed)
        if not ok:
            limits = {_NUM: "a finite number", _INT: f"an integer in [0, {MAX_COUNT}]",
                      _STR: f"a printable string of 1..{MAX_TEXT} characters", _BOOL: "a boolean"}
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ClipError(src, field, f"expected {' or '.join(limits[k] for k in allowed)}, "
                            f"got {shown}")


def read_fps(d: dict, src: str) -> float:
    """`fps`: DEFAULT_FPS when missing, else a number in [MIN_FPS, MAX_FPS]."""
    if d.get("fps") is None:
        return DEFAULT_FPS
    fps = d["fps"]
    if not _is_number(fps) or not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
        raise ClipError(src, "fps", f"expected a number in [{MIN_FPS:g}, {MAX_FPS:g}], "
                        f"got {fps!r}")
    return float(fps)


def read_exercise(d: dict, src: str) -> str:
    """`exercise` in canonical form: DEFAULT_EXERCISE when missing, else a known name."""
    if d.get("exercise") is None:
        return DEFAULT_EXERCISE
    name = d["exercise"]
    canonical = canonical_exercise(name) if isinstance(name, str) else None
    if canonical is None:
        raise ClipError(src, "exercise",
                        f"unknown exercise {name!r}; expected one of {list(EXERCISES)}")
    return canonical


def read_optional_str(d: dict, key: str, src: str) -> str | None:
    """An optional string field (e.g. `LANGUAGE`), or None."""
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise ClipError(src, key, f"expected a string, got {type_name(value)}")
    return value


def read_faults(d: dict, exercise: str, src: str) -> list[str] | None:
    """`faults`: a list of fault ids of the exercise (a typo would silently train no label)."""
    value = d.get("faults")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise ClipError(src, "faults", f"expected a list of strings, got {value!r:.80}")
    if value:
        known = [f.id for f in faults_lib.faults_for(exercise)]
        unknown = [f for f in value if f not in known]
        if unknown:
            raise ClipError(src, "faults", f"unknown fault {unknown[0]!r} for {exercise}; "
                            f"expected some of {known}")
    return list(value)


def check_frame_count(d: dict, n_frames: int, fps: float, src: str) -> None:
    """The clip lasts at most MAX_DURATION_SEC; an `n_frames` given matches the data."""
    if n_frames / fps > MAX_DURATION_SEC:
        raise ClipError(src, "fps", f"{n_frames} frames at {fps:g} fps last "
                        f"{n_frames / fps:.0f} s, more than {MAX_DURATION_SEC:g} s")
    declared = d.get("n_frames")
    if declared is not None:
        if not isinstance(declared, int) or isinstance(declared, bool):
            raise ClipError(src, "n_frames", f"expected an integer, got {declared!r}")
        if declared != n_frames:
            raise ClipError(src, "n_frames",
                            f"says {declared} but the data has {n_frames} frames")


def read_expert(d: dict, src: str) -> bool | None:
    """`expert`: true/false (or 1/0), or None."""
    value = d.get("expert")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ClipError(src, "expert", f"expected true/false, got {value!r}")


def read_video_id(d: dict, src: str) -> str:
    """`video_id` (a string or an integer), else the file name without its extension."""
    value = d.get("video_id")
    if value is None:
        return os.path.splitext(os.path.basename(src))[0]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ClipError(src, "video_id", f"expected a string, got {type_name(value)}")
    return str(value)


class ClipSignals(NamedTuple):
    """What `read_signals` reads: the 7 signals and where they come from.

    Attributes:
      signals: every name of ``SIGNAL_NAMES`` -> float32 [T]; zeros when absent.
      present: name -> whether the channel carries data.
      keypoints: float32 [T, 17, 2] as given (NaN = missing), or None.
      confidence: float32 [T, 17], or None.
      coverage: name -> the fraction of frames measured rather than interpolated.
    """

    signals: dict[str, np.ndarray]
    present: dict[str, bool]
    keypoints: np.ndarray | None
    confidence: np.ndarray | None
    coverage: dict[str, float]


def read_signals(d: dict, fps: float, src: str) -> ClipSignals:
    """The 7 signals from the file's signals and keypoints (module docstring: gaps, absent
    channels, limits; the file's signals win over those the keypoints give)."""
    given: dict[str, np.ndarray] = {}
    coverage: dict[str, float] = {}
    for name in SIGNAL_NAMES:
        if d.get(name) is not None:
            raw = _numeric_array(d[name], (None,), src, name)
            coverage[name] = float(np.isfinite(raw).mean())
            given[name] = _fill_gaps(raw)
    lengths = {name: x.shape[0] for name, x in given.items()}
    if len(set(lengths.values())) > 1:
        raise ClipError(src, "signals", f"channels have different lengths {lengths}")

    keypoints = confidence = None
    if d.get("keypoints") is not None:
        keypoints = _numeric_array(d["keypoints"], (None, len(pose.COCO17), 2), src, "keypoints")
        if d.get("confidence") is not None:
            confidence = _numeric_array(d["confidence"], (keypoints.shape[0], len(pose.COCO17)),
                                        src, "confidence")
        if lengths and keypoints.shape[0] != next(iter(lengths.values())):
            raise ClipError(src, "keypoints", f"{keypoints.shape[0]} frames but the signals "
                            f"have {next(iter(lengths.values()))}")
        aspect = aspect_ratio(d, keypoints, src)
        try:
            derived = pose.keypoints_to_signals(keypoints, confidence, fps, aspect_ratio=aspect)
        except ValueError as e:
            raise ClipError(src, "keypoints", str(e)) from None
        measured = pose.signal_coverage(keypoints, confidence)
        for name, x in derived.items():
            if name not in given or np.isnan(given[name]).all():
                given[name] = x
                coverage[name] = measured[name]
    elif d.get("confidence") is not None:
        raise ClipError(src, "confidence", "given without keypoints")

    if not given:
        raise ClipError(src, "signals",
                        f"no signal channel ({', '.join(SIGNAL_NAMES)}) and no keypoints")
    n_frames = next(iter(given.values())).shape[0]
    signals, present = {}, {}
    for name in SIGNAL_NAMES:
        x = given.get(name)
        present[name] = x is not None and not np.isnan(x).all()
        signals[name] = x.astype(np.float32) if present[name] else np.zeros(n_frames, np.float32)
    if not any(present.values()):
        raise ClipError(src, "signals", "every channel is entirely null")
    coverage = {name: coverage.get(name, 0.0) if present[name] else 0.0 for name in SIGNAL_NAMES}
    return ClipSignals(signals, present, _as_f32(keypoints), _as_f32(confidence), coverage)


def aspect_ratio(d: dict, keypoints: np.ndarray, src: str) -> float:
    """Width / height from the optional ``image_size`` [w, h] when keypoints are normalised.

    Normalised keypoints (every coordinate within [0, 1.5]) from estimators that divide x by the
    width and y by the height distort angles unless x is scaled back by w / h. Pixel keypoints
    need no correction, so ``image_size`` is ignored for them.
    """
    size = d.get("image_size")
    if size is None:
        return 1.0
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in size)
            or not all(math.isfinite(v) and v > 0 for v in size)):
        raise ClipError(src, "image_size", f"expected [width, height] > 0, got {size!r}")
    finite = keypoints[np.isfinite(keypoints)]
    normalised = finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.5
    return float(size[0]) / float(size[1]) if normalised else 1.0


def _as_f32(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else x.astype(np.float32)
