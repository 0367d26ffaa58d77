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

The tables are `report_tables.py`'s, the figures `report_figures.py`'s; this module puts them
into one `Section` per clip and renders the page. Figures are inline SVG (`svgplot.py`; the
attention heatmap is a one-pixel-per-value PNG inside one), so the page is one file with no
external resources, a ten-clip report stays well under 2 MB and renders in well under a second
per clip. Everything from the clip file or the model (video_id, exercise, feedback) is escaped
by the template. `write_report` writes atomically.
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
from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data.clip import Clip
from wavepose_jax.data.measure import Measurement
from wavepose_jax.data.waves import RepAnalysis
from wavepose_jax.feedback import Feedback
from wavepose_jax.files import write_atomic
from wavepose_jax.prompt import PhysicsSummary
from wavepose_jax.report_figures import (Pose, attention_heatmap_svg, attention_lines_svg,
                                         key_measure_svg, key_poses, waves_svg)
from wavepose_jax.report_tables import (EXTRA_COLUMNS, MEASURES, PHASE_COLORS, PHASE_LABELS,
                                        TORSO_CM, FaultRow, Measure, RepRow, attention_by_phase,
                                        fault_rows, grade_meaning, pick_reps, rep_rows,
                                        summary_rows)


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



# ----------------------------------------------------------------------------- sections


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
    faults: list[FaultRow]
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
        anchor=anchor, report=r, checks=r.checks,
        summary=summary_rows(r.clip, r.measurement, r.summary),
        faults=fault_rows(r.measurement, r.feedback.faults), measure=MEASURES[r.clip.exercise],
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
