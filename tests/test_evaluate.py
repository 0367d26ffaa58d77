"""Evaluation: metric functions on hand-made texts, and the CLI on a tiny checkpoint."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from wavepose_jax import cli, dataset
from wavepose_jax import evaluate as evaluate_lib
from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.testing import make_tiny_base


def test_metric_functions_on_hand_made_texts():
    assert evaluate_lib.rep_accuracy([8, 7, None, 3], [8, 8, 5, None]) == pytest.approx(1 / 3)
    assert evaluate_lib.rep_accuracy([1], [None]) is None
    scores = evaluate_lib.fault_scores(
        [["a", "b"], [], ["c"], ["z"]], [["a"], ["b"], ["c", "d"], None])
    # tp = a, c; fp = b; fn = b, d (the unlabelled clip is ignored)
    assert scores["fault_precision"] == pytest.approx(2 / 3)
    assert scores["fault_recall"] == pytest.approx(2 / 4)
    assert scores["fault_f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    perfect_silence = evaluate_lib.fault_scores([[], []], [[], []])
    assert perfect_silence == {"fault_precision": 1.0, "fault_recall": 1.0, "fault_f1": 1.0}
    assert evaluate_lib.fault_scores([["a"]], [[]])["fault_f1"] == 0.0
    assert evaluate_lib.rouge_l(["the knees cave in"], ["the knees cave in"]) == pytest.approx(1.0)
    assert evaluate_lib.rouge_l(["alpha beta"], ["gamma delta"]) == 0.0
    assert 0 < evaluate_lib.rouge_l(["keep the chest up"], ["keep your chest up now"]) < 1

    # End to end over the fault vocabulary: a composed text is scored perfectly.
    rng = np.random.default_rng(0)
    fault_ids = [f.id for f in faults_lib.faults_for("squat")][:2]
    text = text_lib.compose_feedback("squat", 6, fault_ids, 2.5, rng)
    info = dataset.ClipInfo("x.json", "x", "squat", text, tuple(fault_ids), 6,
                             rule_faults=tuple(fault_ids))
    other = dataset.ClipInfo("y.json", "y", "squat", "Nice set.", (), 4, rule_faults=())
    metrics = evaluate_lib.text_metrics([text, "4 reps, nice set."], [info, other])
    assert {k: v for k, v in metrics.items() if k != "per_fault"} == {
        "rep_accuracy": 1.0, "fault_precision": 1.0, "fault_recall": 1.0, "fault_f1": 1.0,
        "rule_agreement": {"precision": 1.0, "recall": 1.0, "f1": 1.0},
        "rep_fault_accuracy": None, "rouge_l": pytest.approx(metrics["rouge_l"])}
    assert metrics["rouge_l"] > 0.5
    assert metrics["per_fault"]["shallow_depth"] == {"precision": 1.0, "recall": 1.0,
                                                     "f1": 1.0, "support": 1}
    assert "pushup_hip_sag" not in metrics["per_fault"]  # no push-up clip here
    wrong = evaluate_lib.text_metrics(["Great, 5 reps.", "Good."], [info, other])
    assert wrong["rep_accuracy"] == 0.0 and wrong["fault_recall"] == 0.0


def test_per_fault_and_per_rep_scores():
    per_fault = evaluate_lib.per_fault_scores(
        [["shallow_depth"], ["shallow_depth", "fast_eccentric"], ["pushup_hip_sag"]],
        [["shallow_depth"], ["fast_eccentric"], []], ["squat", "squat", "pushup"])
    assert per_fault["shallow_depth"] == {"precision": 0.5, "recall": 1.0,
                                          "f1": pytest.approx(2 / 3), "support": 1}
    assert per_fault["fast_eccentric"]["f1"] == 1.0 and per_fault["fast_eccentric"]["support"] == 1
    assert per_fault["pushup_hip_sag"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                           "support": 0}
    # Per rep: the truth is limited to the clip's faults (the 1-rep minority fault is not one).
    rep_faults = (("shallow_depth",), ("shallow_depth",), ("fast_eccentric",), ())
    info = dataset.ClipInfo("x.json", "x", "squat", "", ("shallow_depth",), 4,
                             rep_faults=rep_faults)
    exact = "I counted 4 reps. Watch for shallow depth on reps 1 and 2."
    assert evaluate_lib.rep_fault_accuracy([exact], [info]) == 1.0
    whole_set = "I counted 4 reps. Watch for shallow depth."
    assert evaluate_lib.rep_fault_accuracy([whole_set], [info]) == 0.5
    wrong_reps = "I counted 4 reps. Watch for shallow depth on rep 3 and rushed descent."
    assert evaluate_lib.rep_fault_accuracy([wrong_reps], [info]) == 0.0
    unlabelled = dataset.ClipInfo("y.json", "y", "squat", "", ("shallow_depth",), 4)
    assert evaluate_lib.rep_fault_accuracy([exact], [unlabelled]) is None


def test_exercise_prior_f1_is_the_best_fixed_list_per_exercise():
    prior = evaluate_lib.exercise_prior_f1
    # Squats: 2 of 3 shallow; presses: 1 of 4 with a soft lockout.
    true = [["shallow_depth"], ["shallow_depth"], [], ["press_incomplete_lockout"], [], [], []]
    exercises = ["squat"] * 3 + ["press"] * 4
    best = prior(true, exercises)
    # By hand: {squat: shallow} has tp 2, fp 1, fn 1 -> F1 4/6; adding {press: lockout}
    # gives tp 3, fp 4, fn 0 -> F1 6/10.
    assert best == pytest.approx(4 / 6)
    assert best == pytest.approx(evaluate_lib.fault_scores(
        [["shallow_depth"]] * 3 + [[]] * 4, true)["fault_f1"])
    # Nothing beats it: every fixed choice of the exercises' faults scores at most that.
    import itertools
    squat = [f.id for f in faults_lib.faults_for("squat")]
    press = [f.id for f in faults_lib.faults_for("press")]
    def subsets(ids):
        return [list(c) for k in range(len(ids) + 1) for c in itertools.combinations(ids, k)]

    for a, b in itertools.product(subsets(squat), subsets(press)):
        assert evaluate_lib.fault_scores([a] * 3 + [b] * 4, true)["fault_f1"] <= best + 1e-12
    assert prior([None, None], ["squat", "press"]) is None
    # No fault anywhere: naming nothing finds everything there is (fault_scores' convention).
    assert prior([[], []], ["squat", "press"]) == 1.0


def test_shift_permutation_moves_every_real_row():
    perm = evaluate_lib._shift_permutation(3, 5)
    assert perm.tolist() == [1, 2, 0, 3, 4]
    assert evaluate_lib._shift_permutation(1, 2).tolist() == [0, 1]


def test_cli_evaluates_a_checkpoint(tiny_run, tmp_path, capsys, monkeypatch):
    workdir, data_dir, params = tiny_run
    seen = {}

    def spy(model, *args, **kwargs):
        seen["model"] = model
        return evaluate(model, *args, **kwargs)

    evaluate = evaluate_lib.evaluate
    monkeypatch.setattr(evaluate_lib, "evaluate", spy)
    out = tmp_path / "eval.json"
    rc = evaluate_lib.main(["--ckpt", str(workdir), "--data", str(data_dir), "--json", str(out),
                            "--max_clips", "3"])
    assert rc == 0, capsys.readouterr().err
    # The trained parameters were restored onto the rebuilt model.
    restored = nnx.state(seen["model"], nnx.All(nnx.Param, nnx.PathContains("encoder")))
    expected = jax.tree.leaves(nnx.State(params)["encoder"])
    assert len(expected) == len(jax.tree.leaves(restored)) > 0
    for got, want in zip(jax.tree.leaves(restored), expected):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want))

    result = json.loads(out.read_text())
    assert result["n_clips"] == 3 and result["step"] == 7
    assert np.isfinite(result["val_loss"]) and result["val_loss"] > 0
    for metrics in (result, result["ablations"]["zero_soft_tokens"],
                    result["ablations"]["shuffled_soft_tokens"]):
        for key in ("rep_accuracy", "fault_precision", "fault_recall", "fault_f1", "rouge_l"):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    assert len(result["samples"]) == 3 and all("generated" in s for s in result["samples"])
    # How often the generated texts agree with their clips' own measurement (checks.py).
    assert 0.0 <= result["checks_passed"] <= 1.0
    assert set(result["check_warn_rate"]) == {"rep_count", "tempo", "faults_not_measured",
                                              "faults_not_named", "fault_reps"}


def test_cli_errors_are_one_line(tiny_run, tmp_path, capsys):
    workdir, data_dir, _ = tiny_run
    failed = cli.EXIT_FAILED
    assert evaluate_lib.main(["--ckpt", str(tmp_path / "nope"), "--data", str(data_dir)]) == failed
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "checkpoints directory" in err and "\n" not in err
    assert "create one with `python train.py --config configs/tiny.py --workdir" in err
    # A different base model (here: two layers instead of one) is refused before any work.
    other = tmp_path / "other_base"
    make_tiny_base(other, num_hidden_layers=2)
    assert evaluate_lib.main(["--ckpt", str(workdir), "--data", str(data_dir),
                              "--base", str(other)]) == failed
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    assert "checkpoints/7: checkpoint was trained on base" in err[-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "bad.json").write_text("[1, 2]")
    assert evaluate_lib.main(["--ckpt", str(workdir), "--data", str(empty)]) == failed
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "no usable clip files" in err[-1]
    assert any("bad.json: field '<root>'" in line for line in err)
