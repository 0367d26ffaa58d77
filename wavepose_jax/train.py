"""Fine-tune WavePose (motion encoder + bridge + LoRA on a frozen Phi-3) on exercise clips.

    python train.py --config configs/tiny.py
    python train.py --config configs/base.py --config.data.dir=clips/ --workdir runs/base \
        [--config.train.steps=100 ...]

The run directory WORKDIR defaults to runs/<config file name> (runs/tiny for configs/tiny.py,
the run infer.py reads by default). Writes WORKDIR/metrics.jsonl, WORKDIR/tensorboard/,
WORKDIR/checkpoints/ and, at the end, the evaluation of held-out clips in WORKDIR/eval.json. A run resumes from the latest checkpoint
in WORKDIR (parameters, optimizer state, step and data position). A bad config, path or data
directory is reported in one line on stderr with exit status 2 (see `wavepose_jax.cli`).

`--config` takes a config file or the name of a packaged config (`tiny`, `base`); any field
is overridden with `--config.<group>.<field>=value`. Installed, the command is
`wavepose-train --config tiny`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from tqdm import tqdm

from wavepose_jax import cli, dataset, hf
from wavepose_jax import evaluate as evaluate_lib
from wavepose_jax import run as run_lib
from wavepose_jax import sharding as sharding_lib
from wavepose_jax.base_record import base_record_of
from wavepose_jax.data import othergen, synthetic
from wavepose_jax.feedback import feedback
from wavepose_jax.models import wavellm
from wavepose_jax.sampler import Sampler
from wavepose_jax.spec import RunSpec
from wavepose_jax.training import checkpoint as ckpt_lib
from wavepose_jax.training import distributed
from wavepose_jax.training import metrics as metrics_lib
from wavepose_jax.training import state as state_lib
from wavepose_jax.training import step as step_lib
from wavepose_jax.training.loss import LossWeights



def default_workdir(config_file: str) -> str:
    """runs/<name> for configs/<name>.py (an override suffix `:...` is ignored)."""
    name = os.path.splitext(os.path.basename(config_file.split(":")[0]))[0]
    return os.path.join("runs", name or "default")


def _synthetic_dir(root: str, n: int, seed: int, keypoints: bool = True,
                   workers: int = 1) -> str:
    """Generates n synthetic clips with `seed` under root (once; deterministic content).

    Without keypoints the clips carry only the 7 signals derived from them at generation time
    (the same values; smaller files, faster to load).
    """
    kind = "" if keypoints else "-signals"
    out = os.path.join(root, f"synthetic-n{n}-seed{seed}{kind}")
    if not os.path.isdir(out):
        tmp = f"{out}.tmp{os.getpid()}"
        synthetic.write_dataset(tmp, n=n, seed=seed, keypoints=keypoints, workers=workers)
        os.replace(tmp, out)
    return out


def _benchmark_dir(root: str, n: int, seed: int) -> str:
    """Writes n clips of the out-of-distribution benchmark (data/othergen.py) under root, once.

    Evaluation only: `dataset.prepare_dataset` refuses these clips as training data.
    """
    out = os.path.join(root, f"othergen-n{n}-seed{seed}")
    if not os.path.isdir(out):
        tmp = f"{out}.tmp{os.getpid()}"
        othergen.write_dataset(tmp, n=n, seed=seed)
        os.replace(tmp, out)
    return out


class _StopRequest:
    """SIGTERM / SIGINT while training: remembered, so the loop finishes the step in flight,
    saves it and returns; a second signal interrupts at once. With several processes the stop
    is agreed on (any process's signal stops them all at the same step, so the save, a
    collective, happens everywhere)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # asked twice: stop now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def agreed(self) -> bool:
        if jax.process_count() == 1:
            return self.received is not None
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

        flags_ = multihost_utils.process_allgather(np.asarray(self.received is not None))
        if np.any(flags_) and self.received is None:
            self.received = "stop requested by another process"
        return bool(np.any(flags_))

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """One training run: data, model, state, jitted steps, logging and checkpoints."""

    def __init__(self, spec: RunSpec, workdir: str):
        self.spec, self.workdir = spec, workdir
        self.is_main = jax.process_index() == 0
        self.mesh = sharding_lib.make_mesh(spec.mesh.axes())
        self.tokenizer = hf.load_tokenizer(spec.llm.path)
        self.stop_ids = hf.stop_ids(spec.llm.path, self.tokenizer)

        data = spec.data
        data_dir = data.dir or _synthetic_dir(
            os.path.join(workdir, "data"), data.synthetic_n, data.synthetic_seed,
            keypoints=data.synthetic_keypoints, workers=data.synthetic_workers)
        self.train_src, self.val_src, report = dataset.prepare_dataset(
            data_dir, self.tokenizer, data, seed=spec.train.seed)
        self.log(f"data: {data_dir}: {report.summary()}")

        loading = time.perf_counter()
        base = run_lib.load_base(spec.llm, self.mesh)
        model = run_lib.new_model(spec, self.mesh, base.model)
        counts = wavellm.param_counts(model)
        self.log("params: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
                 + f" (loaded in {time.perf_counter() - loading:.1f}s)")
        self._llm_config = model.llm.config
        self._flops_params = counts["base"] + counts["lora"]
        self.num_soft = model.num_soft_tokens
        self.state = state_lib.create_train_state(
            model, spec.train, LossWeights.of(spec.train, data.target_fps), self.mesh)
        self.ckpt = ckpt_lib.Checkpointer(
            workdir, keep=spec.train.keep_checkpoints, config=spec.to_dict(),
            base=base_record_of(model.llm, path=hf.portable(spec.llm.path), files=base.digests))
        self.loader = dataset.make_train_loader(
            self.train_src, batch_size=spec.train.batch_size, seed=spec.train.seed,
            process_index=jax.process_index(), process_count=jax.process_count())
        self.writer = None  # opened by `fit` once the resumed step is known
        self.peak_flops = metrics_lib.peak_flops()
        self._train_step = self._eval_step = None
        self._compiled_lengths: set[int] = set()  # token lengths the train step compiled for
        self._bad_steps = 0  # consecutive steps skipped for a non-finite loss or gradient
        self._skipped_total = 0

    def log(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message, file=sys.stdout)

    # -- steps -----------------------------------------------------------------------------------

    def _global(self, batch):
        return distributed.global_batch(batch, self.mesh)

    def train_step(self, batch, rng):
        batch = self._global(batch)
        if self._train_step is None:
            self._train_step = step_lib.jit_train_step(
                self.state, batch, self.mesh, grad_accum=self.spec.train.grad_accum)
        length, started = batch.tokens.shape[1], time.perf_counter()
        self.state, metrics = self._train_step(self.state, batch, rng)
        if length not in self._compiled_lengths:  # a new bucket: this call compiled the step
            self._compiled_lengths.add(length)
            self.log(f"train step compiled for {batch.tokens.shape[0]} x {length} tokens in "
                     f"{time.perf_counter() - started:.1f}s")
        return metrics, length

    def validate(self) -> dict[str, float]:
        """Token-mean CE over the whole validation split."""
        ce_sum = num_tokens = 0.0
        batches = dataset.make_eval_batches(
            self.val_src, batch_size=self.spec.train.batch_size,
            process_index=jax.process_index(), process_count=jax.process_count())
        for batch in batches:
            batch = self._global(batch)
            if self._eval_step is None:
                self._eval_step = step_lib.jit_eval_step(self.state, batch, self.mesh)
            sums = jax.device_get(self._eval_step(self.state, batch))
            ce_sum += float(sums["ce_sum"])
            num_tokens += float(sums["num_tokens"])
        return {"val_loss": ce_sum / max(num_tokens, 1.0)}

    def samples(self) -> list[dict[str, str]]:
        """Greedy feedback for the first validation clips (single-process runs), grounded on
        their measurement as every command grounds it (`feedback.feedback`)."""
        n = min(self.spec.train.num_eval_samples, len(self.val_src))
        if n == 0:
            return []
        examples = [self.val_src[i] for i in range(n)]
        sampler = Sampler(self.state.model(), self.tokenizer, self.stop_ids)
        soft, _ = sampler.encode(np.stack([e.inputs.waves for e in examples]),
                                 np.stack([e.inputs.frame_mask for e in examples]))
        texts = sampler.generate(soft, [e.inputs.prompt_ids for e in examples],
                                 max_new_tokens=self.spec.eval.max_new_tokens).texts
        return [{"video_id": e.info.video_id,
                 "generated": feedback(text, e.inputs.measurement).text,
                 "reference": e.info.language} for e, text in zip(examples, texts)]

    # -- loop ------------------------------------------------------------------------------------

    def restore(self) -> int:
        """Resumes from the latest checkpoint in the workdir; returns the first step to run."""
        if self.ckpt.latest_step() is None:
            return 0
        items = self.state.checkpoint_items()
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), items)
        restored = self.ckpt.restore(abstract_state=abstract, data_iterator=self.loader)
        self.state = self.state.replace_checkpoint_items(restored.state)
        self.log(f"resumed from {self.ckpt.directory}/{restored.step}")
        return int(restored.step)

    def save(self, step: int, metrics: dict[str, float] | None) -> None:
        """Starts a checkpoint save; a state that is not finite is never written."""
        items = self.state.checkpoint_items()
        finite = jax.tree.reduce(lambda a, b: a & b, jax.tree.map(
            lambda x: jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.floating)
            else jnp.bool_(True), items))
        if not bool(finite):
            raise ValueError(f"step {step}: the trainable state holds non-finite values; not "
                             f"saved (the last checkpoint in {self.ckpt.directory} is intact)")
        self.ckpt.save(step, items, data_iterator=self.loader, metrics=metrics, force=True)

    def _log_window(self, step: int, pending: list, window_start: float, bar: tqdm) -> None:
        """Writes the metrics of the last step and the throughput of the steps since the last log."""
        fetched = jax.device_get([m for m, _ in pending])  # waits for the dispatched steps
        elapsed = time.perf_counter() - window_start
        self._count_skips(step, fetched)
        self.ckpt.check()  # a failed asynchronous save stops the run now, not at the next save
        last = {k: float(v) for k, v in fetched[-1].items()}
        tokens_per_s = float(np.sum([m["tokens"] for m in fetched])) / elapsed
        flops = metrics_lib.model_flops_per_token(self._llm_config, self._flops_params,
                                                  seq_len=self.num_soft + pending[-1][1])
        self.writer.write(step, {
            "loss": last["loss"], "aux_loss": last["aux_loss"],
            "fault_loss": last["fault_loss"], "lr": last["lr"],
            "grad_norm": last["grad_norm"], "tokens_per_s": tokens_per_s,
            "skipped_steps": self._skipped_total,
            "step_time_s": elapsed / len(pending),
            "mfu": metrics_lib.mfu(tokens_per_s, flops, self.peak_flops)})
        postfix = {"loss": f"{last['loss']:.3f}"}
        if self.spec.train.fault_loss_weight > 0:
            postfix["fault_loss"] = f"{last['fault_loss']:.3f}"
        bar.set_postfix(postfix)

    def _count_skips(self, step: int, fetched: list) -> None:
        """Counts skipped (non-finite) steps; too many in a row stop the run with one line."""
        limit = self.spec.train.max_bad_steps
        for m in fetched:
            skipped = float(m["skipped"]) > 0
            self._skipped_total += int(skipped)
            self._bad_steps = self._bad_steps + 1 if skipped else 0
            if limit and self._bad_steps >= limit:
                raise ValueError(
                    f"step {step}: the last {self._bad_steps} steps had a non-finite loss or "
                    f"gradient and were skipped (train.max_bad_steps={limit}); the parameters "
                    f"are still the last finite ones and {self.ckpt.directory} holds no "
                    "non-finite state (lower the learning rate or check the data)")

    def fit(self) -> bool:
        """Trains to `train.steps`; returns False when stopped early by SIGTERM / SIGINT (after
        finishing the step in flight and saving it)."""
        t = self.spec.train
        start = self.restore()
        # Per-window metrics go to metrics.jsonl and TensorBoard (records of steps after the
        # resumed one are dropped: they are about to be written again); the console shows the
        # progress bar (loss, ETA) and one line per validation.
        self.writer = metrics_lib.MetricsWriter(self.workdir, use_console=False,
                                                resume_step=start if start else None)
        rng = jax.random.key(t.seed)
        pending, window_start = [], time.perf_counter()
        bar = tqdm(range(start, t.steps), initial=start, total=t.steps, desc="train",
                   disable=not self.is_main, file=sys.stderr, dynamic_ncols=True)
        with _StopRequest() as stop:
            for step in bar:
                pending.append(self.train_step(next(self.loader), rng))
                done = step + 1
                stopping = stop.agreed()
                if done % t.log_every == 0 or done == t.steps or stopping:
                    self._log_window(done, pending, window_start, bar)
                    pending = []
                if stopping:
                    self.save(done, None)
                    self.ckpt.wait()
                    bar.close()
                    self.log(f"{stop.received}: stopped after step {done}; saved "
                             f"{self.ckpt.directory}/{done}; the same command resumes the run")
                    return False
                val = None
                if (t.eval_every and done % t.eval_every == 0) or done == t.steps:
                    if len(self.val_src):
                        val = self.validate()
                        self.writer.write(done, val)
                        self.log(f"step {done} | val_loss {val['val_loss']:.3f}")
                    if jax.process_count() == 1:
                        for sample in self.samples():
                            self.log(f"  sample {sample['video_id']}: {sample['generated']!r}\n"
                                     f"  reference: {sample['reference']!r}")
                if done % t.ckpt_every == 0 or done == t.steps:
                    self.save(done, val)
                if not pending:  # time the next window from here, validation excluded
                    window_start = time.perf_counter()
        bar.close()
        self.ckpt.wait()
        return True

    def evaluate_heldout(self) -> dict[str, Any] | None:
        """Evaluates the held-out clips (or the validation split) and, when `eval.ood_n` > 0,
        the out-of-distribution benchmark (data/othergen.py, never trained on); writes
        eval.json as {"in_distribution": {...}, "out_of_distribution": {...}}."""
        e = self.spec.eval
        if jax.process_count() > 1:
            self.log("evaluation skipped in a multi-process run: run "
                     f"`python -m wavepose_jax.evaluate --ckpt {self.workdir} --data DIR`")
            return None
        root = os.path.join(self.workdir, "data")
        sets = {"in_distribution": e.heldout_dir or (
            _synthetic_dir(root, e.synthetic_n, e.synthetic_seed) if e.synthetic_n else None)}
        if e.ood_n:
            sets["out_of_distribution"] = _benchmark_dir(root, e.ood_n, e.ood_seed)
        results = {}
        for name, heldout in sets.items():
            if heldout is None:
                source, where = self.val_src, "validation split"
            else:
                try:
                    source, _ = dataset.load_examples(heldout, self.tokenizer, self.spec.data)
                except ValueError as error:  # no usable clip: the trained run stands, say why
                    self.log(f"evaluation of {name} skipped: {error}")
                    continue
                where = heldout
            if len(source) == 0:
                self.log(f"evaluation of {name} skipped: no clips")
                continue
            result = evaluate_lib.evaluate(self.state.model(), source, self.tokenizer,
                                           stop_ids=self.stop_ids,
                                           batch_size=self.spec.eval.batch_size,
                                           max_new_tokens=self.spec.eval.max_new_tokens)
            results[name] = {"data": where, "step": int(self.state.step), **result}
        if not results:
            return None
        text = json.dumps(results, indent=2)
        with open(os.path.join(self.workdir, "eval.json"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(text)
        return results

    def close(self, quiet: bool = False) -> None:
        """Waits for pending saves and closes the logs; `quiet` swallows a save error (another
        error is already on its way to the user)."""
        try:
            self.ckpt.close()
        except Exception:  # pylint: disable=broad-except
            if not quiet:
                raise
        finally:
            if self.writer is not None:
                self.writer.close()


def run(spec: RunSpec, workdir: str) -> dict[str, Any] | None:
    """Trains, then evaluates; returns the evaluation result (None when skipped)."""
    distributed.initialize(spec.distributed)
    os.makedirs(workdir, exist_ok=True)
    trainer = Trainer(spec, workdir)
    try:
        result = trainer.evaluate_heldout() if trainer.fit() else None  # None: stopped, saved
    except BaseException:
        trainer.close(quiet=True)
        raise
    trainer.close()
    return result


# ----------------------------------------------------------------------------- command line

COMMAND = cli.Command("python train.py", __doc__)
_F = COMMAND.flags
cli.define_config_flag(_F)
flags.DEFINE_string("workdir", None, "run directory (logs, checkpoints); default: "
                    "runs/<config name>", flag_values=_F)


def _run(args, _) -> int:
    config_file = cli.config_file(args, example="tiny")
    spec = RunSpec.from_config(args.config)  # loads the file; an error in it is one line too
    workdir = args.workdir or default_workdir(config_file)
    run(spec, workdir)
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see `wavepose_jax.cli`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return COMMAND.main(_run, cli.config_argv(argv))


if __name__ == "__main__":
    sys.exit(main())
