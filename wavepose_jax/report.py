"""A self-contained HTML report of analysed clips, for the coach or athlete who reads the feedback.

Each clip gets one section:

* the summary the model was given (`prompt.PhysicsSummary`) and a few facts of the clip;
* the generated feedback, and the faults read back from it (`faults.faults_from_text`) beside
  the faults the measurement rules find in the clip (`faults.detect_faults`);
* the 7 body-region signals over time, reps numbered and phases (descent / bottom / ascent /
  lockout, from `waves.analyze_reps`) shaded;
* where each event token of the bridge looks: its cross-attention over time as a heatmap
  [tokens, time] and as lines under the exercise's primary signal, plus a table of each
  token's attention share per phase.

Figures are PNGs drawn with matplotlib's Agg renderer (no pyplot, no display) and inlined as
base64 data URIs, so the page is one file with no external resources. Every text from the
clip or the model is HTML-escaped. `write_report` writes atomically (temporary file in the
target directory, then `os.replace`).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wavepose_jax.data import faults as faults_lib
from wavepose_jax.files import write_atomic
from wavepose_jax.data.clip import Clip
from wavepose_jax.data.schema import SIGNAL_NAMES
from wavepose_jax.data.waves import PRIMARY_SIGNAL, RepAnalysis
from wavepose_jax.prompt import PhysicsSummary

PHASE_COLORS: dict[str, str] = {"descent": "#4c72b0", "bottom": "#dd8452",
                                "ascent": "#55a868", "lockout": "#c44e52"}
OUTSIDE = "outside reps"  # attention-share column for frames outside every phase
SIGNAL_LABELS: dict[str, str] = {
    "trajectory": "hip height", "legs_trajectory": "knee height",
    "shoulder_trajectory": "shoulder height", "back_trajectory": "hip angle (deg)",
    "knee_angle_trajectory": "knee angle (deg)", "arm_Trajectory": "wrist height",
    "core_": "torso height",
}
DPI = 100

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
section { border-top: 2px solid #ddd; margin-top: 2em; padding-top: 1em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; }
blockquote { background: #f7f9fc; border-left: 4px solid #4c72b0; margin: 0.5em 0;
             padding: 0.6em 1em; white-space: pre-wrap; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.muted { color: #777; font-size: 0.9em; }
"""


@dataclasses.dataclass(frozen=True)
class ClipReport:
    """Everything the report shows about one clip.

    Attributes:
      clip: the validated clip (signals, fps, ids).
      analysis: `waves.analyze_reps` of the clip's signals.
      summary: the physics summary the model was prompted with.
      feedback: the generated coaching text.
      faults: fault ids read back from `feedback`.
      attention: bridge attention [Q, T'] over the model's real input frames (averaged over
        heads and bridge layers; each row sums to 1), or None to leave the attention out.
      attention_fps: frame rate of the attention's time axis (the model input's rate).
      timing: optional generation timings (name -> seconds or tokens/s) shown in a table.
    """

    clip: Clip
    analysis: RepAnalysis
    summary: PhysicsSummary
    feedback: str
    faults: Sequence[str]
    attention: np.ndarray | None = None
    attention_fps: float | None = None
    timing: Mapping[str, float] | None = None


# ----------------------------------------------------------------------------- figures


def _png(fig: Figure) -> str:
    """The figure as a base64 PNG string."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _shade_phases(ax, analysis: RepAnalysis) -> None:
    """Shades every phase span of the analysis on an axis whose x is seconds."""
    for kind, start, end in analysis.phases:
        ax.axvspan(start / analysis.fps, end / analysis.fps, color=PHASE_COLORS.get(kind, "#999"),
                   alpha=0.15, lw=0)


def _phase_legend(fig: Figure, analysis: RepAnalysis) -> None:
    from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel

    kinds = list(dict.fromkeys(kind for kind, _, _ in analysis.phases))
    if kinds:
        fig.legend(handles=[Patch(color=PHASE_COLORS.get(k, "#999"), alpha=0.3, label=k)
                            for k in kinds], loc="outside upper right", ncol=len(kinds),
                   fontsize=8, frameon=False)


def waves_png(clip: Clip, analysis: RepAnalysis) -> str:
    """The 7 signals over time, one row each, phases shaded and reps numbered (base64 PNG)."""
    t = np.arange(clip.n_frames) / clip.fps  # [T] seconds
    fig = Figure(figsize=(10, 1.25 * len(SIGNAL_NAMES) + 0.6), layout="constrained")
    axes = fig.subplots(len(SIGNAL_NAMES), 1, sharex=True)
    for ax, name in zip(axes, SIGNAL_NAMES):
        _shade_phases(ax, analysis)
        if clip.present[name]:
            ax.plot(t, clip.signals[name], color="#222", lw=1.0)
        else:
            ax.text(0.5, 0.5, "absent", transform=ax.transAxes, ha="center", va="center",
                    color="#999")
        ax.set_ylabel(SIGNAL_LABELS[name], rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    for i, rep in enumerate(analysis.reps):
        axes[0].annotate(f"rep {i + 1}", ((rep.start + rep.end) / 2 / clip.fps, 1.0),
                         xycoords=("data", "axes fraction"), ha="center", va="bottom",
                         fontsize=8)
    axes[-1].set_xlabel("time (s)")
    _phase_legend(fig, analysis)
    fig.suptitle(f"{clip.exercise}: {len(analysis.reps)} reps", fontsize=10)
    return _png(fig)


def attention_heatmap_png(attention: np.ndarray, fps: float, analysis: RepAnalysis) -> str:
    """Attention [Q, T'] as an image: one row per event token, rep boundaries marked."""
    q, t = attention.shape
    fig = Figure(figsize=(10, 0.35 * q + 1.4), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(attention, aspect="auto", cmap="magma", interpolation="nearest",
                      extent=(0.0, t / fps, q - 0.5, -0.5))
    for rep in analysis.reps:
        for frame in (rep.start, rep.end):
            ax.axvline(frame / analysis.fps, color="white", lw=0.8, ls="--")
    ax.set_yticks(range(q), [f"token {i + 1}" for i in range(q)], fontsize=8)
    ax.set_xlabel("time (s)   (dashed: rep start / end)")
    fig.colorbar(image, ax=ax, label="attention", fraction=0.03)
    return _png(fig)


def attention_lines_png(clip: Clip, analysis: RepAnalysis, attention: np.ndarray,
                        fps: float) -> str:
    """The primary signal (phases shaded) over each token's attention curve, peaks marked."""
    primary = PRIMARY_SIGNAL[clip.exercise]
    fig = Figure(figsize=(10, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.4))
    _shade_phases(top, analysis)
    top.plot(np.arange(clip.n_frames) / clip.fps, clip.signals[primary], color="#222", lw=1.0)
    top.set_ylabel(SIGNAL_LABELS[primary], fontsize=8)
    t = np.arange(attention.shape[1]) / fps  # [T'] seconds
    colors = [f"C{i % 10}" for i in range(attention.shape[0])]
    for i, (row, color) in enumerate(zip(attention, colors)):
        bottom.plot(t, row, color=color, lw=1.0, label=f"token {i + 1}")
        peak = int(np.argmax(row))
        bottom.plot(t[peak], row[peak], "o", color=color, ms=4)
    window = attention.shape[1] / fps
    if window < clip.n_frames / clip.fps:  # the model input was truncated to its seq_len
        for ax in (top, bottom):
            ax.axvspan(window, clip.n_frames / clip.fps, color="#bbb", alpha=0.3, lw=0)
        bottom.annotate("beyond the model's input", (window, 0.5), xytext=(6, 0),
                        xycoords=("data", "axes fraction"), textcoords="offset points",
                        fontsize=8, color="#555")
    bottom.set_ylabel("attention", fontsize=8)
    bottom.set_xlabel("time (s)   (dot: each token's peak)")
    bottom.legend(fontsize=7, ncol=min(attention.shape[0], 8), loc="upper right", frameon=False)
    _phase_legend(fig, analysis)
    return _png(fig)


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


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """An HTML table of already escaped cells."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _summary_rows(r: ClipReport) -> list[tuple[str, str]]:
    s, clip = r.summary, r.clip
    rows = [("Exercise", s.exercise), ("Reps", _fmt(s.reps)), ("Quality grade", s.grade),
            ("Overall / smoothness / control / consistency",
             " / ".join(_fmt(v) for v in (s.overall, s.smoothness, s.control, s.consistency))),
            ("Tempo", "unknown" if s.tempo_sec is None else f"{s.tempo_sec:.2f} s per rep"),
            ("Phases (mean duration)",
             ", ".join(f"{k} {d:.2f} s" for k, d in s.phases) or "none"),
            ("Dominant frequency",
             "unknown" if s.dominant_hz is None else f"{s.dominant_hz:.2f} Hz")]
    if s.expert is not None:
        rows.append(("Lifter level", "expert" if s.expert else "non-expert"))
    channels = sum(clip.present.values())
    rows.append(("Clip", f"{clip.n_frames} frames at {clip.fps:g} fps "
                         f"({clip.n_frames / clip.fps:.1f} s), {channels}/{len(SIGNAL_NAMES)} "
                         f"signals" + (", from keypoints" if clip.keypoints is not None else "")))
    return [(html.escape(k), html.escape(v)) for k, v in rows]


def _faults_html(r: ClipReport) -> str:
    said = list(r.faults)
    measured = faults_lib.detect_faults(r.analysis)
    ids = [f for f in faults_lib.FAULTS if f in said or f in measured]
    if not ids:
        return "<p>No technique fault named in the feedback or measured in the clip.</p>"
    rows = [(html.escape(f), html.escape(faults_lib.FAULTS[f].phrase),
             "yes" if f in said else "no", "yes" if f in measured else "no",
             html.escape(faults_lib.FAULTS[f].definition)) for f in ids]
    return _table(rows, ("fault", "phrase", "in the feedback", "measured in the clip", "rule"))


def _attention_html(r: ClipReport) -> str:
    att = np.asarray(r.attention, np.float64)  # [Q, T']
    fps = float(r.attention_fps)
    kinds, shares = attention_by_phase(att, fps, r.analysis)
    t = np.arange(att.shape[1]) / fps
    window, duration = att.shape[1] / fps, r.clip.n_frames / r.clip.fps
    truncated = (f" The model read the first {window:.1f} s of this {duration:.1f} s clip."
                 if window < duration - 0.5 / fps else "")
    rows = [[f"token {i + 1}", f"{t[int(np.argmax(row))]:.2f} s"]
            + [f"{100 * v:.0f}%" for v in share] for i, (row, share) in enumerate(zip(att, shares))]
    return "\n".join([
        "<h3>Where the event tokens look</h3>",
        "<p class=\"muted\">Cross-attention of each of the bridge's event tokens over the "
        "motion (mean over heads and layers); the tokens are what the language model reads "
        f"about the clip.{html.escape(truncated)}</p>",
        _img(attention_heatmap_png(att, fps, r.analysis), "attention heatmap"),
        _img(attention_lines_png(r.clip, r.analysis, att, fps), "attention over time"),
        _table(rows, ["token", "peak at"] + [html.escape(k) for k in kinds]),
    ])


def _img(png_b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_b64}">'


# ----------------------------------------------------------------------------- page


def render_section(r: ClipReport) -> str:
    """The HTML section of one clip."""
    clip = r.clip
    parts = [
        f'<section id="{html.escape("clip-" + clip.video_id)}">',
        f"<h2>{html.escape(clip.video_id)} &mdash; {html.escape(clip.exercise)}</h2>",
        f'<p class="muted">{html.escape(clip.source)}</p>',
        "<h3>Summary</h3>", _table(_summary_rows(r)),
        "<h3>Feedback</h3>", f"<blockquote>{html.escape(r.feedback)}</blockquote>",
        "<h3>Technique faults</h3>", _faults_html(r),
        "<h3>Motion</h3>", _img(waves_png(clip, r.analysis), "body-region signals over time"),
    ]
    if r.attention is not None:
        parts.append(_attention_html(r))
    if r.timing:
        parts += ["<h3>Generation</h3>",
                  _table([(html.escape(k), html.escape(_fmt(v, 4))) for k, v in r.timing.items()])]
    parts.append("</section>")
    return "\n".join(parts)


def render_page(reports: Sequence[ClipReport], title: str = "WavePose report") -> str:
    """The complete HTML document: one section per clip."""
    toc = ""
    if len(reports) > 1:
        items = "".join(f'<li><a href="#{html.escape("clip-" + r.clip.video_id)}">'
                        f"{html.escape(r.clip.video_id)}</a> ({html.escape(r.clip.exercise)})</li>"
                        for r in reports)
        toc = f"<ul>{items}</ul>"
    body = "\n".join(render_section(r) for r in reports)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{toc}\n{body}\n</body>\n</html>\n")


def write_report(path: str | os.PathLike, reports: Sequence[ClipReport],
                 title: str = "WavePose report") -> None:
    """Renders the page of `reports` and writes it atomically to `path`."""
    write_atomic(path, render_page(reports, title))
