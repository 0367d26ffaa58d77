"""Wave analysis of an exercise clip: rep segmentation, phases and per-rep measures.

Reps are found on one *primary* signal per exercise (`PRIMARY_SIGNAL`); every primary is high
at the physical top of the movement (standing, arms extended, bar overhead), so for all four
exercises "descent" is the physical lowering (the eccentric phase) and "ascent" the lifting.

Squats, push-ups and deadlifts rest at the top and turn at the bottom; the press rests with the
bar at the shoulders and turns at the overhead lockout. A rep is one full excursion from the rest
position to the turning point and back.

Segmentation (`analyze_reps`):

1. Gaps (NaN) are filled by linear interpolation; the signal is smoothed with a Gaussian of
   `SMOOTH_SEC` seconds.
2. A tempo estimate (autocorrelation peak) gives the period; position signals (push-up, press)
   have slow drift removed: the rest-side envelope, smoothed over two periods, is subtracted.
3. Turning points are the peaks and valleys that `scipy.signal.find_peaks` finds with a
   prominence of `PROMINENCE_FRAC` of the robust range (2nd..98th percentile) and a minimum
   distance of 0.25 periods (at most `MAX_MIN_DISTANCE_SEC`). They are merged into an
   alternating top/bottom sequence (hysteresis: two extremes of one kind in a row keep the
   more extreme one; a swing smaller than the prominence is dropped). The clip's first and
   last frame count as extremes only when they lie within `EDGE_ZONE_FRAC` of the range from
   the top or bottom level, so a clip that starts or ends in the middle of a movement does not
   invent an extra rep.
4. With `n_top` tops and `n_bottom` bottoms the clip holds min(n_top, n_bottom) full reps; the
   rarer kind is the turning point (ties go to the exercise's usual turning point). A clip that
   starts at the bottom of a deadlift (from the floor) therefore counts its first pull.
5. Around each turning point the rep starts when the signal leaves the rest level (by
   `BAND_FRAC` of that side's range), reaches the turning band (within `BAND_FRAC` of the
   turning value), leaves it, and ends back within `BAND_FRAC` of the next rest level. Hence
   phases descent / bottom / ascent / lockout. `descent_sec` times the eccentric movement
   without pauses between narrower `MOVE_BAND_FRAC` bands, scaled to the whole excursion.

Per-rep measurements use the exercise's *key measure* (`key_measure`): the knee angle (squat),
shoulder height above the hands (push-up), hip angle (deadlift) and hand height above the
shoulders (press). `depth` is its value at the bottom, `lockout` its value at the top.

The seed `wave_features` (quality, energy, frequency ... of the whole clip) are measured from
this analysis in `features.py`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy import signal as sps

from wavepose_jax.data.schema import ANGLE_SIGNALS, EXERCISES, canonical_exercise

# Exercise -> signal the reps are segmented on (high = physical top of the movement).
PRIMARY_SIGNAL: dict[str, str] = {
    "squat": "knee_angle_trajectory",  # knee angle: 175 deg standing, ~90 deg at depth
    "pushup": "shoulder_trajectory",   # shoulder height: arms extended at the top
    "deadlift": "back_trajectory",     # hip angle: the hinge closes at the bottom
    "press": "arm_Trajectory",         # wrist height: overhead lockout at the top
}
# What each primary signal is, in words (for the reason a clip has no reps).
PRIMARY_LABEL: dict[str, str] = {"squat": "knee angle", "pushup": "shoulder height",
                                 "deadlift": "hip angle", "press": "wrist height"}
# Where each exercise turns: squats, push-ups and deadlifts rest at the top and turn at the
# bottom; the press rests at the shoulders and turns at the top. Used to break ties only.
TURN_AT: dict[str, str] = {"squat": "bottom", "pushup": "bottom", "deadlift": "bottom",
                           "press": "top"}

SMOOTH_SEC = 0.06         # Gaussian smoothing sigma before segmentation.
PROMINENCE_FRAC = 0.25    # Turning-point prominence as a fraction of the robust range.
EDGE_ZONE_FRAC = 0.25     # A clip edge is a rest/turn extreme only this close to a level.
MAX_MIN_DISTANCE_SEC = 0.5  # Cap of the minimum peak distance (0.25 periods); tempo varies.
BAND_FRAC = 0.10          # Band around rest and turning levels that bounds movement phases.
MOVE_BAND_FRAC = 0.07     # Narrower band that times descents and ascents (`_movement_sec`).
MIN_RANGE = {"angle": 8.0, "position": 0.06}   # Below this robust range there are no reps.

# The clip carries no body scale: a nominal torso (shoulder-hip distance) turns the position
# signals' torso units into metres (the energy figures of `features.py`, the report's cm).
TORSO_M = 0.5             # metres per torso unit


@dataclasses.dataclass
class Rep:
    """One repetition. Frames index the clip; times are seconds.

    Attributes:
        start: first frame of the rep (it leaves the rest level).
        bottom: frame of the physical bottom (deepest point; for the press the rack after the rep).
        top: frame of the physical top (lockout after the rep; for the press the overhead turn).
        end: last frame of the rep (back at the rest level).
        depth: key measure at the bottom (squat: min knee angle, deg; push-up: shoulder height
            above the hands; deadlift: min hip angle, deg; press: hand height above the shoulders).
        lockout: key measure at the top (max knee / hip angle, or the height above).
        rom: lockout - depth.
        descent_sec: the eccentric movement, top to bottom without pauses (`_movement_sec`).
        ascent_sec: the concentric movement, bottom band to top band.
        bottom_pause_sec / top_pause_sec: time inside the bottom / top band within the rep.
        duration_sec: end - start (movement and the pause at the turning point).
        complete: both rest levels around the turning point are in the clip.
        extra: exercise-specific measures (see `_extra_measures`).
    """

    start: int
    bottom: int
    top: int
    end: int
    depth: float
    lockout: float
    rom: float
    descent_sec: float
    ascent_sec: float
    bottom_pause_sec: float
    top_pause_sec: float
    duration_sec: float
    complete: bool
    extra: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RepAnalysis:
    """Reps and phases of a clip. `phases` holds (type, start, end) frame ranges, inclusive."""

    exercise: str
    fps: float
    reps: list[Rep]
    phases: list[tuple[str, int, int]]
    turn: str             # "bottom" or "top": where the reps turned
    period_sec: float     # tempo estimate (autocorrelation)
    num_frames: int
    no_reps: str = ""     # why no rep was found ("" when there are reps)

    @property
    def counted(self) -> list[Rep]:
        """The reps a set's figures count: the complete ones, or all when none is complete."""
        return [r for r in self.reps if r.complete] or list(self.reps)

    @property
    def tempo_sec(self) -> float | None:
        """Seconds per rep: the mean duration of the counted reps (None without reps)."""
        counted = self.counted
        return float(np.mean([r.duration_sec for r in counted])) if counted else None


def _fill(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN/inf gaps; all-missing -> zeros."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if ok.all():
        return x
    if not ok.any():
        return np.zeros_like(x)
    t = np.arange(x.size)
    return np.interp(t, t[ok], x[ok])


def _smooth(x: np.ndarray, fps: float) -> np.ndarray:
    return ndimage.gaussian_filter1d(x, max(SMOOTH_SEC * fps, 0.5), mode="nearest")


def smoothed(x: np.ndarray, fps: float) -> np.ndarray:
    """A signal as the segmentation reads it: gaps filled, smoothed over `SMOOTH_SEC`, [T]."""
    return _smooth(_fill(x), fps)


def key_measure(signals: dict[str, np.ndarray], exercise: str) -> np.ndarray:
    """The exercise's per-frame key measure (see module docstring), gap-filled, [T]."""
    s = {k: _fill(v) for k, v in signals.items() if k in (
        "knee_angle_trajectory", "back_trajectory", "shoulder_trajectory", "arm_Trajectory")}
    if exercise == "squat":
        return s["knee_angle_trajectory"]
    if exercise == "deadlift":
        return s["back_trajectory"]
    if exercise == "pushup":
        return s["shoulder_trajectory"] - s["arm_Trajectory"]
    return s["arm_Trajectory"] - s["shoulder_trajectory"]


def estimate_period(x: np.ndarray, fps: float) -> float:
    """Rep period in seconds from the autocorrelation (0.6 s .. 10 s); clip length if none."""
    n = x.size
    y = x - x.mean()
    if n < 4 or not np.any(y):
        return n / fps
    f = np.fft.rfft(y, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[:n]
    ac /= ac[0]
    lo, hi = int(0.6 * fps), min(int(10 * fps), n // 2)
    if hi <= lo + 2:
        return n / fps
    peaks, props = sps.find_peaks(ac[lo:hi], height=0.1)
    if not peaks.size:
        return n / fps
    # The first peak nearly as high as the highest: multiples of the period score high too.
    heights = props["peak_heights"]
    return float((lo + peaks[np.argmax(heights >= 0.6 * heights.max())]) / fps)


def _detrend(x: np.ndarray, period_frames: float, rest_high: bool) -> np.ndarray:
    """Removes slow drift: the rest-side envelope smoothed over two periods (mean kept)."""
    win = int(2 * period_frames)
    if win < 3 or x.size < 3 * win:
        return x
    env = (ndimage.maximum_filter1d if rest_high else ndimage.minimum_filter1d)(x, win)
    env = ndimage.gaussian_filter1d(env, period_frames, mode="nearest")
    return x - (env - env.mean())


def _pivots(x: np.ndarray, fps: float, period: float) -> list[tuple[int, str]]:
    """Alternating extremes [(frame, 'top'|'bottom')] of a smoothed signal (module docstring)."""
    lo, hi = np.percentile(x, [2, 98])
    rng = hi - lo
    prom = PROMINENCE_FRAC * rng
    dist = max(1, int(min(0.25 * period, MAX_MIN_DISTANCE_SEC) * fps))
    tops, _ = sps.find_peaks(x, prominence=prom, distance=dist)
    bottoms, _ = sps.find_peaks(-x, prominence=prom, distance=dist)
    cand = sorted([(int(i), "top") for i in tops] + [(int(i), "bottom") for i in bottoms])
    n = x.size
    if x[0] >= hi - EDGE_ZONE_FRAC * rng:
        cand.insert(0, (0, "top"))
    elif x[0] <= lo + EDGE_ZONE_FRAC * rng:
        cand.insert(0, (0, "bottom"))
    if x[-1] >= hi - EDGE_ZONE_FRAC * rng:
        cand.append((n - 1, "top"))
    elif x[-1] <= lo + EDGE_ZONE_FRAC * rng:
        cand.append((n - 1, "bottom"))
    # Hysteresis: strictly alternating, each swing at least `prom`.
    out: list[tuple[int, str]] = []
    for i, kind in cand:
        if out and out[-1][1] == kind:
            j = out[-1][0]
            better = x[i] > x[j] if kind == "top" else x[i] < x[j]
            if better:
                out[-1] = (i, kind)
            continue
        if out and abs(x[i] - x[out[-1][0]]) < prom:
            continue
        out.append((i, kind))
    return out


def _extra_measures(exercise: str, sig: dict[str, np.ndarray], start: int, top: int,
                    end: int) -> dict[str, float]:
    """Exercise-specific per-rep measures used by the fault rules."""
    if exercise == "pushup":
        return {"min_hip_angle": float(sig["back_trajectory"][start:end + 1].min())}
    if exercise == "deadlift" and top > start + 2:
        # Hip-angle progress when the knees have done 80% of their extension on the way up,
        # from the deepest knee bend to the hip lockout.
        k0 = start + int(np.argmin(sig["knee_angle_trajectory"][start:top + 1]))
        knee, hip = sig["knee_angle_trajectory"][k0:top + 1], sig["back_trajectory"][k0:top + 1]
        knee_rom, hip_rom = knee.max() - knee[0], hip.max() - hip.min()
        if knee_rom >= 10.0 and hip_rom > 1e-6:
            k = int(np.argmax((knee - knee[0]) / knee_rom >= 0.8))
            return {"hip_progress_at_knee_lockout": float((hip[k] - hip.min()) / hip_rom)}
    return {}


def _movement_sec(seg: np.ndarray, rom: float, fps: float) -> float:
    """Duration of the movement from rest to the turning point in ``seg`` (rest first, rising).

    Timed between the last frame within `MOVE_BAND_FRAC` of the rest level and the first frame
    within `MOVE_BAND_FRAC` of the turning value, then scaled by 1 / (1 - 2 * MOVE_BAND_FRAC) to
    the whole excursion: close to the true top-to-bottom time for smooth (cosine, minimum-jerk)
    and linear profiles alike, where the wider phase bands would cut ~40% off a smooth descent.
    """
    start = int(np.flatnonzero(seg <= seg[0] + MOVE_BAND_FRAC * rom)[-1])
    arrive = int(np.flatnonzero(seg >= seg[-1] - MOVE_BAND_FRAC * rom)[0])
    return max(arrive - start, 0) / fps / (1.0 - 2.0 * MOVE_BAND_FRAC)


def analyze_reps(signals: dict[str, np.ndarray], fps: float, exercise: str) -> RepAnalysis:
    """Segments the clip into reps and phases (method in the module docstring).

    Args:
        signals: signal name -> [T] array (the 7 channels; NaN = missing).
        fps: frames per second.
        exercise: an exercise id or alias (see `schema.EXERCISES`).

    Returns:
        The `RepAnalysis`; no reps when the primary signal barely moves or is missing.
    """
    ex = canonical_exercise(exercise)
    if ex is None:
        raise ValueError(f"unknown exercise {exercise!r}; expected one of {EXERCISES}")
    fps = float(fps)
    primary_name = PRIMARY_SIGNAL[ex]
    raw = np.asarray(signals[primary_name], dtype=np.float64)
    n = raw.size
    label = PRIMARY_LABEL[ex]

    def empty(why: str) -> RepAnalysis:
        period = n / fps if fps else 0.0
        return RepAnalysis(ex, fps, [], [], TURN_AT[ex], period, n, no_reps=why)

    if n < 3:
        return empty(f"the clip has {n} frame{'' if n == 1 else 's'} ({n / fps:.3g} s): too "
                     "short for a rep, which goes down and back up")
    if not np.isfinite(raw).any():
        return empty(f"the {label} is missing in every frame")
    x = smoothed(raw, fps)
    period = estimate_period(x, fps)
    if primary_name not in ANGLE_SIGNALS:
        x = _detrend(x, period * fps, rest_high=TURN_AT[ex] == "bottom")
    lo, hi = np.percentile(x, [2, 98])
    kind = "angle" if primary_name in ANGLE_SIGNALS else "position"
    if hi - lo < MIN_RANGE[kind]:
        unit = " deg" if kind == "angle" else " torso lengths"
        return dataclasses.replace(empty(
            f"no movement to count: the {label} varies by {hi - lo:.2g}{unit}, less than "
            f"the {MIN_RANGE[kind]:g}{unit} of the smallest rep"), period_sec=period)
    piv = _pivots(x, fps, period)
    counts = {k: sum(1 for _, kk in piv if kk == k) for k in ("top", "bottom")}
    n_reps = min(counts.values())
    if n_reps == 0:
        return dataclasses.replace(empty(
            f"no rep: the {label} moves but never goes to a turning point and back"),
            period_sec=period)
    if counts["top"] == counts["bottom"]:
        turn = TURN_AT[ex]
    else:
        turn = "bottom" if counts["bottom"] < counts["top"] else "top"

    sig = {k: smoothed(v, fps) for k, v in signals.items()}
    key = _smooth(key_measure(signals, ex), fps)
    sign = 1.0 if turn == "top" else -1.0  # s = sign * x is high at the turning point
    s = sign * x
    turn_idx = [i for i, (_, k) in enumerate(piv) if k == turn]
    reps: list[Rep] = []
    phases: list[tuple[str, int, int]] = []
    move_in, pause_turn, move_out, pause_rest = (
        ("descent", "bottom", "ascent", "lockout") if turn == "bottom"
        else ("ascent", "lockout", "descent", "bottom"))
    for r, pi in enumerate(turn_idx):
        p = piv[pi][0]
        left = piv[pi - 1][0] if pi > 0 else 0
        right = piv[pi + 1][0] if pi + 1 < len(piv) else n - 1
        complete = pi > 0 and pi + 1 < len(piv)
        rom_l, rom_r = max(s[p] - s[left], 0.0), max(s[p] - s[right], 0.0)
        seg_l, seg_r = s[left:p + 1], s[p:right + 1]
        start = left + int(np.flatnonzero(seg_l <= s[left] + BAND_FRAC * rom_l)[-1])
        b0 = left + int(np.flatnonzero(seg_l >= s[p] - BAND_FRAC * rom_l)[0])
        b1 = p + int(np.flatnonzero(seg_r >= s[p] - BAND_FRAC * rom_r)[-1])
        end = p + int(np.flatnonzero(seg_r <= s[right] + BAND_FRAC * rom_r)[0])
        nxt = piv[turn_idx[r + 1]][0] if r + 1 < len(turn_idx) else n
        into_turn = _movement_sec(seg_l, rom_l, fps)
        out_of_turn = _movement_sec(seg_r[::-1], rom_r, fps)
        if turn == "bottom":
            bottom = b0 + int(np.argmin(key[b0:b1 + 1]))
            top = b1 + int(np.argmax(key[b1:nxt]))
            descent, ascent = into_turn, out_of_turn
        else:
            top = b0 + int(np.argmax(key[b0:b1 + 1]))
            bottom = b1 + int(np.argmin(key[b1:nxt]))
            ascent, descent = into_turn, out_of_turn
        turn_pause = (b1 - b0) / fps
        depth, lockout = float(key[bottom]), float(key[top])
        reps.append(Rep(
            start=start, bottom=bottom, top=top, end=end, depth=depth, lockout=lockout,
            rom=lockout - depth, descent_sec=descent, ascent_sec=ascent,
            bottom_pause_sec=turn_pause if turn == "bottom" else 0.0,
            top_pause_sec=turn_pause if turn == "top" else 0.0,
            duration_sec=(end - start) / fps, complete=complete,
            extra=_extra_measures(ex, sig, start, top, end)))
        if phases and phases[-1][2] < start:  # rest between reps
            phases.append((pause_rest, phases[-1][2], start))
        phases += [(move_in, start, b0), (pause_turn, b0, b1), (move_out, b1, end)]
    return RepAnalysis(ex, fps, reps, phases, turn, period, n)


# ----------------------------------------------------------------------------- rep channels

# The rep analysis as per-frame channels: an optional input of the motion encoder, after the 7
# signals (`Clip.model_input(rep_channels=True)`).
REP_CHANNELS: tuple[str, ...] = (
    "rep_phase_sin", "rep_phase_cos", "rep_relative_seconds", "rep_descent_seconds",
    "rep_depth", "rep_lockout", *(f"exercise_{ex}" for ex in EXERCISES))


def rep_channels(analysis: RepAnalysis) -> np.ndarray:
    """The rep analysis as per-frame channels [T, len(REP_CHANNELS)] float32.

    On the frames of each rep (start..end), 0 elsewhere: the rep phase as sin and cos (phase 0
    at the start, pi at the turning point, 2 pi at the end); the rep's duration relative to the
    clip's median rep duration, minus 1; its descent in seconds / 2; its depth and lockout (the
    exercise's key measure, `key_measure`) scaled like the signals: (deg - 90) / 90 for the
    angles of squats and deadlifts, torso units / 2 for the heights of push-ups and presses.
    On every frame: the exercise the clip names, one-hot (what the key measure is). These are
    measurements of the motion, not fault labels: where the rules draw their lines is for the
    model to learn.
    """
    out = np.zeros((analysis.num_frames, len(REP_CHANNELS)), np.float32)
    out[:, REP_CHANNELS.index(f"exercise_{analysis.exercise}")] = 1.0
    reps = analysis.reps
    if not reps:
        return out
    median = float(np.median([r.duration_sec for r in reps])) or 1.0
    angle = PRIMARY_SIGNAL[analysis.exercise] in ANGLE_SIGNALS

    def scale(v: float) -> float:
        return (v - 90.0) / 90.0 if angle else v / 2.0

    for r in reps:
        turn = int(np.clip(r.bottom if analysis.turn == "bottom" else r.top, r.start, r.end))
        frames = np.arange(r.start, r.end + 1)
        phase = np.where(frames <= turn,
                         np.pi * (frames - r.start) / max(turn - r.start, 1),
                         np.pi + np.pi * (frames - turn) / max(r.end - turn, 1))
        out[frames, :6] = np.stack([
            np.sin(phase), np.cos(phase), np.full(frames.size, r.duration_sec / median - 1.0),
            np.full(frames.size, r.descent_sec / 2.0), np.full(frames.size, scale(r.depth)),
            np.full(frames.size, scale(r.lockout))], -1)
    return out
