"""Clip files: loading them into a `Clip`, and the model's input arrays.

A clip is a JSON object (docs/architecture.md, "Clip files") holding the 7 body-region signals of
``schema.SIGNAL_NAMES`` and/or COCO-17 ``keypoints`` [T][17][2] (+ ``confidence`` [T][17]),
from which ``pose.keypoints_to_signals`` derives the signals. When both are given, the file's
signals win for every channel they provide and the keypoints fill the others.

Validation (`data/validate.py`) turns every problem of the data into one ``ClipError`` naming
the file and field; any other error while reading a clip becomes a ``ClipError`` too (field
``<clip>``). Then:
- ``wave_features``, when the key is missing, or parts the prompt needs are, has the missing
  parts computed by ``faults.wave_features`` (the wave analysis plus the rules' verdict on
  every rep, ``rep_faults``); `Clip.wave_features` holds them typed (``features.WaveFeatures``).
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
import os
from typing import Any

import numpy as np

from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import validate
from wavepose_jax.data import waves as waves_lib
from wavepose_jax.data.features import WaveFeatures
from wavepose_jax.data.schema import ANGLE_SIGNALS, NUM_SIGNALS, SIGNAL_NAMES, ClipError

ANGLE_CENTER_DEG = 90.0   # "physical" normalisation: (deg - 90) / 90.
ANGLE_SCALE_DEG = 90.0
POSITION_SCALE = 2.0      # "physical" normalisation: torso units / 2.
NORMALIZATIONS = ("physical", "minmax")

# Keys of the contract handled by this module; every other key goes to Clip.meta.
_KNOWN_KEYS = frozenset(SIGNAL_NAMES) | {
    "keypoints", "confidence", "image_size", "fps", "n_frames", "exercise", "video_id", "expert",
    "wave_features", "LANGUAGE", "faults"}


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


# The parts of `wave_features` the prompt is built from; a file lacking any is completed.
_PROMPT_FEATURES = ("quality", "harmonic", "frequency", "waves")


def _wave_features(d: dict, signals: dict[str, np.ndarray], fps: float, exercise: str,
                   src: str) -> WaveFeatures:
    """The file's `wave_features`, checked, with the parts it lacks computed."""
    given = d.get("wave_features")
    if given is not None:
        validate.check_wave_features(given, src)
        if all(key in given for key in _PROMPT_FEATURES):
            return WaveFeatures.from_json(given)
    try:
        computed = faults_lib.wave_features(signals, fps, exercise)
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
        raise ClipError(source, "<root>", f"expected a JSON object, got {validate.type_name(d)}")
    fps = validate.read_fps(d, source)
    exercise = validate.read_exercise(d, source)
    read = validate.read_signals(d, fps, source)
    n_frames = next(iter(read.signals.values())).shape[0]
    validate.check_frame_count(d, n_frames, fps, source)
    faults_ = validate.read_faults(d, exercise, source)
    return Clip(
        video_id=validate.read_video_id(d, source),
        exercise=exercise,
        fps=fps,
        signals=read.signals,
        present=read.present,
        wave_features=_wave_features(d, read.signals, fps, exercise, source),
        language=validate.read_optional_str(d, "LANGUAGE", source),
        faults=faults_,
        n_frames=n_frames,
        expert=validate.read_expert(d, source),
        source=source,
        keypoints=read.keypoints,
        confidence=read.confidence,
        keypoint_aspect=(1.0 if read.keypoints is None
                         else validate.aspect_ratio(d, read.keypoints, source)),
        meta={k: v for k, v in d.items() if k not in _KNOWN_KEYS},
        coverage=read.coverage,
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
        f"frames={clip.n_frames}", f"fps={clip.fps:g}",
        f"duration={clip.n_frames / clip.fps:.1f}s",
        f"channels={NUM_SIGNALS - len(absent)}/{NUM_SIGNALS}"
        + (f" (absent: {', '.join(absent)})" if absent else ""),
        f"keypoints={'yes' if clip.keypoints is not None else 'no'}",
        f"language={'yes' if clip.language else 'no'}",
    ]
    if clip.faults is not None:
        parts.append(f"faults={clip.faults}")
    return " ".join(parts)
