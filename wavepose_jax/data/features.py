"""The seed `wave_features` of a clip, measured from its signals and its rep analysis.

`compute_wave_features` gives the schema of docs/architecture.md (quality, energy, damping,
frequency, harmonic, one entry per phase) from the reps and phases `waves.analyze_reps` finds;
`faults.wave_features` adds `rep_faults`, the rules' verdict on every rep.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal as sps

from wavepose_jax.data.waves import PRIMARY_SIGNAL, TORSO_M, RepAnalysis, analyze_reps, smoothed

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
    """1 for a minimum-jerk-like move, falling with the log dimensionless jerk (0..1)."""
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
    a = np.asarray(v, dtype=np.float64)
    return float(a.std() / a.mean()) if a.size >= 2 and a.mean() > 0 else 0.0


def _frequency(x: np.ndarray, fps: float) -> dict:
    """Dominant frequency, band power fractions and normalised spectral entropy (Welch)."""
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
                          analysis: RepAnalysis | None = None) -> dict:
    """The seed `wave_features` dict (schema: docs/architecture.md) of a clip; JSON-serialisable.

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
        waves.append({"type": kind, "duration_sec": round(dur, 4),
                      "mean_velocity": round(velocity, 4),
                      "smoothness": round(_phase_smoothness(seg, fps, amp), 4)})
    moves = [w["smoothness"] for w in waves if w["type"] in ("descent", "ascent")]
    smoothness = 100.0 * float(np.mean(moves)) if moves else 0.0
    control = 100.0 * float(np.mean([min(1.0, r.descent_sec / 1.2) for r in reps])) if reps else 0.0

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

    return {
        "quality": {"grade": _grade(overall), "overall": r4(overall),
                    "smoothness": r4(smoothness), "control": r4(control),
                    "efficiency": r4(efficiency), "consistency": r4(consistency)},
        "energy": {"work_positive": r4(work_pos), "work_negative": r4(work_neg),
                   "efficiency_pct": r4(efficiency), "peak_power_w": r4(peak_power)},
        "damping": {"ratio": r4(ratio), "control_quality": label},
        "frequency": {"dominant_hz": r4(freq["dominant_hz"]),
                      "band_power": {k: r4(v) for k, v in freq["band_power"].items()},
                      "spectral_entropy": r4(freq["spectral_entropy"])},
        "harmonic": {"oscillation_count": len(reps),
                     "is_harmonic": bool(len(reps) >= 2 and _cv(durations) < 0.25)},
        "waves": waves,
        "wave_count": len(waves),
    }
