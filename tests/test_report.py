"""The HTML report as a reader gets it: parsed with html.parser, clip by clip.

Checked: each clip's warnings (the checks of the feedback against the measurement), the per-rep
table with its worst rep, the stick figures (or the note that a clip has no keypoints), the
overview linking to the sections (clips with warnings first), provenance, units, escaping of
everything from the clip file, and the size bound of a ten-clip report. tools/render_report.sh
checks the same page in a real browser.
"""

import base64
import dataclasses
import glob
import html.parser
import os
import re

import numpy as np
import pytest

from wavepose_jax import checks, files, report, report_figures, report_tables
from wavepose_jax import feedback as feedback_lib
from wavepose_jax.data import clip as clip_lib
from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import features, synthetic, waves
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.measure import measure
from wavepose_jax.feedback import Feedback
from wavepose_jax.prompt import PhysicsSummary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"


class Page(html.parser.HTMLParser):
    """The parsed page: tags with attributes, and per clip section what it shows."""

    def __init__(self):
        super().__init__()
        self.tags, self.text, self.sections, self.overview = [], [], [], []
        self.not_coached = []
        self._section = self._row = None
        self._stack = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        self.tags.append((tag, a))
        self._stack.append((tag, classes))
        if tag == "section" and "clip" in classes:
            self._section = {"id": a["id"], "warnings": [], "passed": False, "rep_rows": [],
                             "svg_figures": 0, "lines": 0, "no_keypoints": False, "text": [],
                             "details": False, "fault_rows": []}
            self.sections.append(self._section)
        s = self._section
        if tag == "a" and any(t == "table" and "overview" in c for t, c in self._stack):
            self.overview.append(a["href"])
        if tag == "tr" and any(t == "table" and "not-coached" in c for t, c in self._stack):
            self._row = {"class": classes, "cells": []}
            self.not_coached.append(self._row)
        if s is None:
            return
        s["passed"] |= "passed" in classes
        s["no_keypoints"] |= "no-keypoints" in classes
        s["details"] |= tag == "details"
        for kind in ("reps", "faults"):
            if tag == "tr" and any(t == "table" and kind in c for t, c in self._stack):
                self._row = {"class": classes, "cells": []}
                s["rep_rows" if kind == "reps" else "fault_rows"].append(self._row)
        if tag == "svg" and any(t == "figure" for t, _ in self._stack[:-1]):
            s["svg_figures"] += 1
        if tag == "line" and any(t == "figure" for t, _ in self._stack):
            s["lines"] += 1

    def handle_endtag(self, tag):
        while self._stack:
            if self._stack.pop()[0] == tag:
                break
        if tag == "tr":
            self._row = None
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row is not None and self._stack and self._stack[-1][0] == "td":
            self._row["cells"].append(data)
        s = self._section
        if s is None:
            return
        s["text"].append(data)
        if any(t == "div" and "warnings" in c for t, c in self._stack) and \
                self._stack[-1][0] == "li":
            s["warnings"].append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


def ungrounded(text: str, measurement) -> Feedback:
    """A feedback that states `text` as written (a text grounding did not touch)."""
    return Feedback(text=text, model_text=text, edits=(),
                    faults=text_lib.faults_from_text(text, measurement.exercise),
                    checks=checks.check_feedback(text, measurement))


def make_report(seed: int = 3, exercise: str = "squat", feedback: str | None = None,
                attention: bool = True, intended: tuple[str, ...] | None = None,
                ground: bool = True, **clip_fields) -> report.ClipReport:
    """A synthetic 4-rep clip (keypoints included; `intended` faults, else drawn) with
    `feedback` (default: its own true text; grounded unless `ground` is False);
    `clip_fields` replace fields of the clip."""
    options = {} if intended is None else {"faults": intended}
    clip = clip_lib.clip_from_dict(synthetic.generate_clip(seed, exercise, reps=4, **options),
                                   f"{exercise}.json")
    clip = dataclasses.replace(clip, **clip_fields)
    m = measure(clip)
    analysis = m.analysis
    text = clip.language if feedback is None else feedback
    att = None
    if attention:  # token i peaks in phase i
        frame_phase = report_tables.phase_of_frames(analysis)
        kinds = ["descent", "bottom", "ascent", report_tables.OUTSIDE]
        att = np.full((len(kinds), clip.n_frames), 1e-9)  # [Q, T] at the clip's own fps
        for i, kind in enumerate(kinds):
            att[i, [f == kind for f in frame_phase]] = 1.0
        att /= att.sum(axis=1, keepdims=True)
    return report.ClipReport(
        clip=clip, measurement=m,
        summary=PhysicsSummary.from_wave_features(clip.wave_features, clip.exercise, clip.expert),
        feedback=feedback_lib.feedback(text, m) if ground else ungrounded(text, m),
        attention=att, attention_fps=clip.fps, timing={"prefill_s": 0.01, "decode_s": 0.2})


@pytest.fixture(scope="module")
def good():
    r = make_report()
    assert r.checks.passed, r.checks.warnings  # the clip's true text agrees with it
    assert r.feedback.edits == ()  # and grounding finds nothing to change in it
    return r


@pytest.fixture(scope="module")
def wrong():
    """The same kind of clip with a text that miscounts and names an unmeasured fault."""
    r = make_report(seed=5, intended=(), video_id="wrong-one", ground=False,
                    feedback="I counted 7 reps, averaging 9.0 s each. Watch for rushed descent.")
    assert set(r.checks.faults_named) == {"fast_eccentric"}
    assert "fast_eccentric" not in r.checks.faults_measured
    return r


def test_attention_shares_follow_the_phases(good):
    kinds, shares = report_tables.attention_by_phase(good.attention, good.attention_fps,
                                                     good.analysis)
    assert set(kinds) >= {"descent", "bottom", "ascent", report_tables.OUTSIDE}
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-6)
    for i, kind in enumerate(["descent", "bottom", "ascent", report_tables.OUTSIDE]):
        assert shares[i, kinds.index(kind)] > 0.99, (kind, shares[i])
    # Half the frame rate: model frame j is clip frame 2j, still inside the same phases.
    half = good.attention[:, ::2] / good.attention[:, ::2].sum(1, keepdims=True)
    _, half_shares = report_tables.attention_by_phase(half, good.attention_fps / 2,
                                                      good.analysis)
    assert half_shares[1, kinds.index("bottom")] > 0.99



def test_tables_are_named_rows_built_from_the_clip_and_its_measurement(good, wrong):
    """`report_tables` needs no ClipReport: the rows come from the clip, its measurement and
    the faults the feedback names, as named fields."""
    shares = report_tables.attention_by_phase(good.attention, good.attention_fps, good.analysis)
    assert report_tables.OUTSIDE in shares.phases
    assert shares.shares.shape == (len(good.attention), len(shares.phases))
    rows = report_tables.fault_rows(wrong.measurement, wrong.feedback.faults)
    row, = [r for r in rows if r.id == "fast_eccentric"]
    assert row.said and not row.measured and not row.agree
    assert row.phrase == faults_lib.FAULTS["fast_eccentric"].phrase
    assert row.rule == report_tables.plain_rule("fast_eccentric")
    assert all(r.agree for r in report_tables.fault_rows(good.measurement, good.feedback.faults))
    summary = dict(report_tables.summary_rows(good.clip, good.measurement, good.summary))
    assert summary["Reps measured"] == str(len(good.analysis.reps))

def test_each_section_shows_warnings_rep_table_and_body(good, wrong):
    provenance = report.Provenance(checkpoint="/runs/x", step=250, base_model="tiny-base",
                                   fingerprint="abc123", decoding="greedy")
    parsed = parse(report.render_page([good, wrong], provenance=provenance))
    first, second = parsed.sections
    assert first["id"] != second["id"]

    # The clip with warnings comes first; each warning is one list item.
    assert "wrong-one" in "".join(first["text"])
    expected = checks.check_feedback(wrong.feedback.text, wrong.measurement).warnings
    assert first["warnings"] == expected and len(expected) >= 3
    assert any("says 7 reps" in w for w in expected)
    assert any('"rushed descent"' in w and "does not find" in w for w in expected)
    assert not first["passed"] and second["passed"] and second["warnings"] == []

    for section, r in ((first, wrong), (second, good)):
        rows = section["rep_rows"]
        assert len(rows) == 1 + len(r.analysis.reps)  # a header row, then one row per rep
        marked = [row for row in rows[1:] if {"worst", "smallest"} & set(row["class"])]
        assert len(marked) == 1
        cells = rows[1]["cells"]
        assert any(c.endswith("°") for c in cells)  # knee angles in degrees
        assert section["svg_figures"] == 4 and section["lines"] >= 4 * 10  # 4 stick figures
        assert section["details"]  # the model internals, collapsed

    text = "".join(parsed.text)
    for shown in ("/runs/x", "250", "tiny-base", "abc123", "greedy", "wavepose-jax"):
        assert shown in text
    assert "A 85 or more" in text and "torso" in text and "reps per minute" in text


def test_worst_rep_is_the_one_with_most_faults():
    analysis = waves.RepAnalysis("squat", 30.0, [], [], "bottom", 2.0, 10)
    for depth in (90.0, 125.0, 100.0):  # rep 2 is shallow (> 110 deg)
        analysis.reps.append(waves.Rep(0, 5, 9, 10, depth, 175.0, 175.0 - depth, 1.0, 0.8, 0.1,
                                       0.0, 2.0, True))
    picked = report_tables.pick_reps(analysis)
    assert (picked.best, picked.worst, picked.faulty) == (0, 1, True)
    rows = report_tables.rep_rows(analysis)
    assert [r.css for r in rows] == ["best", "worst", ""]
    assert rows[1].faults == ("shallow depth",) and rows[1].depth == "125°"
    analysis.reps[1] = dataclasses.replace(analysis.reps[1], depth=105.0, rom=70.0)
    picked = report_tables.pick_reps(analysis)  # no rep breaks a rule: ranges, never "worst"
    assert not picked.faulty and picked.worst_label == "smallest range" and picked.worst == 1


def test_escaping_of_everything_from_the_clip_file(good):
    evil = make_report(video_id=EVIL, feedback=f"3 reps. {EVIL} & <b>knees</b>", attention=False)
    page = report.render_page([evil, good], title="Report <1>")
    parsed = parse(page)
    assert not any(tag in ("script", "b") for tag, _ in parsed.tags)
    text = "".join(parsed.text)
    assert text.count(EVIL) >= 3  # overview link, heading and feedback, shown as text
    assert "<b>knees</b>" in text and "Report <1>" in text
    assert "<script>" not in page
    # Anchors are the clips' positions, not their ids: links work whatever the id holds.
    sections = [s["id"] for s in parsed.sections]
    assert sorted(parsed.overview) == sorted(f"#{s}" for s in sections)
    assert all(s.startswith("clip-") and s[5:].isdigit() for s in sections)
    # Nothing is loaded from outside the page: images are inline data.
    for tag, attrs in parsed.tags:
        for key in ("src", "href"):
            value = attrs.get(key, "")
            assert not value or value.startswith(("#", "data:image/png;base64,")), value
            if value.startswith("data:"):
                assert base64.b64decode(value.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_stick_figures_undo_keypoints_normalised_by_width_and_height():
    raw = synthetic.generate_clip(3, "squat", reps=2)
    kp = np.array([[[np.nan if v is None else v for v in p] for p in f] for f in raw["keypoints"]],
                  np.float64)
    width, height = 1.0 + np.nanmax(kp[..., 0]), 1.0 + np.nanmax(kp[..., 1])
    pixels = clip_lib.clip_from_dict({**raw, "image_size": [width, height]}, "px.json")
    normalised = clip_lib.clip_from_dict(
        {**raw, "image_size": [width, height],
         "keypoints": (kp / [width, height]).tolist()}, "norm.json")
    assert pixels.keypoint_aspect == 1.0  # pixel keypoints need no correction
    assert normalised.keypoint_aspect == pytest.approx(width / height)
    analysis = waves.analyze_reps(pixels.signals, pixels.fps, pixels.exercise)
    drawn = [report_figures.key_poses(c, analysis) for c in (pixels, normalised)]
    assert len(drawn[0]) == 4
    for a, b in zip(*drawn):  # the same figures, to rounding
        xy = [np.array([float(v) for v in re.findall(r'(?:x|y)[12]?="([-0-9.]+)"', str(p.svg))])
              for p in (a, b)]
        np.testing.assert_allclose(xy[0], xy[1], atol=0.15)


def test_signal_only_clip_says_there_are_no_keypoints(good):
    bare = make_report(keypoints=None, confidence=None, attention=False, video_id="bare")
    section = parse(report.render_page([bare])).sections[0]
    assert section["no_keypoints"] and section["svg_figures"] == 0
    assert "no keypoints" in "".join(section["text"])
    assert len(section["rep_rows"]) == 1 + len(bare.analysis.reps)


def test_overview_has_one_linked_row_per_clip(good, wrong):
    parsed = parse(report.render_page([good, wrong, good]))
    assert [f"#{s['id']}" for s in parsed.sections] == parsed.overview
    assert [s["passed"] for s in parsed.sections] == [False, True, True]
    assert not parse(report.render_page([good])).overview  # one clip: no overview


def test_rules_and_units_are_said_plainly():
    assert report_tables.plain_rule("fast_eccentric") == "the way down takes less than 0.6 s"
    assert "110°" in report_tables.plain_rule("shallow_depth")
    assert "torso lengths" in report_tables.plain_rule("pushup_partial_range")
    assert report_tables.MEASURES["squat"].format(97.4) == "97°"
    assert report_tables.MEASURES["press"].format(0.8) == "0.80 torso (≈40 cm)"
    analysis = waves.RepAnalysis("squat", 10.0, [], [], "bottom", 3.0, 100)
    for start in (0, 30, 60):  # a rep starts every 3 s: 20 reps per minute, rest included
        analysis.reps.append(waves.Rep(start, start + 10, start + 20, start + 25, 90.0, 175.0,
                                       85.0, 1.0, 1.0, 0.0, 0.0, 2.5, True))
    assert report_tables.reps_per_minute(analysis) == pytest.approx(20.0)


def test_grade_letters_match_the_wave_analysis():
    for letter, floor in report_tables.GRADE_FLOORS:
        assert features._grade(floor) == letter  # pylint: disable=protected-access
        if floor:
            assert features._grade(floor - 0.01) != letter  # pylint: disable=protected-access
    assert report_tables.grade_meaning().startswith("A 85 or more, B 70-84")


def test_ten_example_clips_fit_in_two_megabytes():
    """The ten clips of examples/, each with attention over 40 s at 10 fps like the demo's."""
    paths = sorted(glob.glob(os.path.join(ROOT, "examples", "*.json")))
    assert len(paths) == 10
    reports = []
    for path in paths:
        clip = clip_lib.load_clip(path)
        m = measure(clip)
        attention = np.random.default_rng(0).dirichlet(np.ones(400), size=8)  # [Q, T']
        reports.append(report.ClipReport(
            clip=clip, measurement=m, feedback=feedback_lib.feedback(clip.language, m),
            summary=PhysicsSummary.from_wave_features(clip.wave_features, clip.exercise),
            attention=attention, attention_fps=10.0, timing={"prefill_s": 0.1, "decode_s": 1.0}))
    page = report.render_page(reports)
    assert len(page.encode()) < 2 * 1024 * 1024
    parsed = parse(page)
    assert len(parsed.sections) == len(parsed.overview) == 10
    assert all(s["svg_figures"] == 4 for s in parsed.sections)


def test_write_is_atomic(tmp_path):
    path = tmp_path / "r.html"
    files.write_atomic(path, "first")
    files.write_atomic(path, "second")
    assert path.read_text() == "second"
    with pytest.raises(TypeError):
        files.write_atomic(path, 123)  # fails while writing the temporary file
    assert path.read_text() == "second"
    assert sorted(os.listdir(tmp_path)) == ["r.html"]


def test_the_fault_table_and_the_rep_table_tell_one_story():
    """A fault on a minority of reps: the rep-by-rep table marks it on that rep, and the fault
    table says which rep, how many of the set's reps, and that this is not a fault of the set
    (the rule stated under it), as the feedback and the checks have it."""
    clip = clip_lib.load_clip(os.path.join(ROOT, "examples", "synth-s27-00000.json"))
    m = measure(clip)
    assert m.verdicts["fast_eccentric"].reps == (3,) and "fast_eccentric" not in m.faults
    r = report.ClipReport(clip=clip, measurement=m, feedback=feedback_lib.feedback(
        clip.language, m), summary=PhysicsSummary.from_wave_features(clip.wave_features, "squat"))
    assert r.checks.passed
    page = parse(report.render_page([r]))
    (section,) = page.sections
    reps = {row["cells"][0].strip(): row["cells"][-1] for row in section["rep_rows"][1:]}
    assert reps["3"] == "rushed descent" and reps["1"] == reps["2"] == "none"
    rows = {row["cells"][0]: row["cells"][1:4] for row in section["fault_rows"][1:]}
    assert rows == {"rushed descent": ["no", "rep 3 (1 of 3 reps)", "no"]}
    assert faults_lib.SET_RULE in " ".join("".join(section["text"]).split())


def test_clips_with_nothing_to_coach_get_their_reason_and_no_section(good):
    still = dataclasses.replace(good.clip, video_id="still-one")
    page = parse(report.render_page([good], not_coached=[(still, "no movement to count")]))
    assert len(page.sections) == 1
    assert [row["cells"][:1] + row["cells"][-2:] for row in page.not_coached[1:]] == [
        ["still-one", "squat", "no movement to count"]]
