"""Clip files: loading, validation, and the model's input arrays.

A clip is a JSON object (docs/architecture.md, "Clip files") holding the 7 body-region signals of
``schema.SIGNAL_NAMES`` and/or COCO-17 ``keypoints`` [T][17][2] (+ ``confidence`` [T][17]),
from which ``pose.keypoints_to_signals`` derives the signals. When both are given, the file's
signals win for every channel they provide and the keypoints fill the others.

Validation turns every problem of the data into one ``ClipError`` naming the file and field:
- A channel's ``null``/NaN gaps are filled by linear interpolation (edges held). A channel
  that is missing or entirely null is absent: zeros with ``present[name] = False``.
- Present channels must be flat lists of numbers of one common length, 1..MAX_FRAMES, within
  plausible magnitudes (|angle| <= ANGLE_LIMIT_DEG, |position| <= POSITION_LIMIT torso units,
  |keypoint| <= KEYPOINT_LIMIT), so nothing overflows float32 downstream.
- ``fps`` defaults to 30 and must be a number in [MIN_FPS, MAX_FPS]; the clip may last at
  most MAX_DURATION_SEC. Both are checked before anything is allocated from them.
- An optional key set to null counts as missing.
- ``exercise`` defaults to "squat" only when missing; a given value must name a known
  exercise (``schema.EXERCISE_ALIASES``) and is stored in canonical form.
- ``wave_features`` must follow the seed schema's types where present (numbers finite and
  within float32, strings short, counts plausible); when the key is missing, or parts the
  prompt needs are, the missing parts are computed by ``faults.wave_features`` (the wave analysis plus the
  rules' verdict on every rep, ``rep_faults``).
- ``faults`` must name faults of the clip's exercise (``faults.faults_for``).
- Any other error while reading a clip becomes a ``ClipError`` too (field ``<clip>``).
- Keys outside the contract (e.g. a generator's ground truth such as ``reps``), and the
  optional ``error_rate`` / ``CAMERA_POSITION``, are kept unchanged in ``Clip.meta``.

Model input normalisation ("physical", the default) uses fixed scales, so amplitude survives:
angles map as (deg - 90) / 90 (0 deg -> -1, 90 -> 0, 180 -> 1) and positions, in torso units,
are divided by POSITION_SCALE = 2 (a hip 0.5 torso below its median height -> -0.25).
"minmax" is the per-clip min-max to [0, 1] of the original implementation: it erases
amplitude (a shallow squat looks like a deep one) and is kept only for comparison.

Command line, to check files: ``wavepose-clips check FILE...`` (`wavepose_jax/clips.py`) prints
one summary line per file, or one error line per bad file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Any

import numpy as np

from wavepose_jax.data import pose
from wavepose_jax.data.features import WaveFeatures
from wavepose_jax.data.schema import (ANGLE_SIGNALS, EXERCISES, NUM_SIGNALS, SIGNAL_NAMES,
                                      ClipError, canonical_exercise)

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
ANGLE_CENTER_DEG = 90.0   # "physical" normalisation: (deg - 90) / 90.
ANGLE_SCALE_DEG = 90.0
POSITION_SCALE = 2.0      # "physical" normalisation: torso units / 2.
NORMALIZATIONS = ("physical", "minmax")

# Keys of the contract handled by this module; every other key goes to Clip.meta.
_KNOWN_KEYS = frozenset(SIGNAL_NAMES) | {
    "keypoints", "confidence", "image_size", "fps", "n_frames", "exercise", "video_id", "expert",
    "wave_features", "LANGUAGE", "faults"}

# Types of the seed ``wave_features`` schema: a dict is a nested object, a list of one dict a
# list of such objects; "number" excludes bool.
_NUM, _INT, _STR, _BOOL = "number", "integer", "string", "boolean"
_WAVE_FEATURES_SCHEMA: dict[str, Any] = {
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


@dataclasses.dataclass
class Clip:
    """One validated clip.

    Attributes:
      video_id: identifier (the file's ``video_id``, else the file name without extension).
      exercise: canonical exercise id (one of ``schema.EXERCISES``).
      fps: frames per second.
      signals: every name of ``SIGNAL_NAMES`` -> float32 [n_frames]; zeros when absent.
      present: name -> whether the channel carries data.
      wave_features: the seed-schema analysis (from the file, parts it lacks computed).
      language: ground-truth coaching text (``LANGUAGE``), or None.
      faults: ground-truth fault ids, or None.
      n_frames: number of frames T.
      expert: whether the performer is an expert, or None.
      source: where the clip came from (file path), used in error messages.
      keypoints: float32 [T, 17, 2] as given (NaN = missing), or None.
      confidence: float32 [T, 17], or None.
      keypoint_aspect: what x of `keypoints` is multiplied by to share one unit with y (image
        width / height for keypoints normalised separately by width and height, from
        ``image_size``; else 1).
      coverage: name -> the fraction of frames the channel was measured in rather than
        filled by interpolation (``null`` values, unreliable keypoints; 0 when absent).
      meta: every other key of the file, unchanged.
    """

    video_id: str
    exercise: str
    fps: float
    signals: dict[str, np.ndarray]
    present: dict[str, bool]
    wave_features: WaveFeatures
    language: str | None
    faults: list[str] | None
    n_frames: int
    expert: bool | None
    source: str
    keypoints: np.ndarray | None = None
    confidence: np.ndarray | None = None
    keypoint_aspect: float = 1.0
    meta: dict = dataclasses.field(default_factory=dict)
    coverage: dict[str, float] = dataclasses.field(default_factory=dict)

    def model_input(self, seq_len: int = 300, *, normalization: str = "physical",
                    target_fps: float | None = None,
                    rep_channels: bool = False,
                    fault_channels: bool = False,
                    analysis: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Normalised, optionally resampled, padded/truncated signals for the encoder.

        Args:
          seq_len: output length; longer clips keep their first ``seq_len`` frames, shorter
            ones are zero-padded at the end.
          normalization: "physical" (fixed scales, keeps amplitude) or "minmax".
          target_fps: resample (linear interpolation) to this frame rate before padding.
          rep_channels: append the clip's rep analysis as per-frame channels
            (``waves.rep_channels``: rep phase, relative duration, descent, depth, lockout).
          fault_channels: append the rules' verdicts as per-frame channels
            (``faults.fault_channels``: each rep's faults on its frames, the clip's on all).
          analysis: the clip's ``waves.analyze_reps`` result, when the caller has it.

        Returns:
          waves: float32 [seq_len, C]: the 7 signals in ``SIGNAL_NAMES`` order (absent
            channels are 0), then ``waves.REP_CHANNELS`` and ``faults.FAULT_CHANNELS`` when
            asked for.
          mask: bool [seq_len], True for real frames.
        """
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        waves = normalize_signals(self.signals, normalization)  # [T, 7]
        waves[:, [not self.present[name] for name in SIGNAL_NAMES]] = 0.0
        if rep_channels or fault_channels:
            # pylint: disable=import-outside-toplevel
            from wavepose_jax.data import faults as faults_lib
            from wavepose_jax.data import waves as waves_lib
            analysis = analysis or waves_lib.analyze_reps(self.signals, self.fps, self.exercise)
            extra = ([waves_lib.rep_channels(analysis)] if rep_channels else []) + (
                [faults_lib.fault_channels(analysis)] if fault_channels else [])
            waves = np.concatenate([waves, *extra], -1)
        if target_fps is not None:
            waves = resample(waves, self.fps, target_fps, max_frames=seq_len)
        n = min(waves.shape[0], seq_len)
        out = np.zeros((seq_len, waves.shape[1]), np.float32)
        out[:n] = waves[:n]
        mask = np.zeros(seq_len, bool)
        mask[:n] = True
        return out, mask


def normalize_signals(signals: dict[str, np.ndarray] | np.ndarray,
                      method: str = "physical") -> np.ndarray:
    """Normalises the 7 signals (see the module docstring for the constants).

    Args:
      signals: name -> [T] for every name of ``SIGNAL_NAMES``, or an array [T, 7] in that order.
      method: "physical" or "minmax".

    Returns:
      float32 [T, 7].
    """
    if isinstance(signals, dict):
        missing = [name for name in SIGNAL_NAMES if name not in signals]
        if missing:
            raise ValueError(f"signals lack channels {missing}")
        x = np.stack([np.asarray(signals[name], np.float64) for name in SIGNAL_NAMES], -1)
    else:
        x = np.asarray(signals, np.float64)
    if x.ndim != 2 or x.shape[1] != NUM_SIGNALS:
        raise ValueError(f"signals must have shape [T, {NUM_SIGNALS}], got {list(x.shape)}")
    if method == "physical":
        is_angle = np.array([name in ANGLE_SIGNALS for name in SIGNAL_NAMES])
        x = np.where(is_angle, (x - ANGLE_CENTER_DEG) / ANGLE_SCALE_DEG, x / POSITION_SCALE)
    elif method == "minmax":
        lo, hi = x.min(0), x.max(0)
        span = hi - lo
        x = np.where(span > 1e-8, (x - lo) / np.where(span > 1e-8, span, 1.0), 0.0)
    else:
        raise ValueError(f"unknown normalization {method!r}; expected one of {NORMALIZATIONS}")
    return x.astype(np.float32)


def resample(x: np.ndarray, fps: float, target_fps: float,
             max_frames: int | None = None) -> np.ndarray:
    """Linear resampling along axis 0 over the same time span: [T, ...] -> [T', ...].

    T' = floor((T - 1) * target_fps / fps) + 1, so 120 frames at 60 fps give 60 at 30 fps;
    with `max_frames`, only the first min(T', max_frames) frames are computed.
    """
    if not (target_fps > 0 and math.isfinite(target_fps)):
        raise ValueError(f"target_fps must be a positive finite number, got {target_fps!r}")
    if target_fps == fps:
        return x if max_frames is None else x[:max_frames]
    t_old = np.arange(x.shape[0]) / fps
    n_new = int(math.floor((x.shape[0] - 1) * target_fps / fps + 1e-9)) + 1
    if max_frames is not None:
        n_new = min(n_new, max_frames)
    t_new = np.arange(n_new) / target_fps
    flat = x.reshape(x.shape[0], -1)
    out = np.stack([np.interp(t_new, t_old, flat[:, i]) for i in range(flat.shape[1])], -1)
    return out.reshape((n_new,) + x.shape[1:]).astype(x.dtype)


# ----------------------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _numeric_array(value: Any, shape: tuple[int | None, ...], src: str, field: str) -> np.ndarray:
    """A nested list (or array) of numbers/nulls -> float64 array; nulls become NaN.

    Args:
      shape: expected shape; None = any length (the frame axis).
    """
    spelled = "[" + "][".join("T" if d is None else str(d) for d in shape) + "]"
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        arr = value.astype(np.float64)
    else:
        if not isinstance(value, (list, tuple, np.ndarray)) or getattr(value, "ndim", 1) == 0:
            raise ClipError(src, field, f"expected a list {spelled} of numbers, got {_type_name(value)}")
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


def _check_schema(value: Any, spec: Any, src: str, field: str) -> None:
    """Checks ``value`` against a ``_WAVE_FEATURES_SCHEMA`` node; missing keys are allowed."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ClipError(src, field, f"expected an object, got {_type_name(value)}")
        for key, sub in spec.items():
            if key in value:
                _check_schema(value[key], sub, src, f"{field}.{key}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise ClipError(src, field, f"expected a list, got {_type_name(value)}")
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


def _fps(d: dict, src: str) -> float:
    if d.get("fps") is None:
        return DEFAULT_FPS
    fps = d["fps"]
    if not _is_number(fps) or not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
        raise ClipError(src, "fps", f"expected a number in [{MIN_FPS:g}, {MAX_FPS:g}], "
                        f"got {fps!r}")
    return float(fps)


def _exercise(d: dict, src: str) -> str:
    if d.get("exercise") is None:
        return DEFAULT_EXERCISE
    name = d["exercise"]
    canonical = canonical_exercise(name) if isinstance(name, str) else None
    if canonical is None:
        raise ClipError(src, "exercise", f"unknown exercise {name!r}; expected one of {list(EXERCISES)}")
    return canonical


def _optional_str(d: dict, key: str, src: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise ClipError(src, key, f"expected a string, got {_type_name(value)}")
    return value


def _faults(d: dict, src: str) -> list[str] | None:
    value = d.get("faults")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise ClipError(src, "faults", f"expected a list of strings, got {value!r:.80}")
    return list(value)


def _check_faults(faults_: list[str] | None, exercise: str, src: str) -> None:
    """Every fault id must be one of the exercise's (a typo would silently train no label)."""
    if not faults_:
        return
    from wavepose_jax.data import faults as faults_lib  # pylint: disable=import-outside-toplevel

    known = [f.id for f in faults_lib.faults_for(exercise)]
    unknown = [f for f in faults_ if f not in known]
    if unknown:
        raise ClipError(src, "faults", f"unknown fault {unknown[0]!r} for {exercise}; expected "
                        f"some of {known}")


def _expert(d: dict, src: str) -> bool | None:
    value = d.get("expert")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ClipError(src, "expert", f"expected true/false, got {value!r}")


def _video_id(d: dict, src: str) -> str:
    value = d.get("video_id")
    if value is None:
        return os.path.splitext(os.path.basename(src))[0]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ClipError(src, "video_id", f"expected a string, got {_type_name(value)}")
    return str(value)


def _signals(d: dict, fps: float, src: str):
    """Returns (signals, present, keypoints, confidence, coverage) from the file's signals and
    keypoints."""
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
        aspect = _aspect_ratio(d, keypoints, src)
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
        raise ClipError(src, "signals", f"no signal channel ({', '.join(SIGNAL_NAMES)}) and no keypoints")
    n_frames = next(iter(given.values())).shape[0]
    signals, present = {}, {}
    for name in SIGNAL_NAMES:
        x = given.get(name)
        present[name] = x is not None and not np.isnan(x).all()
        signals[name] = x.astype(np.float32) if present[name] else np.zeros(n_frames, np.float32)
    if not any(present.values()):
        raise ClipError(src, "signals", "every channel is entirely null")
    coverage = {name: coverage.get(name, 0.0) if present[name] else 0.0 for name in SIGNAL_NAMES}
    return signals, present, _as_f32(keypoints), _as_f32(confidence), coverage


def _aspect_ratio(d: dict, keypoints: np.ndarray, src: str) -> float:
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


# The parts of `wave_features` the prompt is built from; a file lacking any is completed.
_PROMPT_FEATURES = ("quality", "harmonic", "frequency", "waves")


def _wave_features(d: dict, signals: dict[str, np.ndarray], fps: float, exercise: str,
                   src: str) -> WaveFeatures:
    """The file's `wave_features`, checked, with the parts it lacks computed."""
    given = d.get("wave_features")
    if given is not None:
        _check_schema(given, _WAVE_FEATURES_SCHEMA, src, "wave_features")
        if all(key in given for key in _PROMPT_FEATURES):
            return WaveFeatures.from_json(given)
    from wavepose_jax.data import faults  # pylint: disable=import-outside-toplevel
    try:
        computed = faults.wave_features(signals, fps, exercise)
    except ValueError as e:
        raise ClipError(src, "wave_features", f"cannot compute from the signals: {e}") from None
    if given is None:
        return computed
    return WaveFeatures.from_json(_completed(given, computed.to_json()))


def _completed(given: dict, computed: dict) -> dict:
    """`given` with every key it lacks taken from `computed` (nested objects key by key)."""
    out = dict(computed)
    for key, value in given.items():
        out[key] = (_completed(value, computed[key])
                    if isinstance(value, dict) and isinstance(computed.get(key), dict) else value)
    return out


def clip_from_dict(d: dict, source: str = "<dict>") -> Clip:
    """Validates a parsed clip object; every problem raises ``ClipError(source, field, ...)``,
    whatever went wrong (an unexpected error names the field ``<clip>``)."""
    try:
        return _clip_from_dict(d, source)
    except ClipError:
        raise
    except Exception as e:  # pylint: disable=broad-except  # never a traceback for one file
        raise ClipError(source, "<clip>", f"unreadable ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]})") from None


def _clip_from_dict(d: dict, source: str) -> Clip:
    if not isinstance(d, dict):
        raise ClipError(source, "<root>", f"expected a JSON object, got {_type_name(d)}")
    fps = _fps(d, source)
    exercise = _exercise(d, source)
    signals, present, keypoints, confidence, coverage = _signals(d, fps, source)
    n_frames = next(iter(signals.values())).shape[0]
    if n_frames / fps > MAX_DURATION_SEC:
        raise ClipError(source, "fps", f"{n_frames} frames at {fps:g} fps last "
                        f"{n_frames / fps:.0f} s, more than {MAX_DURATION_SEC:g} s")
    declared = d.get("n_frames")
    if declared is not None:
        if not isinstance(declared, int) or isinstance(declared, bool):
            raise ClipError(source, "n_frames", f"expected an integer, got {declared!r}")
        if declared != n_frames:
            raise ClipError(source, "n_frames", f"says {declared} but the data has {n_frames} frames")
    faults_ = _faults(d, source)
    _check_faults(faults_, exercise, source)
    return Clip(
        video_id=_video_id(d, source),
        exercise=exercise,
        fps=fps,
        signals=signals,
        present=present,
        wave_features=_wave_features(d, signals, fps, exercise, source),
        language=_optional_str(d, "LANGUAGE", source),
        faults=faults_,
        n_frames=n_frames,
        expert=_expert(d, source),
        source=source,
        keypoints=keypoints,
        confidence=confidence,
        keypoint_aspect=1.0 if keypoints is None else _aspect_ratio(d, keypoints, source),
        meta={k: v for k, v in d.items() if k not in _KNOWN_KEYS},
        coverage=coverage,
    )


def load_clip(path: str | os.PathLike) -> Clip:
    """Reads and validates a clip JSON file; every problem raises ``ClipError``."""
    src = os.fspath(path)
    try:
        with open(src, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ClipError(src, "<file>", "file not found") from None
    except IsADirectoryError:
        raise ClipError(src, "<file>", "is a directory, not a clip file") from None
    except OSError as e:
        raise ClipError(src, "<file>", f"cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ClipError(src, "<json>", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ClipError(src, "<json>",
                        f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ClipError(src, "<json>", "nesting too deep") from None
    return clip_from_dict(d, src)


def clip_error_line(path: str | os.PathLike, error: BaseException) -> str:
    """One line for any error raised while reading or preparing the clip at `path`: a
    `ClipError` says file and field; anything else names the file and the error."""
    if isinstance(error, ClipError):
        return str(error)
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{os.fspath(path)}: {type(error).__name__}: {text}"


def summary(clip: Clip) -> str:
    """One line describing a clip, for the command line."""
    absent = [name for name in SIGNAL_NAMES if not clip.present[name]]
    parts = [
        f"{clip.source}: video_id={clip.video_id}", f"exercise={clip.exercise}",
        f"frames={clip.n_frames}", f"fps={clip.fps:g}", f"duration={clip.n_frames / clip.fps:.1f}s",
        f"channels={NUM_SIGNALS - len(absent)}/{NUM_SIGNALS}"
        + (f" (absent: {', '.join(absent)})" if absent else ""),
        f"keypoints={'yes' if clip.keypoints is not None else 'no'}",
        f"language={'yes' if clip.language else 'no'}",
    ]
    if clip.faults is not None:
        parts.append(f"faults={clip.faults}")
    return " ".join(parts)
