"""The HTML report: figures inlined, text escaped, attention mapped onto phases, atomic writes."""

import base64
import html.parser
import os

import numpy as np
import pytest

from wavepose_jax.data import faults as faults_lib
from wavepose_jax import files, report
from wavepose_jax.data import clip as clip_lib
from wavepose_jax.data import synthetic, waves
from wavepose_jax.prompt import PhysicsSummary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collector(html.parser.HTMLParser):
    """Start tags with their attributes, and the text, of a parsed page."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Collector:
    parser = _Collector()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def clip_report():
    """A synthetic squat, its analysis, and attention of token i peaked in phase i."""
    clip = clip_lib.clip_from_dict(synthetic.generate_clip(3, "squat", reps=3), "squat.json")
    analysis = waves.analyze_reps(clip.signals, clip.fps, clip.exercise)
    frame_phase = report.phase_of_frames(analysis)
    kinds = ["descent", "bottom", "ascent", report.OUTSIDE]
    attention = np.full((len(kinds), clip.n_frames), 1e-9)  # [Q, T] at the clip's own fps
    for i, kind in enumerate(kinds):
        attention[i, [f == kind for f in frame_phase]] = 1.0
    attention /= attention.sum(axis=1, keepdims=True)
    summary = PhysicsSummary.from_wave_features(clip.wave_features, clip.exercise, clip.expert)
    feedback = "3 reps. Watch the shallow depth & <script>alert('x')</script> knees."
    return report.ClipReport(
        clip=clip, analysis=analysis, summary=summary, feedback=feedback,
        faults=faults_lib.faults_from_text(feedback, clip.exercise), attention=attention,
        attention_fps=clip.fps, timing={"prefill_s": 0.01, "decode_s": 0.2})


def test_attention_shares_follow_the_phases(clip_report):
    kinds, shares = report.attention_by_phase(clip_report.attention, clip_report.attention_fps,
                                              clip_report.analysis)
    assert set(kinds) >= {"descent", "bottom", "ascent", report.OUTSIDE}
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-6)
    for i, kind in enumerate(["descent", "bottom", "ascent", report.OUTSIDE]):
        assert shares[i, kinds.index(kind)] > 0.99, (kind, shares[i])
    # Half the frame rate: model frame j is clip frame 2j, still inside the same phases.
    half = clip_report.attention[:, ::2] / clip_report.attention[:, ::2].sum(1, keepdims=True)
    _, half_shares = report.attention_by_phase(half, clip_report.attention_fps / 2,
                                               clip_report.analysis)
    assert half_shares[1, kinds.index("bottom")] > 0.99


def test_page_is_valid_html_with_inline_figures_and_escaped_text(clip_report):
    page = report.render_page([clip_report], title="Report <1>")
    parsed = parse(page)
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) >= 3
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not any(tag == "script" for tag, _ in parsed.tags)
    text = "".join(parsed.text)
    assert "<script>alert('x')</script>" in text   # shown as text, not markup
    assert "Report <1>" in text
    assert "shallow depth" in text and "shallow_depth" in text
    assert [tag for tag, _ in parsed.tags].count("section") == 1
    assert "src=" not in page.replace('src="data:image/png;base64,', "")  # nothing external


def test_page_without_attention_and_with_several_clips(clip_report):
    other = report.ClipReport(clip=clip_report.clip, analysis=clip_report.analysis,
                              summary=clip_report.summary, feedback="Good set.", faults=[])
    parsed = parse(report.render_page([clip_report, other]))
    sections = [tag for tag, _ in parsed.tags].count("section")
    images = [tag for tag, _ in parsed.tags].count("img")
    assert sections == 2 and images == 3 + 1  # the second clip has only the signals figure


def test_write_is_atomic(tmp_path):
    path = tmp_path / "r.html"
    files.write_atomic(path, "first")
    files.write_atomic(path, "second")
    assert path.read_text() == "second"
    with pytest.raises(TypeError):
        files.write_atomic(path, 123)  # fails while writing the temporary file
    assert path.read_text() == "second"
    assert sorted(os.listdir(tmp_path)) == ["r.html"]
