"""The report's figures: inline SVG drawn from a clip, its reps and the model's attention.

The exercise's key measure over time with the rules' thresholds (`key_measure_svg`), the 7
input signals (`waves_svg`), where the bridge's event tokens attend (`attention_heatmap_svg`,
`attention_lines_svg`), and the body as COCO-17 stick figures at the bottom and the top of the
best and the worst rep (`key_poses`, `stick_figures_svg`). Charts are `svgplot.py`'s; every
figure is numbers only (nothing from the clip file is written into the markup). What the
figures show is chosen by `report_tables.py`; the page is `report.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from markupsafe import Markup

from wavepose_jax import svgplot
from wavepose_jax.data.clip import Clip
from wavepose_jax.data.pose import COCO17
from wavepose_jax.data.schema import SIGNAL_NAMES
from wavepose_jax.data.waves import RepAnalysis, key_measure
from wavepose_jax.report_tables import MEASURES, PHASE_COLORS, PHASE_LABELS, TORSO_CM, pick_reps

SIGNAL_LABELS: dict[str, str] = {
    "trajectory": "hip height", "legs_trajectory": "knee height",
    "shoulder_trajectory": "shoulder height", "back_trajectory": "hip angle (°)",
    "knee_angle_trajectory": "knee angle (°)", "arm_Trajectory": "wrist height",
    "core_": "torso height",
}
KEYPOINT_MIN_CONFIDENCE = 0.3  # joints below this confidence are not drawn (pose.py's default)

# COCO-17 skeleton: (joint, joint) by name; drawn left side blue, right side orange.
SKELETON: tuple[tuple[str, str], ...] = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"), ("nose", "left_eye"),
    ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
)
SIDE_COLORS = {"left": "#4c72b0", "right": "#dd8452", "mid": "#555"}
TOKEN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")


def _shade_phases(chart: svgplot.Chart, analysis: RepAnalysis) -> None:
    """Shades every phase span of the analysis (x in seconds) and adds the phase legend."""
    for kind, start, end in analysis.phases:
        chart.span(start / analysis.fps, end / analysis.fps, PHASE_COLORS.get(kind, "#999"))
    kinds = [k for k in PHASE_COLORS if any(kind == k for kind, _, _ in analysis.phases)]
    chart.legend([(PHASE_LABELS[k], PHASE_COLORS[k]) for k in kinds])


def key_measure_svg(clip: Clip, analysis: RepAnalysis, worst: int | None = None) -> Markup:
    """The exercise's key measure over time: phases shaded, reps numbered (`worst` in red),
    each rep's bottom and top marked, the rules' thresholds dashed (inline SVG)."""
    measure = MEASURES[clip.exercise]
    value = key_measure(clip.signals, clip.exercise)  # [T]
    finite = value[np.isfinite(value)]
    levels = [level for level, _ in measure.thresholds]
    lo = min([*levels, float(finite.min())] if finite.size else levels)
    hi = max([*levels, float(finite.max())] if finite.size else levels)
    pad = 0.06 * (hi - lo or 1.0)
    unit = ("degrees" if measure.unit == "°" else
            f"torso lengths (1 = shoulders to hips, ≈{TORSO_CM:.0f} cm)")
    chart = svgplot.Chart(x_range=(0.0, clip.n_frames / clip.fps),
                          y_range=(lo - pad, hi + 3.5 * pad), x_label="time (s)", title=unit)
    _shade_phases(chart, analysis)
    chart.line(np.arange(clip.n_frames) / clip.fps, value)
    for level, label in measure.thresholds:
        chart.hline(level, "#c44e52", f"{label} {measure.format(level).split(' (')[0]}")
    for i, rep in enumerate(analysis.reps):
        color = "#c44e52" if i == worst else "#222"
        chart.text((rep.start + rep.end) / 2 / clip.fps, hi + 3.5 * pad,
                   f"rep {i + 1}" + (" (worst)" if i == worst else ""), color=color, dy=14,
                   weight="bold" if i == worst else "normal")
        chart.points([rep.bottom / clip.fps, rep.top / clip.fps], [rep.depth, rep.lockout],
                     color)
    return Markup(chart.svg())


def waves_svg(clip: Clip, analysis: RepAnalysis) -> Markup:
    """The 7 model input signals over time, stacked (each scaled to its own band, its range
    written at the right), phases shaded (inline SVG)."""
    n = len(SIGNAL_NAMES)
    chart = svgplot.Chart(x_range=(0.0, clip.n_frames / clip.fps), y_range=(0.0, float(n)),
                          height=40 * n + 64, margin=(110, 150, 26, 38), x_label="time (s)",
                          y_ticks=[n - i - 0.5 for i in range(n)],
                          y_tick_labels=[SIGNAL_LABELS[name] for name in SIGNAL_NAMES])
    _shade_phases(chart, analysis)
    t = np.arange(clip.n_frames) / clip.fps
    for i, name in enumerate(SIGNAL_NAMES):
        band = n - i - 1  # the band's lower edge
        x = np.asarray(clip.signals[name], np.float64)
        finite = x[np.isfinite(x)]
        if not clip.present[name] or not finite.size:
            chart.text(clip.n_frames / clip.fps / 2, band + 0.5, "absent", color="#999", dy=4)
            continue
        lo, hi = float(finite.min()), float(finite.max())
        chart.line(t, band + 0.1 + 0.8 * (x - lo) / (hi - lo or 1.0), width=1.0)
        unit = "°" if "angle" in SIGNAL_LABELS[name] else " torso"
        chart.text(clip.n_frames / clip.fps, band + 0.5, f"{lo:.3g} to {hi:.3g}{unit}",
                   anchor="start", dx=6, dy=4, size=11, color="#555")
    return Markup(chart.svg())


def attention_heatmap_svg(attention: np.ndarray, fps: float, analysis: RepAnalysis) -> Markup:
    """Attention [Q, T'] as an image (brighter = more), one row per event token, rep starts and
    ends dashed (inline SVG around a one-pixel-per-value PNG)."""
    q, t = attention.shape
    chart = svgplot.Chart(x_range=(0.0, t / fps), y_range=(0.0, float(q)), height=18 * q + 64,
                          x_label="time (s)   (dashed: rep start and end; brighter: more "
                                  "attention)",
                          y_ticks=[q - i - 0.5 for i in range(q)],
                          y_tick_labels=[f"token {i + 1}" for i in range(q)])
    chart.image(svgplot.heat_png(attention))
    for rep in analysis.reps:
        for frame in (rep.start, rep.end):
            chart.vline(frame / analysis.fps, "#fff")
    return Markup(chart.svg())


def attention_lines_svg(clip: Clip, analysis: RepAnalysis, attention: np.ndarray,
                        fps: float) -> Markup:
    """Each token's attention over time (phases shaded, each peak dotted), the part of the
    clip beyond the model's input greyed (inline SVG)."""
    duration = clip.n_frames / clip.fps
    top = float(attention.max()) if attention.size else 1.0
    chart = svgplot.Chart(x_range=(0.0, duration), y_range=(0.0, 1.15 * top or 1.0),
                          height=230, x_label="time (s)   (dot: each token's peak)",
                          title="attention")
    _shade_phases(chart, analysis)
    window = attention.shape[1] / fps
    if window < duration:  # the model input was truncated to its seq_len
        chart.span(window, duration, "#999", 0.3)
    t = np.arange(attention.shape[1]) / fps  # [T'] seconds
    for i, row in enumerate(attention):
        color = TOKEN_COLORS[i % len(TOKEN_COLORS)]
        chart.line(t, row, color, width=1.0)
        peak = int(np.argmax(row))
        chart.points([t[peak]], [row[peak]], color)
        chart.text(duration, top * (1 - i / max(len(attention), 1)), f"token {i + 1}",
                   color=color, anchor="start", dx=6, dy=4, size=11)
    return Markup(chart.svg())


def _joint_side(name: str) -> str:
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "mid"


def stick_figures_svg(poses: Sequence[np.ndarray], width: int = 150, height: int = 190,
                      pad: int = 8) -> list[Markup]:
    """One inline SVG stick figure per pose, all on one scale so heights compare.

    Args:
      poses: [17, 2] COCO-17 keypoints each (image coordinates, y down; NaN = not drawn).

    Returns:
      SVG markup per pose (numbers only; nothing from the clip file is inserted).
    """
    points = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in poses] or [np.zeros((0, 2))])
    if points.size == 0:
        return [Markup("") for _ in poses]
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    scale = min((width - 2 * pad) / span[0], (height - 2 * pad) / span[1])
    offset = np.array([(width - scale * span[0]) / 2, (height - scale * span[1]) / 2])
    index = {name: i for i, name in enumerate(COCO17)}
    out = []
    for pose in poses:
        xy = (pose - lo) * scale + offset  # [17, 2] pixels
        ok = np.isfinite(xy).all(axis=1)
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 f'viewBox="0 0 {width} {height}" role="img">']
        for a, b in SKELETON:
            i, j = index[a], index[b]
            if ok[i] and ok[j]:
                side = _joint_side(a) if _joint_side(a) == _joint_side(b) else "mid"
                parts.append(f'<line x1="{xy[i, 0]:.1f}" y1="{xy[i, 1]:.1f}" x2="{xy[j, 0]:.1f}" '
                             f'y2="{xy[j, 1]:.1f}" stroke="{SIDE_COLORS[side]}" '
                             f'stroke-width="3" stroke-linecap="round"/>')
        for k in np.flatnonzero(ok):
            parts.append(f'<circle cx="{xy[k, 0]:.1f}" cy="{xy[k, 1]:.1f}" r="2.5" '
                         f'fill="{SIDE_COLORS[_joint_side(COCO17[k])]}"/>')
        parts.append("</svg>")
        out.append(Markup("".join(parts)))
    return out


@dataclasses.dataclass(frozen=True)
class Pose:
    """One stick figure, its caption, and "worst" when it shows the worst rep."""

    svg: Markup
    caption: str
    css: str = ""


def key_poses(clip: Clip, analysis: RepAnalysis) -> list[Pose]:
    """Stick figures at the bottom and the top of the best and the worst rep (`pick_reps`; of
    the first rep when none is picked); [] when the clip has no keypoints or no reps."""
    if clip.keypoints is None or not analysis.reps:
        return []
    picked = pick_reps(analysis)
    chosen = ([(picked.best, picked.best_label, ""),
               (picked.worst, picked.worst_label, "worst" if picked.faulty else "")]
              if picked.best is not None else [(0, "rep", "")])
    measure = MEASURES[analysis.exercise]
    keypoints = np.array(clip.keypoints, np.float64)  # [T, 17, 2]
    keypoints[..., 0] *= clip.keypoint_aspect  # one unit on both axes
    if clip.confidence is not None:
        keypoints[np.asarray(clip.confidence) < KEYPOINT_MIN_CONFIDENCE] = np.nan
    frames, captions, classes = [], [], []
    for index, label, css in chosen:
        rep = analysis.reps[index]
        for where, frame, value in (("bottom", rep.bottom, rep.depth),
                                    ("top", rep.top, rep.lockout)):
            frame = int(np.clip(frame, 0, clip.n_frames - 1))
            frames.append(keypoints[frame])
            captions.append(f"{label} (rep {index + 1}), {where} at {frame / clip.fps:.1f} s: "
                            f"{measure.name} {measure.format(value)}")
            classes.append(css)
    return [Pose(svg, caption, css) for svg, caption, css
            in zip(stick_figures_svg(frames), captions, classes)]
