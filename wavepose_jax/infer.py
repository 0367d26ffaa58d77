"""Coaching feedback for exercise clips from a trained WavePose checkpoint.

    python infer.py --input CLIP.json|DIR [--ckpt WORKDIR] [--json] [--report FILE.html]
                    [--max_new_tokens N] [--temperature T] [--top_p P] [--seed S]
                    [--batch_size B]

CLIP.json holds the 7 body-region signals or only COCO-17 `keypoints` (+ `confidence`); the
signals, wave features and physics summary are derived as in training. A directory is run
in batches of B clips (one jitted encoder pass and one jitted generation per batch, plus a
one-token generation timing the prefill with --json); a bad file is reported on stderr in
one line (file and field) and skipped.

The model is the run in WORKDIR (default `runs/tiny`, the CPU demo's run): the base LLM named
in its checkpoint -- refused when it no longer matches the checkpoint's fingerprint -- plus
the trained encoder, bridge and LoRA (`run.restore`).

Output: for each clip the summary the model was given (exercise, reps, grade, phases), then
the feedback and the faults it names (a single clip's summary is printed before its
generation starts and its feedback sentence by sentence as it is decoded; the clips of a
directory are printed when their batch ends). The feedback is the model's text with its facts
grounded on the clip's measurement (`feedback.py`): the rep count, the tempo and the reps each
named fault is said for are the measured ones; the model chooses the words and which faults
to name. With --json one JSON object per clip per line instead: video_id, exercise, reps,
quality_grade, summary, feedback, model_text (before grounding), faults, grounding (each
change: rule, said, written), checks (the feedback against the measurement:
`checks.check_feedback`, with `passed` and each check's status and message) and the batch's
timing (prefill_s: encoder, bridge and prompt prefill; decode_s; tokens_per_s; compile_s: JAX
tracing and compilation, excluded from the other times; batch_size).

A clip in which no rep can be measured (no movement, too short, keypoints mostly missing:
`data/measure.py`) gets no feedback: one line on stderr with the reason, with --json also a
JSON object with `nothing_to_coach` (the reason) and `feedback` null, and in the report a row
with the reason; it counts as a skipped input (exit status 1).
--report writes one self-contained HTML page (`report.py`): which run wrote the feedback, an
overview of the clips, and per clip the checks' warnings, the feedback, a per-rep table, the
body at key moments and the key measure over time.

Exit status: 0 every clip answered, 1 some clip files were bad (each reported, the others
answered), 2 the run failed (usage, checkpoint or base-model error).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import flags
from tqdm import tqdm

from wavepose_jax import cli
from wavepose_jax import report as report_lib
from wavepose_jax import run as run_lib
from wavepose_jax.data import faults as faults_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.clip import Clip, clip_error_line, load_clip
from wavepose_jax.data.measure import Measurement, NothingToCoach
from wavepose_jax.feedback import Feedback, feedback
from wavepose_jax.files import check_output, list_clip_files
from wavepose_jax.inputs import ModelInputs, model_inputs, shortened_note
from wavepose_jax.prompt import PhysicsSummary
from wavepose_jax.sampler import Sampler

DEFAULT_CKPT = os.path.join("runs", "tiny")
# JAX's monitoring events of tracing, lowering and compiling a jitted function (top level
# only, so they never overlap); their durations are excluded from the reported timings.
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
STREAM_CHUNK = 8  # tokens decoded between two prints of a single clip's feedback


@dataclasses.dataclass
class Prepared:
    """One validated clip and what the model sees of it (`inputs.model_inputs`)."""

    clip: Clip
    inputs: ModelInputs

    @property
    def summary(self) -> PhysicsSummary:
        return self.inputs.summary

    @property
    def measurement(self) -> Measurement:
        return self.inputs.measurement


@dataclasses.dataclass
class Result:
    """The answer for one clip: its feedback (grounded, checked) and how it was made."""

    prepared: Prepared
    feedback: Feedback
    attention: np.ndarray   # [Q, T_real] bridge attention (mean over heads and layers)
    timing: dict[str, float | int | None]

    def to_json(self) -> dict[str, Any]:
        clip, summary = self.prepared.clip, self.prepared.summary
        return {"video_id": clip.video_id, "exercise": clip.exercise, "reps": summary.reps,
                "quality_grade": summary.grade, "summary": summary.to_dict(),
                **self.feedback.to_json(), "timing": self.timing}


def not_coached_json(clip: Clip, reason: str) -> dict[str, Any]:
    """The --json line of a clip with nothing to coach."""
    return {"video_id": clip.video_id, "source": clip.source, "exercise": clip.exercise,
            "reps": 0, "feedback": None, "nothing_to_coach": reason}


class _CompileClock:
    """Running total of the seconds JAX spends tracing and compiling (while installed)."""

    def __init__(self):
        self.total = 0.0

    def _listen(self, event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            self.total += duration

    def timed(self, fn, *args):
        """(fn(*args) ready on device, its wall seconds minus tracing and compilation).

        Never negative: some JAX versions report nested traces as separate events, so the
        compile events of one call can add up to more than its wall time."""
        t0, c0 = time.perf_counter(), self.total
        out = jax.block_until_ready(fn(*args))
        wall = time.perf_counter() - t0
        return out, max(wall - (self.total - c0), 0.0)

    def __enter__(self) -> _CompileClock:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


class Predictor:
    """A restored run's model, tokenizer and settings, run batch by batch."""

    def __init__(self, run: run_lib.Run):
        self.tokenizer, self.spec = run.tokenizer, run.spec
        self.sampler = Sampler(run.model, run.tokenizer, run.stop_ids)

    @property
    def frame_rate(self) -> float | None:
        """Frame rate of the model input (None: the clip's own)."""
        return self.spec.data.target_fps

    def prepare(self, clip: Clip) -> Prepared:
        """The model inputs of a clip, built exactly as training builds them."""
        return Prepared(clip, model_inputs(clip, self.tokenizer, self.spec.data))

    def run(self, batch: Sequence[Prepared], *, rows: int, max_new_tokens: int,
            temperature: float, top_p: float, rng, split_timing: bool = True,
            on_text: Callable[[str], None] | None = None) -> list[Result]:
        """Feedback for up to `rows` prepared clips (padded to `rows`: one compile per shape).

        With `on_text`, decoding returns to Python every `STREAM_CHUNK` tokens
        (`Sampler.stream`) and `on_text` gets the first clip's model text decoded so far after
        each chunk (the last call's text is that clip's `Feedback.model_text`).

        Timing (seconds; per batch): `encode_s` (encoder and bridge), `generate_s` (prefill
        and decoding), `compile_s` (JAX tracing and compilation, excluded from the others) and,
        with `split_timing`, `prefill_s` (encode plus a one-token generation: the prompt
        prefill), `decode_s` (generate_s minus that one-token generation) and `tokens_per_s`.
        The split costs one more generation program (compile and prefill).
        """
        n = len(batch)
        padded = list(batch) + [batch[-1]] * (rows - n)
        waves = np.stack([p.inputs.waves for p in padded])              # [B, T, 7]
        frame_mask = np.stack([p.inputs.frame_mask for p in padded])    # [B, T]
        prompts = [p.inputs.prompt_ids for p in batch]
        options = dict(temperature=temperature, top_p=top_p, rng=rng)

        def decode(soft, count):
            return self.sampler.generate(soft, prompts, max_new_tokens=count, **options)

        def stream(soft):
            for samples in self.sampler.stream(soft, prompts, max_new_tokens=max_new_tokens,
                                               chunk=STREAM_CHUNK, **options):
                on_text(samples.texts[0])
            return samples

        with _CompileClock() as clock:
            (soft, attention), encode_s = clock.timed(self.sampler.encode, waves, frame_mask)
            if split_timing:
                _, first_s = clock.timed(decode, soft, 1)  # the prompt prefill and one token
            if on_text is None:
                out, generate_s = clock.timed(decode, soft, max_new_tokens)
            else:
                out, generate_s = clock.timed(stream, soft)
        timing = {"encode_s": round(encode_s, 4), "generate_s": round(generate_s, 4)}
        if split_timing:
            decode_s = max(generate_s - first_s, 0.0)
            new_tokens = int(out.lengths.sum()) - n  # each row's first token is the prefill's
            timing.update(prefill_s=round(encode_s + first_s, 4), decode_s=round(decode_s, 4),
                          tokens_per_s=round(new_tokens / decode_s, 1) if decode_s > 0 else None)
        timing.update(compile_s=round(clock.total, 3), batch_size=n)
        attention = np.asarray(attention, np.float32).mean(axis=1)  # [B, Q, T]
        return [Result(prepared=p, feedback=feedback(text, p.measurement),
                       attention=attention[i, :, :int(p.inputs.frame_mask.sum())], timing=timing)
                for i, (p, text) in enumerate(zip(batch, out.texts))]


# ----------------------------------------------------------------------------- command line

COMMAND = cli.Command("infer.py", __doc__)
_F = COMMAND.flags
flags.DEFINE_string("input", None, "clip JSON file, or a directory of them (searched "
                    "recursively)", flag_values=_F, required=True)
flags.DEFINE_string("ckpt", DEFAULT_CKPT, "training run directory", flag_values=_F)
flags.DEFINE_string("base", None, "base model directory or hub id to use instead of the one the "
                    "checkpoint records (it must match the checkpoint's fingerprint)",
                    flag_values=_F)
flags.DEFINE_boolean("json", False, "one JSON object per clip per line", flag_values=_F)
flags.DEFINE_string("report", None, "write an HTML report (FILE.html), one section per clip",
                    flag_values=_F)
flags.DEFINE_integer("max_new_tokens", None, "generation budget per clip (default: the run's "
                     "eval.max_new_tokens)", lower_bound=1, flag_values=_F)
flags.DEFINE_float("temperature", 0.0, "0 for greedy decoding, else the sampling temperature",
                   lower_bound=0.0, flag_values=_F)
flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass, in (0, 1]", flag_values=_F)
flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=_F)
flags.DEFINE_integer("batch_size", 8, "clips per generation batch", lower_bound=1,
                     flag_values=_F)
flags.register_validator("top_p", lambda p: 0 < p <= 1, "--top_p must be in (0, 1]",
                         flag_values=_F)


def _input_files(path: str) -> list[str]:
    """The clip files named by --input; ValueError (one line) if there are none."""
    if os.path.isdir(path):
        files = list_clip_files(path)
        if not files:
            raise ValueError(f"{path}: no *.json clip files in this directory")
        return files
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or directory")
    return [path]


def _print_summary(prepared: Prepared) -> None:
    clip, s = prepared.clip, prepared.summary
    reps = "unknown" if s.reps is None else s.reps
    tempo = "" if s.tempo_sec is None else f" | tempo: {s.tempo_sec:.2f} s/rep"
    phases = ", ".join(f"{k} {d:.2f} s" for k, d in s.phases) or "none"
    print(f"== {clip.video_id} ({clip.source})\n"
          f"exercise: {s.exercise} | reps: {reps} | grade: {s.grade}{tempo}\n"
          f"phases: {phases}", flush=True)


def _print_faults(result: Result) -> None:
    faults = ", ".join(f"{faults_lib.phrase_for(f)} ({f})"
                       for f in result.feedback.faults) or "none named"
    print(f"faults: {faults}\n", flush=True)


def _print_feedback(result: Result) -> None:
    print(f"feedback: {result.feedback.shown}", flush=True)
    _print_faults(result)


class _FeedbackStream:
    """Prints `feedback: ` and then each sentence of the model's text once it is complete,
    grounded on the measurement (grounding works sentence by sentence, so what is printed
    is a prefix of the final feedback)."""

    def __init__(self, measurement: Measurement):
        self.measurement = measurement
        self.printed = ""
        print("feedback: ", end="", flush=True)

    def _show(self, text: str) -> bool:
        if not text.startswith(self.printed):
            return False
        print(text[len(self.printed):], end="", flush=True)
        self.printed = text
        return True

    def __call__(self, text: str) -> None:
        complete = text_lib.sentences(text.rstrip("\ufffd"))[:-1]  # the last may go on
        if complete:
            grounded = self.measurement.ground(" ".join(complete)).text
            self._show(grounded + " " if grounded else "")

    def finish(self, result: Result) -> None:
        """Ends the feedback line (printed again whole if the text was revised)."""
        if self._show(result.feedback.shown):
            print(flush=True)
        else:
            print(f"\nfeedback: {result.feedback.shown}", flush=True)
        _print_faults(result)


def _report_item(result: Result, fps: float | None):
    clip = result.prepared.clip
    return report_lib.ClipReport(
        clip=clip, measurement=result.prepared.measurement, summary=result.prepared.summary,
        feedback=result.feedback, attention=result.attention, attention_fps=fps or clip.fps,
        timing=result.timing)


def _run(args, _) -> int:
    files = _input_files(args.input)
    if args.report:
        check_output(args.report)
    run = run_lib.restore(args.ckpt, base=args.base)  # no checkpoint: says how to make one
    predictor = Predictor(run)
    max_new_tokens = args.max_new_tokens or run.spec.eval.max_new_tokens
    rows = min(args.batch_size, len(files))
    key = jax.random.key(args.seed)
    single = len(files) == 1
    failed, reports, pending, not_coached, shortened = 0, [], [], [], []
    bar = tqdm(total=len(files), desc="infer", unit="clip", file=sys.stderr,
               disable=single)

    def flush(index: int) -> None:
        stream = (_FeedbackStream(pending[0].measurement) if single and not args.json
                  else None)
        results = predictor.run(pending, rows=rows, max_new_tokens=max_new_tokens,
                                temperature=args.temperature, top_p=args.top_p,
                                rng=jax.random.fold_in(key, index), split_timing=args.json,
                                on_text=stream)
        for result in results:
            if args.json:
                print(json.dumps(result.to_json()), flush=True)
            elif stream is not None:
                stream.finish(result)
            else:
                _print_summary(result.prepared)
                _print_feedback(result)
            if args.report:
                reports.append(_report_item(result, predictor.frame_rate))
        bar.update(len(pending))
        pending.clear()

    batches = 0
    for path in files:
        try:
            clip = load_clip(path)
            pending.append(predictor.prepare(clip))
        except NothingToCoach as e:  # a good file, but no feedback to give
            failed += 1
            bar.update(1)
            tqdm.write(f"skipped: {e}", file=sys.stderr)
            not_coached.append((clip, e.reason))
            if args.json:
                tqdm.write(json.dumps(not_coached_json(clip, e.reason)))
            continue
        except Exception as e:  # pylint: disable=broad-except  # one bad file, not the run
            failed += 1
            bar.update(1)
            tqdm.write(f"error: {clip_error_line(path, e)}", file=sys.stderr)
            continue
        if pending[-1].inputs.shortened and not shortened:
            shortened.append(path)
            tqdm.write(shortened_note(pending[-1].inputs, path, run.spec.data) + "; said once",
                       file=sys.stderr)
        if single and not args.json:
            _print_summary(pending[-1])
        if len(pending) == rows:
            flush(batches)
            batches += 1
    if pending:
        flush(batches)
    bar.close()

    if args.report and (reports or not_coached):
        decoding = ("greedy" if args.temperature == 0 else
                    f"sampled: temperature {args.temperature:g}, top_p {args.top_p:g}, "
                    f"seed {args.seed}") + f", at most {max_new_tokens} new tokens"
        report_lib.write_report(
            args.report, reports,
            provenance=report_lib.Provenance.from_run(run, decoding=decoding),
            not_coached=not_coached)
        print(f"report: {args.report} ({len(reports)} clips"
              + (f", {len(not_coached)} with nothing to coach" if not_coached else "") + ")",
              file=sys.stderr)
    if failed:
        parts = [f"{n} of {len(files)} clip files {what}"
                 for n, what in ((failed - len(not_coached), "failed"),
                                 (len(not_coached), "had nothing to coach")) if n]
        print("; ".join(parts), file=sys.stderr)
    return cli.EXIT_SKIPPED if failed else cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see `wavepose_jax.cli`)."""
    return COMMAND.main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
