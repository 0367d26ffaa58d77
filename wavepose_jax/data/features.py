"""The seed `wave_features` of a clip: the typed `WaveFeatures`, and how they are measured.

`WaveFeatures` is the schema of docs/architecture.md as frozen dataclasses: `quality`,
`energy`, `damping`, `frequency` (with `band_power`), `harmonic`, `waves` (one `Wave` per
phase), `wave_count` and `rep_faults`. A part a file leaves out is None.
`WaveFeatures.from_json` reads the object of a clip file (checked beforehand by
`validate.check_wave_features`) and `to_json` writes it back unchanged, key order included:
keys the schema does not know, and values of a type it does not allow there, are kept in each
object's `extra` (such a value reads as None), so nothing a file holds is lost.

`compute_wave_features` measures them from the signals and the reps and phases
`waves.analyze_reps` finds; `faults.wave_features` adds `rep_faults`, the rules' verdict on
every rep.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, Self

import numpy as np
from scipy import signal as sps

from wavepose_jax.data.waves import PRIMARY_SIGNAL, TORSO_M, RepAnalysis, analyze_reps, smoothed

# ----------------------------------------------------------------------------- the schema

_UNREAD = object()  # what a reader returns for a value of a type the schema does not allow


def _number(value: Any) -> Any:
    ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
          and math.isfinite(value))
    return value if ok else _UNREAD


def _integer(value: Any) -> Any:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    return value if ok else _UNREAD


def _text(value: Any) -> Any:
    return value if isinstance(value, str) else _UNREAD


def _flag(value: Any) -> Any:
    return value if isinstance(value, (bool, np.bool_)) else _UNREAD


def _text_or_number(value: Any) -> Any:
    return value if _text(value) is not _UNREAD else _number(value)


def _object(cls: type[_JsonObject]) -> Callable[[Any], Any]:
    return lambda value: cls.from_json(value) if isinstance(value, Mapping) else _UNREAD


def _objects(cls: type[_JsonObject]) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            return _UNREAD
        return tuple(cls.from_json(v) for v in value)
    return read


def _id_lists(value: Any) -> Any:
    if not isinstance(value, list) or not all(
            isinstance(r, list) and all(isinstance(f, str) for f in r) for r in value):
        return _UNREAD
    return tuple(tuple(r) for r in value)


def _part(read: Callable[[Any], Any]) -> Any:
    """A field of the schema: None when absent; `read` takes its JSON value (or `_UNREAD`)."""
    return dataclasses.field(default=None, metadata={"read": read})


def _json_value(value: Any) -> Any:
    if isinstance(value, _JsonObject):
        return value.to_json()
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class _JsonObject:
    """An object of the schema: its typed fields (None = absent), and what else it held.

    Attributes:
      extra: the file's keys the schema does not know, and those whose value has a type the
        schema does not allow there (their field reads None), unchanged.
      key_order: the keys in the order the file gave them (`to_json` keeps it); empty for an
        object built here (fields in schema order, then `extra`).
    """

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    key_order: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)

    @classmethod
    def _readers(cls) -> dict[str, Callable[[Any], Any]]:
        return {f.name: f.metadata["read"] for f in dataclasses.fields(cls) if "read" in f.metadata}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        """Reads a JSON object (a parsed clip file's); see the module docstring."""
        if not isinstance(obj, Mapping):
            raise TypeError(f"{cls.__name__}.from_json expects an object, got "
                            f"{type(obj).__name__}")
        readers, known, extra = cls._readers(), {}, {}
        for key, value in obj.items():
            read = readers.get(key)
            got = _UNREAD if read is None else read(value)
            if got is _UNREAD:
                extra[key] = value
            else:
                known[key] = got
        return cls(**known, extra=extra, key_order=tuple(obj))

    def to_json(self) -> dict[str, Any]:
        """The JSON object: what `from_json` read, unchanged and in its order."""
        values = {name: _json_value(getattr(self, name)) for name in self._readers()
                  if getattr(self, name) is not None}
        values.update((k, v) for k, v in self.extra.items() if k not in values)
        order = [k for k in self.key_order if k in values]
        order += [k for k in values if k not in order]
        return {k: values[k] for k in order}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Quality(_JsonObject):
    """Scores 0..100 (`compute_wave_features` says how each is measured) and their grade."""

    grade: str | None = _part(_text)  # A..F from `overall`
    overall: float | None = _part(_number)  # the mean of the four scores below
    smoothness: float | None = _part(_number)  # no jerky moves
    control: float | None = _part(_number)  # 100 when every lowering takes >= 1.2 s
    efficiency: float | None = _part(_number)  # movement spent on the reps, not on sway
    consistency: float | None = _part(_number)  # the same rep time and range every rep


@dataclasses.dataclass(frozen=True, kw_only=True)
class Energy(_JsonObject):
    """Vertical work of a nominal moving mass: joules, percent, watts."""

    work_positive: float | None = _part(_number)  # J lifting
    work_negative: float | None = _part(_number)  # J lowering
    efficiency_pct: float | None = _part(_number)  # % of the vertical path spent on reps
    peak_power_w: float | None = _part(_number)  # W


@dataclasses.dataclass(frozen=True, kw_only=True)
class Damping(_JsonObject):
    """Decay of the rep ranges over the set; `control_quality` a word (or a number)."""

    ratio: float | None = _part(_number)
    control_quality: str | float | None = _part(_text_or_number)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BandPower(_JsonObject):
    """Fractions of the primary signal's power per frequency band."""

    slow: float | None = _part(_number)  # below 0.2 Hz
    medium: float | None = _part(_number)  # 0.2-0.8 Hz
    fast: float | None = _part(_number)  # above 0.8 Hz
    harmonic: float | None = _part(_number)  # at 2 and 3 times the dominant frequency


@dataclasses.dataclass(frozen=True, kw_only=True)
class Frequency(_JsonObject):
    """The primary signal's spectrum: dominant frequency (Hz), band powers, entropy (0..1)."""

    dominant_hz: float | None = _part(_number)
    band_power: BandPower | None = _part(_object(BandPower))
    spectral_entropy: float | None = _part(_number)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Harmonic(_JsonObject):
    """The rep count (`oscillation_count`) and whether the reps keep one tempo."""

    oscillation_count: int | None = _part(_integer)
    is_harmonic: bool | None = _part(_flag)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Wave(_JsonObject):
    """One phase (descent, bottom, ascent, lockout): seconds, units per second, 0..1."""

    type: str | None = _part(_text)
    duration_sec: float | None = _part(_number)
    mean_velocity: float | None = _part(_number)
    smoothness: float | None = _part(_number)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WaveFeatures(_JsonObject):
    """A clip's seed `wave_features` (module docstring); None marks a part a file left out.

    Attributes:
      waves: one `Wave` per phase, in clip order.
      wave_count: the number of phases.
      rep_faults: per rep the analysis found, the ids of the per-rep rules it breaks
        (`faults.wave_features`).
    """

    quality: Quality | None = _part(_object(Quality))
    energy: Energy | None = _part(_object(Energy))
    damping: Damping | None = _part(_object(Damping))
    frequency: Frequency | None = _part(_object(Frequency))
    harmonic: Harmonic | None = _part(_object(Harmonic))
    waves: tuple[Wave, ...] | None = _part(_objects(Wave))
    wave_count: int | None = _part(_integer)
    rep_faults: tuple[tuple[str, ...], ...] | None = _part(_id_lists)


# ----------------------------------------------------------------------------- measurement

# Nominal physics for the energy figures (the clip carries no body mass or scale; `TORSO_M`
# turns torso units into metres).
BODY_MASS_KG = 70.0       # nominal lifter mass
GRAVITY = 9.81
BAR_MASS_KG = 20.0        # nominal barbell in the press
# Exercise -> (signal tracked as the moving mass, moving mass in kg).
MOVING_MASS: dict[str, tuple[str, float]] = {
    "squat": ("trajectory", 0.85 * BODY_MASS_KG),         # all but the shanks and feet
    "pushup": ("shoulder_trajectory", 0.65 * BODY_MASS_KG),  # share of weight on the hands
    "deadlift": ("trajectory", 0.6 * BODY_MASS_KG),       # upper body (bar load unknown)
    "press": ("arm_Trajectory", BAR_MASS_KG + 0.1 * BODY_MASS_KG),  # bar plus arms
}
MIN_JERK_DJ = math.pi ** 6 / 8  # dimensionless jerk of a half-cosine move (the smoothest here)


def _phase_smoothness(x: np.ndarray, fps: float, amp: float) -> float:
    """1 for a minimum-jerk-like move, falling with the log dimensionless jerk (0..1).

    `x` is one phase of the smoothed primary signal, [L]; `amp` the excursion it is judged on.
    """
    if x.size < 5 or amp <= 0:
        return 1.0
    dt = 1.0 / fps
    jerk = np.diff(x, 3) / dt ** 3
    dur = x.size * dt
    dj = dur ** 5 / amp ** 2 * float(np.sum(jerk ** 2) * dt)
    if dj <= MIN_JERK_DJ:
        return 1.0
    return float(np.clip(1.0 - math.log(dj / MIN_JERK_DJ) / 8.0, 0.0, 1.0))


def _grade(score: float) -> str:
    for grade, floor in (("A", 85), ("B", 70), ("C", 55), ("D", 40)):
        if score >= floor:
            return grade
    return "F"


def _cv(v: list[float]) -> float:
    """Coefficient of variation (0 for fewer than two values or a mean <= 0)."""
    a = np.asarray(v, dtype=np.float64)
    return float(a.std() / a.mean()) if a.size >= 2 and a.mean() > 0 else 0.0


def _frequency(x: np.ndarray, fps: float) -> dict:
    """Dominant frequency, band power fractions and normalised spectral entropy (Welch) of the
    smoothed primary signal `x` [T]."""
    y = x - x.mean()
    if x.size < 8 or not np.any(y):
        return {"dominant_hz": 0.0, "spectral_entropy": 0.0,
                "band_power": {"slow": 0.0, "medium": 0.0, "fast": 0.0, "harmonic": 0.0}}
    f, pxx = sps.welch(y, fs=fps, nperseg=min(x.size, int(8 * fps)))
    pxx = pxx[1:]
    f = f[1:]
    total = float(pxx.sum()) or 1.0
    dom = float(f[np.argmax(pxx)])

    def band(lo: float, hi: float) -> float:
        return float(pxx[(f >= lo) & (f < hi)].sum() / total)

    # Harmonic band: power near 2x and 3x the dominant frequency (+-15%).
    harm = sum(band(k * dom * 0.85, k * dom * 1.15) for k in (2, 3))
    p = pxx / total
    entropy = float(-(p * np.log(p + 1e-12)).sum() / math.log(p.size)) if p.size > 1 else 0.0
    return {"dominant_hz": dom, "spectral_entropy": entropy,
            "band_power": {"slow": band(0.0, 0.2), "medium": band(0.2, 0.8),
                           "fast": band(0.8, fps / 2 + 1), "harmonic": harm}}


def compute_wave_features(signals: dict[str, np.ndarray], fps: float, exercise: str, *,
                          analysis: RepAnalysis | None = None) -> WaveFeatures:
    """The seed `wave_features` of a clip, every part but `rep_faults` (`faults.wave_features`).

    `signals` maps each signal name to its [T] array (NaN = missing).

    quality (0..100): smoothness = mean phase smoothness (dimensionless jerk); control = mean
    eccentric duration relative to 1.2 s (capped); efficiency = `energy.efficiency_pct`;
    consistency = 1 - 2 (CV of rep durations + CV of rep ranges); overall = their mean; grade
    A >= 85, B >= 70, C >= 55, D >= 40, else F.
    energy: vertical work of a nominal moving mass (`MOVING_MASS`, `BODY_MASS_KG`, `TORSO_M`):
    work_positive / work_negative (J, lifting / lowering), efficiency_pct = share of the vertical
    path spent on the rep excursions (jitter and bounces lower it), peak_power_w = max m (g + a) v.
    damping: log decrement of successive rep ranges, ratio = d / sqrt(4 pi^2 + d^2);
    control_quality "excellent" (< 0.05), "good" (< 0.15), "fair" (< 0.3) or "poor".
    frequency: Welch spectrum of the primary signal; bands slow < 0.2 Hz, medium 0.2-0.8 Hz,
    fast >= 0.8 Hz, harmonic = near 2x and 3x the dominant frequency (fractions of the power);
    spectral_entropy normalised to 0..1.
    harmonic: oscillation_count = reps; is_harmonic = >= 2 reps with rep-duration CV < 0.25.
    waves: one entry per phase (descent / bottom / ascent / lockout) with its duration, mean
    velocity of the primary signal (units per second) and smoothness (0..1); the rest between
    reps is a phase, idle time before the first and after the last rep is not.

    `analysis` may pass this clip's `analyze_reps` result to skip recomputing it.
    """
    analysis = analysis or analyze_reps(signals, fps, exercise)
    ex, fps = analysis.exercise, analysis.fps
    x = smoothed(signals[PRIMARY_SIGNAL[ex]], fps)
    reps = analysis.reps
    rom_by_frame = np.zeros(x.size)
    for rep in reps:
        rom_by_frame[rep.start:rep.end + 1] = abs(float(x[rep.top] - x[rep.bottom]))

    waves = []
    for kind, a, b in analysis.phases:
        seg = x[a:b + 1]
        amp = float(rom_by_frame[min(a, x.size - 1)]) or float(np.ptp(x)) or 1.0
        dur = (b - a) / fps
        velocity = float(seg[-1] - seg[0]) / dur if dur > 0 else 0.0
        waves.append(Wave(type=kind, duration_sec=round(dur, 4),
                          mean_velocity=round(velocity, 4),
                          smoothness=round(_phase_smoothness(seg, fps, amp), 4)))
    moves = [w.smoothness for w in waves if w.type in ("descent", "ascent")]
    smoothness = 100.0 * float(np.mean(moves)) if moves else 0.0
    control = (100.0 * float(np.mean([min(1.0, r.descent_sec / 1.2) for r in reps]))
               if reps else 0.0)

    mass_signal, mass = MOVING_MASS[ex]
    h = smoothed(signals[mass_signal], fps) * TORSO_M  # [T] metres
    dh = np.diff(h)
    work_pos = float(mass * GRAVITY * dh[dh > 0].sum())
    work_neg = float(mass * GRAVITY * dh[dh < 0].sum())
    rep_path = sum(2 * abs(float(h[r.top] - h[r.bottom])) for r in reps)
    path = float(np.abs(dh).sum())
    efficiency = float(min(100.0, 100.0 * rep_path / path)) if path > 0 else 0.0
    v = np.gradient(h) * fps
    acc = np.gradient(v) * fps
    peak_power = float(max(0.0, (mass * (GRAVITY + acc) * v).max())) if h.size > 2 else 0.0

    durations = [r.duration_sec for r in reps]
    roms = [abs(r.rom) for r in reps]
    consistency = 100.0 * float(np.clip(1.0 - 2.0 * (_cv(durations) + _cv(roms)), 0.0, 1.0))
    if not reps:
        efficiency = consistency = 0.0
    overall = (smoothness + control + efficiency + consistency) / 4.0

    amps = [abs(float(x[r.top] - x[r.bottom])) for r in reps]
    if len(amps) >= 2 and min(amps) > 0:
        dec = float(np.mean(np.log(np.asarray(amps[:-1]) / np.asarray(amps[1:]))))
        ratio = dec / math.sqrt(4 * math.pi ** 2 + dec ** 2)
    else:
        ratio = 0.0
    label = ("excellent" if abs(ratio) < 0.05 else "good" if abs(ratio) < 0.15
             else "fair" if abs(ratio) < 0.3 else "poor")

    freq = _frequency(x, fps)

    def r4(v: float) -> float:
        return round(float(v), 4)

    return WaveFeatures(
        quality=Quality(grade=_grade(overall), overall=r4(overall), smoothness=r4(smoothness),
                        control=r4(control), efficiency=r4(efficiency),
                        consistency=r4(consistency)),
        energy=Energy(work_positive=r4(work_pos), work_negative=r4(work_neg),
                      efficiency_pct=r4(efficiency), peak_power_w=r4(peak_power)),
        damping=Damping(ratio=r4(ratio), control_quality=label),
        frequency=Frequency(
            dominant_hz=r4(freq["dominant_hz"]),
            band_power=BandPower(**{k: r4(v) for k, v in freq["band_power"].items()}),
            spectral_entropy=r4(freq["spectral_entropy"])),
        harmonic=Harmonic(oscillation_count=len(reps),
                          is_harmonic=bool(len(reps) >= 2 and _cv(durations) < 0.25)),
        waves=tuple(waves),
        wave_count=len(waves),
    )
