"""A self-contained HTML report of analysed clips, for the coach or athlete who reads the feedback.

The page (template `templates/report.html.j2`, jinja2 with autoescaping):

* what wrote the feedback (`Provenance`: checkpoint, step, base model and fingerprint, package
  version, date) and what the units, scores and grade letters mean;
* for more than one clip an overview: one row per clip (id, exercise, reps, grade, faults named,
  warnings) linking to its section; sections of clips with warnings come first;
* the clips with nothing to coach (no rep measured), each with its reason and no feedback;
* per clip: the warnings of `checks.check_feedback` (the feedback against the measurement),
  the feedback (grounded: `feedback.py`), a set summary in plain units (degrees, seconds,
  scores out of 100, reps per minute), the faults: named or not, the reps that break each
  rule, and whether that makes it a fault of the set (`faults.SET_RULE`, stated under the
  table, the same definition the feedback and the checks use), a table of every rep (depth,
  top, lowering and lifting time, that rep's faults by the rules of `faults.py`; the worst rep
  highlighted), the body drawn from the COCO-17 keypoints at the bottom and top of the best
  and the worst rep (inline SVG), and the exercise's key measure over time with the rules'
  thresholds;
* model internals (the model's own text and what grounding changed, the 7 input signals,
  where the bridge's event tokens attend, timings) in a collapsed <details> section.

Figures are inline SVG (`svgplot.py`; the attention heatmap is a one-pixel-per-value PNG inside
one), so the page is one file with no external resources, a ten-clip report stays well under
2 MB and renders in well under a second per clip. Everything from the clip file or the model
(video_id, exercise, feedback) is escaped by the template. `write_report` writes atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from wavepose_jax import checks as checks_lib
from wavepose_jax import svgplot
from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.clip import Clip
from wavepose_jax.data.measure import Measurement
from wavepose_jax.data.pose import COCO17
from wavepose_jax.data.schema import SIGNAL_NAMES
from wavepose_jax.data.waves import TORSO_M, RepAnalysis, key_measure
from wavepose_jax.feedback import Feedback
from wavepose_jax.files import write_atomic
from wavepose_jax.prompt import PhysicsSummary

PHASE_COLORS: dict[str, str] = {"descent": "#4c72b0", "bottom": "#dd8452",
                                "ascent": "#55a868", "lockout": "#c44e52"}
PHASE_LABELS: dict[str, str] = {"descent": "lowering", "bottom": "bottom",
                                "ascent": "lifting", "lockout": "top"}
OUTSIDE = "outside reps"  # attention-share column for frames outside every phase
SIGNAL_LABELS: dict[str, str] = {
    "trajectory": "hip height", "legs_trajectory": "knee height",
    "shoulder_trajectory": "shoulder height", "back_trajectory": "hip angle (°)",
    "knee_angle_trajectory": "knee angle (°)", "arm_Trajectory": "wrist height",
    "core_": "torso height",
}
KEYPOINT_MIN_CONFIDENCE = 0.3  # joints below this confidence are not drawn (pose.py's default)
TORSO_CM = 100 * TORSO_M  # nominal adult shoulder-to-hip length behind the cm figures
# features.compute_wave_features: grade letter -> lowest overall score (0-100) that earns it.
GRADE_FLOORS: tuple[tuple[str, int], ...] = (("A", 85), ("B", 70), ("C", 55), ("D", 40),
                                             ("F", 0))

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


@dataclasses.dataclass(frozen=True)
class Measure:
    """How an exercise's key measure (`waves.key_measure`) is named and shown."""

    name: str        # what is measured, e.g. "knee angle"
    unit: str        # "°" or "torso"
    thresholds: tuple[tuple[float, str], ...]  # rule lines: (value, label)

    def format(self, value: float) -> str:
        """The value with its unit: "118°", or "0.62 torso (≈31 cm)"."""
        if self.unit == "°":
            return f"{value:.0f}°"
        return f"{value:.2f} torso (≈{value * TORSO_CM:.0f} cm)"


MEASURES: dict[str, Measure] = {
    "squat": Measure("knee angle", "°", (
        (faults_lib.SQUAT_MAX_DEPTH_DEG, "depth limit"),
        (faults_lib.SQUAT_MIN_LOCKOUT_DEG, "lockout"))),
    "deadlift": Measure("hip angle", "°", ((faults_lib.DEADLIFT_MIN_LOCKOUT_DEG, "lockout"),)),
    "pushup": Measure("shoulder height above the hands", "torso", (
        (faults_lib.PUSHUP_MAX_DEPTH, "depth limit"),)),
    "press": Measure("hand height above the shoulders", "torso", (
        (faults_lib.PRESS_MAX_DEPTH, "lowering limit"),
        (faults_lib.PRESS_MIN_LOCKOUT, "lockout"))),
}
# Exercise-specific per-rep measures (`Rep.extra`) shown as extra columns: key -> (header, fmt).
EXTRA_COLUMNS: dict[str, dict[str, tuple[str, str]]] = {
    "pushup": {"min_hip_angle": ("lowest hip angle", "{:.0f}°")},
    "deadlift": {"hip_progress_at_knee_lockout": ("hip opening when knees are 80% straight",
                                                  "{:.0%}")},
}


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What wrote the feedback: run directory, checkpoint step, base model, software, date."""

    checkpoint: str | None = None
    step: int | None = None
    base_model: str | None = None
    fingerprint: str | None = None
    package_version: str = ""
    created: str = ""
    decoding: str | None = None

    @classmethod
    def from_run(cls, run: Any, decoding: str | None = None) -> Provenance:
        """The provenance of a restored `run.Run` (its workdir, step and base-model record)."""
        record = run.record
        return cls(checkpoint=os.path.abspath(run.workdir), step=int(run.step),
                   base_model=record.path, fingerprint=record.fingerprint, decoding=decoding)

    def completed(self) -> Provenance:
        """This provenance with the package version and the date filled in when missing."""
        return dataclasses.replace(
            self, package_version=self.package_version or package_version(),
            created=self.created or datetime.datetime.now().astimezone().strftime(
                "%Y-%m-%d %H:%M %Z"))


def package_version() -> str:
    """The installed version of this package ("unknown" when it is not installed)."""
    try:
        return importlib.metadata.version("wavepose-jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class ClipReport:
    """Everything the report shows about one clip.

    Attributes:
      clip: the validated clip (signals, keypoints, fps, ids).
      measurement: the clip's measurement (`data/measure.py`: reps, tempo, fault verdicts).
      summary: the physics summary the model was prompted with.
      feedback: the feedback (`feedback.feedback`: grounded text, edits, faults, checks).
      attention: bridge attention [Q, T'] over the model's real input frames (averaged over
        heads and bridge layers; each row sums to 1), or None to leave the attention out.
      attention_fps: frame rate of the attention's time axis (the model input's rate).
      timing: optional generation timings (name -> seconds or tokens/s) shown in a table.
    """

    clip: Clip
    measurement: Measurement
    summary: PhysicsSummary
    feedback: Feedback
    attention: np.ndarray | None = None
    attention_fps: float | None = None
    timing: Mapping[str, float | int | None] | None = None

    @property
    def analysis(self) -> RepAnalysis:
        return self.measurement.analysis

    @property
    def checks(self) -> checks_lib.Checks:
        return self.feedback.checks


# ----------------------------------------------------------------------------- figures

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


# ----------------------------------------------------------------------------- per rep


@dataclasses.dataclass(frozen=True)
class Picked:
    """The two reps the report singles out, and what to call them.

    When some rep breaks a per-rep rule they are the best and the worst rep (`faulty`); when
    none does, calling one "worst" would mislead, so they are the reps with the largest and the
    smallest range of motion.
    """

    best: int | None
    worst: int | None
    faulty: bool

    @property
    def best_label(self) -> str:
        return "best rep" if self.faulty else "largest range"

    @property
    def worst_label(self) -> str:
        return "worst rep" if self.faulty else "smallest range"


def pick_reps(analysis: RepAnalysis) -> Picked:
    """The best and the worst rep (both None with fewer than two reps or no difference).

    Worst: the most faults by the per-rep rules, then the smallest range of motion (lockout -
    depth); best: the fewest faults, then the largest range. Ties go to the earlier rep.
    """
    reps = analysis.reps
    counts = [len(faults_lib.rep_faults(r, analysis.exercise)) for r in reps]
    faulty = any(counts)
    if len(reps) < 2:
        return Picked(None, None, faulty)
    keys = [(n, -r.rom) for n, r in zip(counts, reps)]
    worst = max(range(len(reps)), key=lambda i: (keys[i], -i))
    best = min(range(len(reps)), key=lambda i: (keys[i], i))
    return Picked(best, worst, faulty) if best != worst else Picked(None, None, faulty)


@dataclasses.dataclass(frozen=True)
class RepRow:
    """One rep as the per-rep table shows it."""

    number: int
    depth: str
    top: str
    descent: str
    ascent: str
    duration: str
    extra: tuple[str, ...]
    faults: tuple[str, ...]   # phrases of the per-rep rules this rep breaks
    complete: bool
    mark: str                 # "", or the `Picked` label of this rep
    css: str                  # "", "best", "worst" (a faulty worst rep) or "smallest"


def rep_rows(analysis: RepAnalysis) -> list[RepRow]:
    """The per-rep table of a clip (`MEASURES`, `EXTRA_COLUMNS`, `faults.rep_faults`)."""
    measure = MEASURES[analysis.exercise]
    extras = EXTRA_COLUMNS.get(analysis.exercise, {})
    picked = pick_reps(analysis)
    rows = []
    for i, rep in enumerate(analysis.reps):
        extra = tuple(fmt.format(rep.extra[key]) if key in rep.extra else "–"
                      for key, (_, fmt) in extras.items())
        mark, css = "", ""
        if i == picked.worst:
            mark, css = picked.worst_label, "worst" if picked.faulty else "smallest"
        elif i == picked.best:
            mark, css = picked.best_label, "best"
        rows.append(RepRow(
            number=i + 1, depth=measure.format(rep.depth), top=measure.format(rep.lockout),
            descent=f"{rep.descent_sec:.1f}", ascent=f"{rep.ascent_sec:.1f}",
            duration=f"{rep.duration_sec:.1f}", extra=extra,
            faults=tuple(faults_lib.phrase_for(f)
                         for f in faults_lib.rep_faults(rep, analysis.exercise)),
            complete=rep.complete, mark=mark, css=css))
    return rows


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


# ----------------------------------------------------------------------------- tables


def phase_of_frames(analysis: RepAnalysis) -> list[str]:
    """Phase name of every clip frame (`OUTSIDE` where no phase covers it); later spans win."""
    names = [OUTSIDE] * analysis.num_frames
    for kind, start, end in analysis.phases:
        for i in range(max(start, 0), min(end, analysis.num_frames - 1) + 1):
            names[i] = kind
    return names


def attention_by_phase(attention: np.ndarray, fps: float, analysis: RepAnalysis
                       ) -> tuple[list[str], np.ndarray]:
    """Each token's attention share per phase: (phase names, [Q, phases] shares).

    A model frame j (time j / fps) counts for the clip frame nearest that time.
    """
    frame_phase = phase_of_frames(analysis)
    kinds = [k for k in PHASE_COLORS if k in frame_phase] + [
        k for k in dict.fromkeys(frame_phase) if k not in PHASE_COLORS]
    src = np.clip(np.rint(np.arange(attention.shape[1]) / fps * analysis.fps).astype(int),
                  0, analysis.num_frames - 1)  # [T'] clip frame of each model frame
    column = np.array([kinds.index(frame_phase[i]) for i in src])  # [T']
    shares = np.zeros((attention.shape[0], len(kinds)))
    for k in range(len(kinds)):
        shares[:, k] = attention[:, column == k].sum(axis=1)
    return kinds, shares


def grade_meaning() -> str:
    """What the grade letters mean, from `GRADE_FLOORS`."""
    parts, upper = [], None
    for letter, floor in GRADE_FLOORS:
        if floor == 0:
            parts.append(f"{letter} below {upper}")
        elif upper is None:
            parts.append(f"{letter} {floor} or more")
        else:
            parts.append(f"{letter} {floor}-{upper - 1}")
        upper = floor
    return ", ".join(parts)


def reps_per_minute(analysis: RepAnalysis) -> float | None:
    """Reps per minute, rest included: from the mean start-to-start time of the reps (the
    duration of the only rep); None without reps."""
    reps = analysis.reps
    if len(reps) >= 2:
        cycle = (reps[-1].start - reps[0].start) / (len(reps) - 1) / analysis.fps
    else:
        cycle = reps[0].duration_sec if reps else 0.0
    return 60.0 / cycle if cycle > 0 else None


# Rules whose definition in faults.py is in the analysis' terms, said the way a coach says them.
PLAIN_RULES: dict[str, str] = {
    "fast_eccentric": f"the way down takes less than {faults_lib.MIN_DESCENT_SEC:g} s",
    "uneven_tempo": f"rep times vary by more than {faults_lib.MAX_TEMPO_CV:.0%} of their mean "
                    "(sets of 3 or more reps)",
}


def plain_rule(fault_id: str) -> str:
    """A fault's rule in the report's words and units (degrees sign, torso lengths)."""
    text = PLAIN_RULES.get(fault_id, faults_lib.FAULTS[fault_id].definition)
    return text.replace(" deg", "°").replace("torso units", "torso lengths")


def _score(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f}"


def summary_rows(r: ClipReport) -> list[tuple[str, str]]:
    """(label, value) rows of the set summary, in plain units."""
    s, clip = r.summary, r.clip
    tempo = r.measurement.tempo_sec
    pace = reps_per_minute(r.analysis)
    quality = clip.wave_features.quality
    efficiency = float(quality.efficiency) if quality and quality.efficiency is not None else None
    rows = [
        ("Reps measured", str(len(r.analysis.reps))),
        ("Tempo", "unknown" if tempo is None else f"{tempo:.1f} s per rep (rest excluded)"),
        ("Pace", "unknown" if pace is None else
         f"{pace:.0f} reps per minute (one rep every {60 / pace:.1f} s, rest included)"),
        ("Quality grade", f"{s.grade} (overall score {_score(s.overall)} of 100)"),
        ("Scores (out of 100)", ", ".join(
            f"{name} {_score(v)}" for name, v in (("smoothness", s.smoothness),
                                                  ("control", s.control),
                                                  ("consistency", s.consistency),
                                                  ("efficiency", efficiency)))),
        ("Phases (mean duration)", ", ".join(
            f"{PHASE_LABELS.get(k, k)} {d:.1f} s" for k, d in s.phases) or "none"),
    ]
    if s.expert is not None:
        rows.append(("Lifter level", "expert" if s.expert else "non-expert"))
    channels = sum(clip.present.values())
    rows.append(("Clip", f"{clip.n_frames / clip.fps:.1f} s ({clip.n_frames} frames at "
                         f"{clip.fps:g} fps), {channels} of {len(SIGNAL_NAMES)} body signals"
                         + (", from keypoints" if clip.keypoints is not None else "")))
    return rows


def _rep_words(verdict: faults_lib.FaultVerdict, total: int) -> str:
    """Which reps break a per-rep rule, in words: "reps 3 and 4 (2 of 5 complete reps)"."""
    if not verdict.per_rep:
        return "the set's rep times"
    if not verdict.reps:
        return "none"
    listed = text_lib.rep_list([i + 1 in verdict.reps for i in range(total)]).strip()
    return (f"{listed.removeprefix('on ') or 'every rep'} ({verdict.hits} of {verdict.counted} "
            f"{'complete ' if verdict.counted < total else ''}rep{'s' * (verdict.counted != 1)})")


def fault_rows(r: ClipReport) -> list[dict[str, Any]]:
    """Faults named in the feedback, of the set, or broken by some rep: phrase, whether the
    feedback names it, the reps that break its rule, whether the set has it (`SET_RULE`)."""
    said = set(r.feedback.faults)
    rows = []
    for f, verdict in r.measurement.verdicts.items():
        if f in said or verdict.present or verdict.reps:
            rows.append({"phrase": faults_lib.FAULTS[f].phrase, "id": f, "said": f in said,
                         "reps": _rep_words(verdict, r.measurement.reps),
                         "measured": verdict.present, "rule": plain_rule(f),
                         "agree": (f in said) == verdict.present})
    return rows


def _fmt(value) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Section:
    """What the template needs of one clip."""

    anchor: str
    report: ClipReport
    checks: checks_lib.Checks
    summary: list[tuple[str, str]]
    faults: list[dict[str, Any]]
    measure: Measure
    extra_headers: tuple[str, ...]
    reps: list[RepRow]
    worst: int | None         # the worst rep when some rep breaks a rule
    picked_by_faults: bool    # the marked reps are the best and worst by the rules
    poses: list[Pose]
    key_svg: Markup
    debug: dict[str, Any]


def _debug(r: ClipReport) -> dict[str, Any]:
    """The model-internals material of a clip: figures, attention table, timings, prompt."""
    out: dict[str, Any] = {"prompt": r.summary.to_text(),
                           "model_text": r.feedback.model_text,
                           "edits": [(e.rule, e.said, e.written or "(left out)")
                                     for e in r.feedback.edits],
                           "waves_svg": waves_svg(r.clip, r.analysis),
                           "timing": [(k, _fmt(v)) for k, v in (r.timing or {}).items()]}
    if r.attention is not None:
        att = np.asarray(r.attention, np.float64)  # [Q, T']
        fps = float(r.attention_fps or r.clip.fps)
        kinds, shares = attention_by_phase(att, fps, r.analysis)
        t = np.arange(att.shape[1]) / fps
        window, duration = att.shape[1] / fps, r.clip.n_frames / r.clip.fps
        out.update(
            truncated=(f"The model read the first {window:.1f} s of this {duration:.1f} s clip."
                       if window < duration - 0.5 / fps else ""),
            heatmap_svg=attention_heatmap_svg(att, fps, r.analysis),
            lines_svg=attention_lines_svg(r.clip, r.analysis, att, fps),
            phase_headers=[PHASE_LABELS.get(k, k) for k in kinds],
            token_rows=[[f"token {i + 1}", f"{t[int(np.argmax(row))]:.2f} s"]
                        + [f"{100 * v:.0f}%" for v in share]
                        for i, (row, share) in enumerate(zip(att, shares))])
    return out


def _section(r: ClipReport, anchor: str) -> Section:
    picked = pick_reps(r.analysis)
    worst = picked.worst if picked.faulty else None
    return Section(
        anchor=anchor, report=r, checks=r.checks, summary=summary_rows(r),
        faults=fault_rows(r), measure=MEASURES[r.clip.exercise],
        extra_headers=tuple(h for h, _ in EXTRA_COLUMNS.get(r.clip.exercise, {}).values()),
        reps=rep_rows(r.analysis), worst=worst, picked_by_faults=picked.faulty,
        poses=key_poses(r.clip, r.analysis),
        key_svg=key_measure_svg(r.clip, r.analysis, worst), debug=_debug(r))


# ----------------------------------------------------------------------------- page


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("wavepose_jax", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2")


def render_page(reports: Sequence[ClipReport], title: str = "WavePose report",
                provenance: Provenance | None = None,
                not_coached: Sequence[tuple[Clip, str]] = ()) -> str:
    """The complete HTML document: provenance, glossary, overview, the clips with nothing to
    coach (`not_coached`: clip and reason), one section per clip (clips with warnings first,
    otherwise in the given order)."""
    sections = [_section(r, f"clip-{i + 1}") for i, r in enumerate(reports)]
    ordered = sorted(sections, key=lambda s: s.checks.passed)  # stable: warnings first
    return _template().render(
        title=title, sections=ordered, provenance=(provenance or Provenance()).completed(),
        not_coached=[{"video_id": c.video_id, "source": c.source, "exercise": c.exercise,
                      "reason": reason} for c, reason in not_coached],
        set_rule=faults_lib.SET_RULE,
        grade_meaning=grade_meaning(), torso_cm=f"{TORSO_CM:.0f}",
        phase_colors=PHASE_COLORS, phase_labels=PHASE_LABELS,
        tempo_tolerance=(f"{checks_lib.TEMPO_TOLERANCE_SEC:g} s or "
                         f"{checks_lib.TEMPO_TOLERANCE_FRAC:.0%}"))


def write_report(path: str | os.PathLike, reports: Sequence[ClipReport],
                 title: str = "WavePose report", provenance: Provenance | None = None,
                 not_coached: Sequence[tuple[Clip, str]] = ()) -> None:
    """Renders the page of `reports` and writes it atomically to `path`."""
    write_atomic(path, render_page(reports, title, provenance, not_coached))
