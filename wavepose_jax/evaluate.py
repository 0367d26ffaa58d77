"""Quality of a trained WavePose model: validation loss, feedback metrics and soft-token ablations.

    python -m wavepose_jax.evaluate --ckpt WORKDIR --data DIR [--json OUT] [--max_clips N]
                                    [--step S] [--batch_size B] [--max_new_tokens N] [--base DIR]
    wavepose-eval ...            (the same, installed)

restores the model of the run in WORKDIR (the base model named by the checkpoint's record --
refused if it no longer matches the fingerprint -- plus the trained encoder, bridge and LoRA),
then on every clip of DIR:

* `val_loss`: masked next-token cross-entropy of the clip's LANGUAGE text (per target token);
* greedy feedback generation, grounded on the clip's measurement as every command grounds it
  (`feedback.feedback`: the measured rep count, tempo and reps of each named fault; the
  faults named are the model's), scored against the clip's ground truth:
  - `rep_accuracy`: fraction of clips whose feedback states the true rep count
    (`text.reps_from_text`; truth = the clip's `reps` field, else
    `wave_features.harmonic.oscillation_count`);
  - `fault_precision` / `fault_recall` / `fault_f1`: micro-averaged over clips with labelled
    faults, `text.faults_from_text(feedback)` against the clip's `faults`;
  - `per_fault`: precision / recall / F1 and support of each fault id, over the clips of the
    exercises it applies to;
  - `rule_agreement`: precision / recall / F1 of the text's faults against what the rules of
    `faults.py` measure on the same clip (its own wave analysis);
  - `rep_fault_accuracy`: over the reps of clips with per-rep truth (`rep_faults`), the
    fraction whose faults the text names exactly (`text.rep_faults_from_text`; a clip
    fault without a rep list counts for every rep; only the clip's faults are scored);
  - `rouge_l`: mean ROUGE-L F-measure against LANGUAGE;
  - `checks_passed`: fraction of clips whose text passes every check of `checks.py` against
    the clip's own measurement (rep count, tempo, faults named / measured, the reps a fault is
    named for), and `check_warn_rate`: per check, the fraction of the clips it applied to
    where it warned (`check_metrics`);
  - `ungrounded`: the same checks and rep scores of the model's own texts, before grounding
    (what grounding changes: the model's facts against the measured ones);
* `rules_vs_truth_f1`: the fault F1 of the rules themselves against the labels (a reference:
  what measuring, rather than a learned model, gets on this data);
* `exercise_prior_f1`: the best fault F1 of naming one fixed list of faults per exercise,
  the lists chosen on these very labels (a reference: the most a text can get from the
  exercise's name alone, without seeing the motion; compare the ablations with it);
* the same generation metrics with the soft tokens zeroed (`ablations.zero_soft_tokens`) and
  with each clip's soft tokens swapped for those of the next clip of its batch, a fixed
  permutation (`ablations.shuffled_soft_tokens`). A model that reads the motion loses
  accuracy under both.

`evaluate(model, examples, tokenizer, stop_ids=..., batch_size=..., max_new_tokens=...)` is the
library entry point (train.py calls it at
the end of a run); the run is restored by `run.restore`.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx
from tqdm import tqdm

from wavepose_jax import checks as checks_lib
from wavepose_jax import cli, dataset
from wavepose_jax import run as run_lib
from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.batch import Batch
from wavepose_jax.data.measure import Measurement
from wavepose_jax.feedback import feedback
from wavepose_jax.files import check_output, list_clip_files, write_atomic
from wavepose_jax.sampler import Sampler
from wavepose_jax.training.loss import LossWeights, model_loss_terms

ABLATIONS = ("zero_soft_tokens", "shuffled_soft_tokens")
NUM_SAMPLES = 3  # generated texts included in the result, for a look by eye


# ----------------------------------------------------------------------------- metrics


def rep_accuracy(predicted: Sequence[int | None], true: Sequence[int | None]) -> float | None:
    """Fraction of clips with a known true count whose predicted count equals it (None: none)."""
    pairs = [(p, t) for p, t in zip(predicted, true, strict=True) if t is not None]
    if not pairs:
        return None
    return sum(p == t for p, t in pairs) / len(pairs)


def fault_scores(predicted: Sequence[Sequence[str]], true: Sequence[Sequence[str] | None]
                 ) -> dict[str, float | None]:
    """Micro-averaged fault precision, recall and F1 over clips with labelled faults.

    Counts true/false positives and false negatives of fault ids over all labelled clips. A
    ratio with an empty denominator is 1 when the other count is also empty (nothing to find,
    nothing claimed), else 0.
    """
    tp = fp = fn = n = 0
    for pred, gold in zip(predicted, true, strict=True):
        if gold is None:
            continue
        n += 1
        pred, gold = set(pred), set(gold)
        tp += len(pred & gold)
        fp += len(pred - gold)
        fn += len(gold - pred)
    if n == 0:
        return {"fault_precision": None, "fault_recall": None, "fault_f1": None}
    return dict(zip(("fault_precision", "fault_recall", "fault_f1"), _prf(tp, fp, fn)))


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of counts (an empty ratio is 1 if the other count is 0)."""
    precision = tp / (tp + fp) if tp + fp else float(fn == 0)
    recall = tp / (tp + fn) if tp + fn else float(fp == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def exercise_prior_f1(true: Sequence[Sequence[str] | None],
                      exercises: Sequence[str]) -> float | None:
    """The highest micro fault F1 of naming, for every clip, a fixed list of faults of its
    exercise (one list per exercise, every subset of its faults tried against `true`).

    An upper bound on what a text written from the exercise's name alone can score; None
    without labelled clips.
    """
    counts: dict[str, Counter] = {}  # exercise -> how many labelled clips have each fault
    clips: Counter = Counter()
    for gold, exercise in zip(true, exercises, strict=True):
        if gold is not None:
            clips[exercise] += 1
            counts.setdefault(exercise, Counter()).update(set(gold))
    if not clips:
        return None
    total = sum(sum(c.values()) for c in counts.values())  # tp + fn, whatever is named
    options = []  # per exercise: (tp, fp) of every subset of its faults
    for exercise, n in clips.items():
        ids = sorted({f.id for f in faults_lib.faults_for(exercise)} | set(counts[exercise]))
        options.append({(sum(counts[exercise][f] for f in named),
                         sum(n - counts[exercise][f] for f in named))
                        for k in range(len(ids) + 1)
                        for named in itertools.combinations(ids, k)})
    best = 0.0
    for choice in itertools.product(*options):
        tp, fp = sum(c[0] for c in choice), sum(c[1] for c in choice)
        best = max(best, _prf(tp, fp, total - tp)[2])
    return best


def per_fault_scores(predicted: Sequence[Sequence[str]], true: Sequence[Sequence[str] | None],
                     exercises: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    """Precision, recall, F1 and support (clips that have it) of every fault id, each over the
    labelled clips of the exercises the fault applies to (ratios as in `fault_scores`)."""
    out = {}
    for fault in faults_lib.FAULTS.values():
        rows = [(set(p) & {fault.id}, set(t) & {fault.id})
                for p, t, ex in zip(predicted, true, exercises, strict=True)
                if t is not None and fault.exercise in (ex, faults_lib.ANY_EXERCISE)]
        if not rows:
            continue
        scores = fault_scores([p for p, _ in rows], [t for _, t in rows])
        out[fault.id] = {"precision": scores["fault_precision"], "recall": scores["fault_recall"],
                         "f1": scores["fault_f1"], "support": sum(bool(t) for _, t in rows)}
    return out


def rep_fault_accuracy(texts: Sequence[str], infos: Sequence[dataset.ClipInfo]) -> float | None:
    """Fraction of reps (of clips with per-rep truth) whose per-rep faults the text names
    exactly. Truth per rep is limited to the clip's faults (what its coaching text names)."""
    hits = total = 0
    per_rep = faults_lib.PER_REP_FAULTS
    for text, info in zip(texts, infos, strict=True):
        if info.rep_faults is None or info.faults is None:
            continue
        named = text_lib.rep_faults_from_text(text, len(info.rep_faults), info.exercise)
        scored = set(info.faults) & per_rep
        for said, truth in zip(named, info.rep_faults):
            hits += set(said) & per_rep == set(truth) & scored
            total += 1
    return hits / total if total else None


def rouge_l(predicted: Sequence[str], references: Sequence[str]) -> float | None:
    """Mean ROUGE-L F-measure (stemmed) of predicted texts against references."""
    from rouge_score import rouge_scorer  # Imported lazily: loads nltk.

    if not references:
        return None
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure
              for pred, ref in zip(predicted, references, strict=True)]
    return float(np.mean(scores))


def text_metrics(texts: Sequence[str], infos: Sequence[dataset.ClipInfo]) -> dict[str, Any]:
    """rep_accuracy, fault precision/recall/F1 (micro and per fault), agreement with the rules,
    per-rep fault accuracy and rouge_l of generated texts (module docstring)."""
    reps = [text_lib.reps_from_text(t) for t in texts]
    found = [text_lib.faults_from_text(t, info.exercise) for t, info in zip(texts, infos)]
    agreement = fault_scores(found, [info.rule_faults for info in infos])
    return {
        "rep_accuracy": rep_accuracy(reps, [info.reps for info in infos]),
        **fault_scores(found, [info.faults for info in infos]),
        "per_fault": per_fault_scores(found, [info.faults for info in infos],
                                      [info.exercise for info in infos]),
        "rule_agreement": {k.removeprefix("fault_"): v for k, v in agreement.items()},
        "rep_fault_accuracy": rep_fault_accuracy(texts, infos),
        "rouge_l": rouge_l(texts, [info.language for info in infos]),
    }


def check_metrics(texts: Sequence[str], measurements: Sequence[Measurement]) -> dict[str, Any]:
    """`checks.check_rates` of texts, each checked against its clip's measurement:
    `checks_passed` and `check_warn_rate`."""
    return checks_lib.check_rates([checks_lib.check_feedback(text, m)
                                   for text, m in zip(texts, measurements, strict=True)])


# ----------------------------------------------------------------------------- evaluation


def _loss_sums_fn(model):
    """A jitted (batch -> (CE sum, target tokens)) of `model`, deterministic, over its split state."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def loss_sums(state, batch):
        terms = model_loss_terms(nnx.merge(graphdef, state), batch, LossWeights(),
                                 deterministic=True)
        return terms.ce_sum, terms.num_tokens

    def run(batch: Batch) -> tuple[float, float]:
        ce, n = loss_sums(state, batch)
        return float(ce), float(n)

    return run


def _shift_permutation(n_real: int, batch_size: int) -> np.ndarray:
    """Row i takes the soft tokens of row i+1 (mod n_real); padding rows keep their own."""
    perm = np.arange(batch_size)
    if n_real > 1:
        perm[:n_real] = np.roll(np.arange(n_real), -1)
    return perm


def evaluate(model, examples: dataset.ExampleSource, tokenizer: Any, *,
             stop_ids: Sequence[int], batch_size: int, max_new_tokens: int,
             progress: bool = True) -> dict[str, Any]:
    """Validation loss, feedback metrics and ablations of `model` on `examples`.

    Args:
      model: a `models.wavellm.WaveLLM` (trained encoder, bridge and LoRA).
      examples: the clips (every example is used once, in order).
      tokenizer: the base model's tokenizer.
      stop_ids: token ids that end generation (`hf.stop_ids` of the base; `Run.stop_ids`).
      batch_size: clips per batch (a run's `eval.batch_size`).
      max_new_tokens: generation budget (a run's `eval.max_new_tokens`).
      progress: show a tqdm bar.

    Returns:
      {"n_clips", "val_loss", "rep_accuracy", "fault_precision", "fault_recall", "fault_f1",
       "rouge_l", "n_rep_clips", "n_fault_clips", "checks_passed", "check_warn_rate",
       "ablations": {name: {...}}, "samples": [...]}.
      A metric with no labelled clip is None.
    """
    if len(examples) == 0:
        raise ValueError("no clips to evaluate")
    infos = [examples[i].info for i in range(len(examples))]
    measurements = [examples[i].inputs.measurement for i in range(len(examples))]
    sampler = Sampler(model, tokenizer, stop_ids)
    loss_sums = _loss_sums_fn(model)
    texts = {name: [] for name in ("model", *ABLATIONS)}
    ce_sum = num_tokens = 0.0

    batches = dataset.make_eval_batches(examples, batch_size=batch_size)
    total = dataset.num_eval_batches(examples, batch_size)
    for index, batch in enumerate(tqdm(batches, total=total, desc="evaluate",
                                       disable=not progress, file=sys.stderr)):
        n_real = min(batch_size, len(examples) - index * batch_size)
        ce, n = loss_sums(batch)
        ce_sum, num_tokens = ce_sum + ce, num_tokens + n
        soft, _ = sampler.encode(batch.waves, batch.frame_mask)           # [B, S, D]
        prompts = batch.prompts()[:n_real]
        variants = {"model": soft, "zero_soft_tokens": jnp.zeros_like(soft),
                    "shuffled_soft_tokens": soft[_shift_permutation(n_real, len(soft))]}
        for name, prefix in variants.items():
            texts[name] += sampler.generate(prefix, prompts, max_new_tokens=max_new_tokens).texts

    answers = {name: [feedback(t, m) for t, m in zip(raw, measurements, strict=True)]
               for name, raw in texts.items()}
    said = {name: [a.text for a in answers[name]] for name in answers}
    result = {"n_clips": len(examples),
              "val_loss": ce_sum / num_tokens if num_tokens else None,
              **text_metrics(said["model"], infos),
              "rules_vs_truth_f1": fault_scores([i.rule_faults or [] for i in infos],
                                                [i.faults for i in infos])["fault_f1"],
              "exercise_prior_f1": exercise_prior_f1([i.faults for i in infos],
                                                     [i.exercise for i in infos]),
              "n_rep_clips": sum(i.reps is not None for i in infos),
              "n_fault_clips": sum(i.faults is not None for i in infos),
              **checks_lib.check_rates([a.checks for a in answers["model"]])}
    raw = text_metrics(texts["model"], infos)
    result["ungrounded"] = {**check_metrics(texts["model"], measurements),
                            **{k: raw[k] for k in ("rep_accuracy", "rep_fault_accuracy")}}
    result["ablations"] = {name: text_metrics(said[name], infos) for name in ABLATIONS}
    result["samples"] = [{"video_id": info.video_id, "generated": text, "model_text": model,
                          "reference": info.language}
                         for text, model, info in zip(said["model"][:NUM_SAMPLES],
                                                      texts["model"], infos)]
    return result


COMMAND = cli.Command("python -m wavepose_jax.evaluate", __doc__)
_F = COMMAND.flags
flags.DEFINE_string("ckpt", None, "training run directory (WORKDIR)", flag_values=_F,
                    required=True)
flags.DEFINE_string("data", None, "directory of clip JSON files", flag_values=_F,
                    required=True)
flags.DEFINE_string("json", None, "also write the metrics to this file", flag_values=_F)
flags.DEFINE_integer("max_clips", None, "evaluate the first N clips only", lower_bound=1,
                     flag_values=_F)
flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)", flag_values=_F)
flags.DEFINE_integer("batch_size", None, "clips per batch (default: the run's eval.batch_size)",
                     lower_bound=1, flag_values=_F)
flags.DEFINE_integer("max_new_tokens", None, "generation budget per clip (default: the run's "
                     "eval.max_new_tokens)", lower_bound=1, flag_values=_F)
flags.DEFINE_string("base", None, "base model directory or hub id to use instead of the one "
                    "the checkpoint records (it must match the checkpoint's fingerprint)",
                    flag_values=_F)


def _run(args, _) -> int:
    list_clip_files(args.data)  # a missing directory fails before any loading
    if args.json:
        check_output(args.json)
    run = run_lib.restore(args.ckpt, args.step, args.base)
    source, bad = dataset.load_examples(args.data, run.tokenizer, run.spec.data,
                                        max_clips=args.max_clips)
    result = evaluate(run.model, source, run.tokenizer, stop_ids=run.stop_ids,
                      batch_size=args.batch_size or run.spec.eval.batch_size,
                      max_new_tokens=args.max_new_tokens or run.spec.eval.max_new_tokens)
    result = {"checkpoint": os.path.abspath(args.ckpt), "step": run.step,
              "skipped_files": len(bad), **result}
    text = json.dumps(result, indent=2)
    if args.json:
        write_atomic(args.json, text + "\n")
    print(text)
    return cli.EXIT_SKIPPED if bad else cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see `wavepose_jax.cli`)."""
    return COMMAND.main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
