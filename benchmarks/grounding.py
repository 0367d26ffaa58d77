"""How often a run's feedback states the measured facts, by the way its text is produced.

    python benchmarks/grounding.py --ckpt runs/tiny --data runs/tiny/data/othergen-n96-seed2024 \
        [--samples 4] [--temperature 0.7] [--json OUT]

For every clip of DATA, four ways to produce the text, each scored by `checks.py` against the
clip's measurement and by fault F1 against the clip's labels:

* `free`: greedy decoding, the model's words as written;
* `best_of_n`: `--samples` sampled texts (temperature `--temperature`), keeping the one whose
  stated numbers agree best with the measurement (fewest warnings of the rep-count, tempo and
  fault-reps checks; ties: the first);
* `grounded`: greedy decoding, then `feedback.feedback` (what every command does: the rep count,
  the tempo and the rep lists of the named faults set to the measured ones);
* `grounded_zeroed`: the same with the soft tokens zeroed: what the text names without the
  motion, to compare with `exercise_prior_f1` (the best fixed fault list per exercise).

Prints one table row per way (checks passed, tempo and fault-reps warn rates, fault F1,
seconds) and writes them as JSON with --json. Generation runs on this machine's JAX backend.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from wavepose_jax import checks as checks_lib
from wavepose_jax import dataset, evaluate
from wavepose_jax import run as run_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.feedback import feedback
from wavepose_jax.sampler import Sampler

NUMERIC_CHECKS = ("rep_count", "tempo", "fault_reps")


def _numeric_warnings(text, measurement) -> int:
    result = checks_lib.check_feedback(text, measurement)
    return sum(result.status(name) == checks_lib.WARN for name in NUMERIC_CHECKS)


def _scores(texts, examples, seconds) -> dict:
    measurements = [e.inputs.measurement for e in examples]
    rates = evaluate.check_metrics(texts, measurements)
    found = [text_lib.faults_from_text(t, e.info.exercise) for t, e in zip(texts, examples)]
    f1 = evaluate.fault_scores(found, [e.info.faults for e in examples])["fault_f1"]
    warn = {k: v["warn_rate"] for k, v in rates["check_warn_rate"].items()}
    return {"checks_passed": rates["checks_passed"], "tempo_warn": warn["tempo"],
            "fault_reps_warn": warn["fault_reps"], "fault_f1": f1, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default="runs/tiny")
    parser.add_argument("--data", required=True)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--json")
    args = parser.parse_args()

    run = run_lib.restore(args.ckpt)
    source, _ = dataset.load_examples(args.data, run.tokenizer, run.spec.data)
    examples = [source[i] for i in range(len(source))]
    sampler = Sampler(run.model, run.tokenizer, run.stop_ids)
    budget = run.spec.eval.max_new_tokens
    greedy, zeroed, sampled = [], [], [[] for _ in examples]
    times = {"free": 0.0, "zeroed": 0.0, "best_of_n": 0.0}
    key = jax.random.key(0)
    for start in range(0, len(examples), args.batch_size):
        batch = examples[start:start + args.batch_size]
        waves = np.stack([e.inputs.waves for e in batch])
        mask = np.stack([e.inputs.frame_mask for e in batch])
        prompts = [e.inputs.prompt_ids for e in batch]
        soft, _ = sampler.encode(waves, mask)
        t0 = time.perf_counter()
        greedy += sampler.generate(soft, prompts, max_new_tokens=budget).texts
        times["free"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        zeroed += sampler.generate(jnp.zeros_like(soft), prompts, max_new_tokens=budget).texts
        times["zeroed"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(args.samples):
            texts = sampler.generate(soft, prompts, max_new_tokens=budget,
                                     temperature=args.temperature,
                                     rng=jax.random.fold_in(key, start * 1000 + k)).texts
            for i, text in enumerate(texts):
                sampled[start + i].append(text)
        times["best_of_n"] += time.perf_counter() - t0

    best = [min(options, key=lambda t: _numeric_warnings(t, e.inputs.measurement))
            for options, e in zip(sampled, examples)]
    t0 = time.perf_counter()
    grounded = [feedback(t, e.inputs.measurement).text for t, e in zip(greedy, examples)]
    ground_s = time.perf_counter() - t0
    grounded_zeroed = [feedback(t, e.inputs.measurement).text for t, e in zip(zeroed, examples)]
    rows = {
        "free": _scores(greedy, examples, times["free"]),
        f"best_of_{args.samples}": _scores(best, examples, times["best_of_n"]),
        "grounded": _scores(grounded, examples, times["free"] + ground_s),
        "grounded_zeroed": _scores(grounded_zeroed, examples, times["zeroed"] + ground_s),
    }
    prior = evaluate.exercise_prior_f1([e.info.faults for e in examples],
                                       [e.info.exercise for e in examples])
    print(f"{len(examples)} clips of {args.data}; checkpoint {args.ckpt} step {run.step}; "
          f"exercise_prior_f1 {prior:.3f}")
    print("| way | checks passed | tempo warns | fault-reps warns | fault F1 | generation s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k])
                 for k in ("checks_passed", "tempo_warn", "fault_reps_warn", "fault_f1")]
        print(f"| {name} | " + " | ".join(cells) + f" | {r['seconds']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"data": args.data, "ckpt": args.ckpt, "step": run.step,
                       "exercise_prior_f1": prior, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
