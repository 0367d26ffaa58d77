"""The inference command line on a tiny checkpoint: JSON lines, bad files, reports, errors."""

import html.parser
import json
import os

import numpy as np
import pytest

from wavepose_jax import feedback as feedback_lib
from wavepose_jax import generate as generate_lib
from wavepose_jax import infer
from wavepose_jax.data import pose, synthetic
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.clip import clip_from_dict
from wavepose_jax.data.measure import measure
from wavepose_jax.data.schema import SIGNAL_NAMES

MAX_NEW_TOKENS = "5"


@pytest.fixture(scope="module")
def workdir(tiny_run):
    return str(tiny_run[0])


def keypoint_and_signal_clips(seed: int = 4) -> tuple[dict, dict]:
    """One synthetic squat twice: COCO-17 keypoints only, and the 7 signals derived from them."""
    full = json.loads(json.dumps(synthetic.generate_clip(seed, "squat", reps=3)))
    keypoints_only = {k: v for k, v in full.items()
                      if k not in SIGNAL_NAMES and k not in ("wave_features", "LANGUAGE")}
    keypoints_only["video_id"] = "from-keypoints"
    signals = pose.keypoints_to_signals(np.asarray(full["keypoints"], np.float64),
                                        np.asarray(full["confidence"], np.float64), full["fps"])
    signals_only = {k: v for k, v in keypoints_only.items() if k not in ("keypoints", "confidence")}
    signals_only.update({name: np.asarray(signals[name], np.float64).tolist()
                         for name in SIGNAL_NAMES})
    signals_only["video_id"] = "from-signals"
    return keypoints_only, signals_only


class _Page(html.parser.HTMLParser):
    """Per clip section of a report: its heading text, check boxes, rep tables, figures."""

    def __init__(self):
        super().__init__()
        self.sections, self.text, self.heading = [], [], False

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "section":
            self.sections.append({"title": "", "checks": 0, "reps": 0, "svg": 0,
                                  "no_keypoints": 0})
        elif self.sections:
            s = self.sections[-1]
            s["checks"] += bool({"warnings", "passed"} & set(classes))
            s["reps"] += tag == "table" and "reps" in classes
            s["svg"] += tag == "svg"
            s["no_keypoints"] += "no-keypoints" in classes
        self.heading = tag == "h2"

    def handle_data(self, data):
        self.text.append(data)
        if self.heading and self.sections and not self.sections[-1]["title"]:
            self.sections[-1]["title"] = data


def test_directory_json_lines_bad_file_and_report(workdir, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    keypoints_only, signals_only = keypoint_and_signal_clips()
    (clips / "a_keypoints.json").write_text(json.dumps(keypoints_only))
    (clips / "b_signals.json").write_text(json.dumps(signals_only))
    (clips / "c_bad.json").write_text(json.dumps({**signals_only, "fps": "fast"}))
    still = {**signals_only, "video_id": "motionless",
             **{name: [0.5] * 90 for name in SIGNAL_NAMES}}
    still.pop("n_frames", None)
    (clips / "d_still.json").write_text(json.dumps(still))
    page = tmp_path / "report.html"
    rc = infer.main(["--input", str(clips), "--ckpt", workdir, "--json", "--report", str(page),
                     "--max_new_tokens", MAX_NEW_TOKENS, "--batch_size", "2"])
    stdout, stderr = capsys.readouterr()
    assert rc == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {clips / 'c_bad.json'}: field 'fps': expected a number in "
                      "[1, 1000], got 'fast'"]
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped: ")]
    assert skipped == [f"skipped: {clips / 'd_still.json'}: field 'knee_angle_trajectory': "
                       "nothing to coach: no movement to count: the knee angle varies by 0 deg, "
                       "less than the 8 deg of the smallest rep"]
    assert "1 of 4 clip files failed; 1 of 4 clip files had nothing to coach" in stderr

    results = [json.loads(line) for line in stdout.splitlines()]
    assert [r["video_id"] for r in results] == ["from-keypoints", "from-signals", "motionless"]
    kp, sig, still = results
    assert still == {"video_id": "motionless", "source": str(clips / "d_still.json"),
                     "exercise": "squat", "reps": 0, "feedback": None,
                     "nothing_to_coach": skipped[0].split("nothing to coach: ")[1]}
    assert kp["summary"] == sig["summary"]  # keypoints -> the same signals -> the same summary
    assert kp["exercise"] == "squat" and kp["reps"] == kp["summary"]["reps"] == 3
    assert kp["quality_grade"] == kp["summary"]["grade"]
    for r in (kp, sig):
        assert isinstance(r["feedback"], str) and isinstance(r["model_text"], str)
        assert r["faults"] == text_lib.faults_from_text(r["feedback"], "squat")
        # The faults are the model's; grounding changes only the facts around them.
        assert r["faults"] == text_lib.faults_from_text(r["model_text"], "squat")
        assert all(set(e) == {"rule", "said", "written"} for e in r["grounding"])
        checked = r["checks"]  # the feedback against the clip's own measurement
        assert set(checked["checks"]) == {"rep_count", "tempo", "faults_not_measured",
                                          "faults_not_named", "fault_reps"}
        assert checked["passed"] == all(c["status"] != "warn"
                                        for c in checked["checks"].values())
        assert checked["faults_named"] == r["faults"] and checked["measured_reps"] == 3
        timing = r["timing"]
        assert timing["batch_size"] == 2
        assert timing["prefill_s"] >= 0 and timing["decode_s"] >= 0 and timing["compile_s"] > 0

    parsed = _Page()
    parsed.feed(page.read_text())
    parsed.close()
    by_id = {s["title"].split(" \u2014 ")[0].strip(): s for s in parsed.sections}
    assert set(by_id) == {"from-keypoints", "from-signals"}  # no section without feedback
    for s in by_id.values():
        assert s["checks"] == 1 and s["reps"] == 1
    assert by_id["from-keypoints"]["svg"] >= 4 + 1  # stick figures and the chart
    assert by_id["from-signals"]["no_keypoints"] == 1
    text = "".join(parsed.text)
    assert os.path.abspath(workdir) in text and "step" in text  # which run wrote it
    assert "Clips with nothing to coach" in text and still["nothing_to_coach"] in text


def test_single_clip_prints_summary_then_feedback(workdir, tmp_path, capsys, monkeypatch):
    _, signals_only = keypoint_and_signal_clips()
    path = tmp_path / "one.json"
    path.write_text(json.dumps(signals_only))
    printed = []  # stdout printed between two chunks handed back by the decoder
    stream = generate_lib.generate_stream

    def recording_stream(*args, **kwargs):
        for tokens in stream(*args, **kwargs):
            printed.append(capsys.readouterr().out)
            yield tokens

    monkeypatch.setattr(generate_lib, "generate_stream", recording_stream)
    new_tokens = 12  # 3 chunks: the prefill's token, then 8 and 3 tokens
    rc = infer.main(["--input", str(path), "--ckpt", workdir, "--max_new_tokens", str(new_tokens)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert len(printed) == 3
    lines = "".join(printed + [out]).splitlines()
    assert lines[0] == f"== from-signals ({path})"
    assert lines[1].startswith("exercise: squat | reps: 3 | grade: ")
    assert lines[2].startswith("phases: descent ")
    assert lines[3].startswith("feedback: ") and lines[4].startswith("faults: ")
    assert printed[0].endswith("\nfeedback: ")  # before the first sentence is decoded


def test_the_stream_prints_each_sentence_grounded_once_complete(capsys):
    t = np.arange(300) / 30.0
    signals = {name: np.zeros_like(t) for name in SIGNAL_NAMES}
    signals["knee_angle_trajectory"] = 147.0 + 30.0 * np.cos(2 * np.pi * t / 2.5)  # 4 shallow
    m = measure(clip_from_dict({"exercise": "squat", "fps": 30,
                                **{k: v.tolist() for k, v in signals.items()}}, "c.json"))
    assert m.reps == 4 and m.faults == ["shallow_depth"]
    stream = infer._FeedbackStream(m)  # pylint: disable=protected-access
    model = "I counted 3 reps, averaging 9.0 s each. Watch for shallow depth on rep 2. Go deeper."
    shown = []
    for end in range(len(model) + 1):
        stream(model[:end])
        shown.append(capsys.readouterr().out)
    assert shown[0] == "feedback: "
    printed = "".join(shown)
    first = f"feedback: I counted 4 reps, averaging {m.tempo_sec:.1f} s each. "
    assert printed == first + "Watch for shallow depth. "  # the last sentence may still go on
    at = model.index("Watch")
    assert "".join(shown[:at + 2]) == first  # printed once the next sentence began
    result = infer.Result(prepared=None, feedback=feedback_lib.feedback(model, m),
                          attention=None, timing={})
    stream.finish(result)
    out = capsys.readouterr().out
    assert out.startswith("Go deeper.\nfaults: shallow depth (shallow_depth)")
    assert printed.removeprefix("feedback: ") + "Go deeper." == result.feedback.text


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    _, signals_only = keypoint_and_signal_clips()
    path = tmp_path / "one.json"
    path.write_text(json.dumps(signals_only))
    missing = str(tmp_path / "no_run")
    assert infer.main(["--input", str(path), "--ckpt", missing]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {missing}: no checkpoint")
    assert f"python train.py --config configs/tiny.py --workdir {missing}" in err


def test_usage_errors(tmp_path, capsys):
    assert infer.main(["--input", str(tmp_path / "nothing.json"), "--ckpt", "x"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing.json'}: no such file or directory\n"
    assert infer.main(["--input", str(tmp_path), "--top_p", "0"]) == 2
    assert "--top_p must be in (0, 1]" in capsys.readouterr().err


def test_a_feedback_grounding_leaves_empty_is_said_not_blank(capsys):
    t = np.arange(300) / 30.0
    signals = {name: np.zeros_like(t) for name in SIGNAL_NAMES}
    signals["knee_angle_trajectory"] = 147.0 + 30.0 * np.cos(2 * np.pi * t / 2.5)
    m = measure(clip_from_dict({"exercise": "squat", "fps": 30,
                                **{k: v.tolist() for k, v in signals.items()}}, "c.json"))
    result = feedback_lib.feedback("Do 3 sets of 12.", m)  # every sentence unverifiable
    assert result.text == "" and result.shown == feedback_lib.EMPTY
    infer._print_feedback(infer.Result(prepared=None, feedback=result, attention=None,
                                       timing={}))  # pylint: disable=protected-access
    assert capsys.readouterr().out.startswith(f"feedback: {feedback_lib.EMPTY}\n")
