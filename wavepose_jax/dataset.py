"""Clip files -> training batches: examples, pre-scan, video-level split, grain loaders, collation.

    train, val, report = prepare_dataset(data_dir, tokenizer, spec.data, seed=spec.train.seed)
    loader = make_train_loader(train, spec.data, batch_size=16, seed=0)   # grain iterator
    batch = next(loader)                                      # a data.batch.Batch of numpy arrays
    for batch in make_eval_batches(val, spec.data, batch_size=16): ...  # fixed order, padded

An *example* (`build_example`) is a clip's model inputs (`inputs.model_inputs`, the same as at
inference) plus the training targets: the rep phase per frame (`waves.analyze_reps`) and the
target ids (the LANGUAGE text without the rep lists of its faults, which grounding writes,
followed by `<|end|>`). Batches (`collate`) are right-padded to the smallest of `data.buckets`
that fits, so a jitted step compiles once per bucket, not once per batch.

Determinism: the train/val split hashes each `video_id` with the seed, so a clip's side never
depends on which other files exist and no video is on both sides; the train order is grain's
`IndexSampler` shuffle (a fresh permutation each epoch, a function of the seed only), sharded
over processes with `ShardOptions`. The loader's position is `iterator.get_state()` (grain
JSON), saved and restored by `training.checkpoint.Checkpointer`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
from tqdm import tqdm

from wavepose_jax.data import text as text_lib
from wavepose_jax.data import waves as waves_lib
from wavepose_jax.data.batch import Batch, target_positions, token_bucket
from wavepose_jax.data.clip import Clip, clip_error_line, load_clip, resample
from wavepose_jax.data.faults import ANY_EXERCISE, FAULTS
from wavepose_jax.data.schema import ClipError
from wavepose_jax.files import list_clip_files
from wavepose_jax.inputs import END_TOKEN, ModelInputs, model_inputs, pad_id, shortened_note
from wavepose_jax.inputs import special_id
from wavepose_jax.spec import DataSpec

# Datasets up to this many clips keep every built example in memory after the pre-scan;
# larger ones rebuild examples from their files on access.
MAX_CACHED_EXAMPLES = 50_000


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    """What evaluation needs to know about an example's clip besides the model inputs."""

    source: str
    video_id: str
    exercise: str
    language: str
    faults: tuple[str, ...] | None
    reps: int | None  # true rep count: meta "reps", else harmonic.oscillation_count
    rep_faults: tuple[tuple[str, ...], ...] | None = None  # per-rep truth: meta "rep_faults"
    rule_faults: tuple[str, ...] | None = None  # what faults.detect_faults measures on the clip
    benchmark: str | None = None  # meta "benchmark": an evaluation-only clip, never trained on


def true_rep_count(clip: Clip) -> int | None:
    """The clip's rep count: its `reps` field if present, else the wave-feature count."""
    reps = clip.meta.get("reps")
    if reps is None and clip.wave_features.harmonic is not None:
        reps = clip.wave_features.harmonic.oscillation_count
    if isinstance(reps, bool) or not isinstance(reps, (int, float)):
        return None
    return int(reps)


def true_rep_faults(clip: Clip) -> tuple[tuple[str, ...], ...] | None:
    """The clip's per-rep fault truth (its `rep_faults` field: one list of ids per rep), or None."""
    value = clip.meta.get("rep_faults")
    if not isinstance(value, list) or not all(
            isinstance(r, list) and all(isinstance(f, str) for f in r) for r in value):
        return None
    return tuple(tuple(r) for r in value)


def rep_phase(clip: Clip, seq_len: int, target_fps: float | None, *,
              analysis: waves_lib.RepAnalysis | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rep phase per model-input frame and the mask of frames inside a rep.

    The phase is 0 at a rep's start, pi at its turning point (the bottom of a squat, push-up
    or deadlift; the overhead lockout of a press) and 2 pi at its end, linear in between, and 0
    outside reps. Frames follow `Clip.model_input`: resampled to `target_fps`
    (nearest source frame) and truncated or zero-padded to `seq_len`.

    `analysis` may pass the clip's `waves.analyze_reps` result to skip recomputing it.

    Returns:
      phase: float32 [seq_len] radians.
      phase_mask: bool [seq_len], True inside a rep.
    """
    analysis = analysis or waves_lib.analyze_reps(clip.signals, clip.fps, clip.exercise)
    phase = np.zeros(clip.n_frames, np.float32)   # [T_src]
    inside = np.zeros(clip.n_frames, bool)        # [T_src]
    for rep in analysis.reps:
        start, end = int(rep.start), int(rep.end)
        turn = int(np.clip(rep.bottom if analysis.turn == "bottom" else rep.top, start, end))
        down = np.arange(start, turn + 1)
        up = np.arange(turn, end + 1)
        phase[down] = np.pi * (down - start) / max(turn - start, 1)
        phase[up] = np.pi + np.pi * (up - turn) / max(end - turn, 1)
        inside[start:end + 1] = True
    if target_fps is not None:
        # The frame grid of `Clip.model_input`; phases wrap, so take the nearest source frame.
        src = resample(np.arange(clip.n_frames, dtype=np.float64)[:, None], clip.fps, target_fps,
                       max_frames=seq_len)
        index = np.clip(np.rint(src[:, 0]).astype(np.int64), 0, clip.n_frames - 1)
        phase, inside = phase[index], inside[index]
    n = min(len(phase), seq_len)
    out_phase = np.zeros(seq_len, np.float32)
    out_mask = np.zeros(seq_len, bool)
    out_phase[:n], out_mask[:n] = phase[:n], inside[:n]
    return out_phase, out_mask


def fault_labels(faults: Sequence[str] | None, exercise: str) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot fault labels over the global vocabulary (`faults.FAULTS` order) and their mask.

    Returns:
      labels: float32 [F], 1 for each fault of the clip.
      mask: bool [F], True for the faults that apply to the clip's exercise when the clip is
        labelled (`faults` not None); all False for an unlabelled clip.
    """
    ids = list(FAULTS)
    labels = np.zeros(len(ids), np.float32)
    mask = np.zeros(len(ids), bool)
    if faults is None:
        return labels, mask
    for i, fault in enumerate(FAULTS.values()):
        mask[i] = fault.exercise in (exercise, ANY_EXERCISE)
    for fault_id in faults:
        if fault_id in FAULTS:
            labels[ids.index(fault_id)] = 1.0
            mask[ids.index(fault_id)] = True
    return labels, mask


@dataclasses.dataclass(frozen=True)
class Example:
    """One training clip: the model inputs, the targets, and what evaluation needs to know."""

    inputs: ModelInputs
    phase: np.ndarray       # [T] f32, rep phase (`rep_phase`)
    phase_mask: np.ndarray  # [T] bool
    target_ids: np.ndarray  # [N] int32, the LANGUAGE text (no rep lists) then <|end|>
    info: ClipInfo

    def __len__(self) -> int:
        """Tokens of the text sequence: prompt + target."""
        return len(self.inputs.prompt_ids) + len(self.target_ids)


def build_example(clip: Clip, tokenizer: Any, data: DataSpec) -> Example:
    """One clip -> its `model_inputs`, phase targets and target ids (see the module docstring).

    Raises:
      ClipError: the clip has no LANGUAGE.
    """
    if not clip.language or not clip.language.strip():
        raise ClipError(clip.source, "LANGUAGE", "missing or empty; a training clip needs its "
                                                 "coaching text")
    inputs = model_inputs(clip, tokenizer, data)
    analysis = inputs.measurement.analysis
    phase, phase_mask = rep_phase(clip, data.seq_len, data.target_fps, analysis=analysis)
    budget = min(data.max_target_tokens, max(data.buckets) - len(inputs.prompt_ids))
    # The rep lists of the faults are the measurement's to write (`text.ground_feedback`),
    # not the model's to learn: it learns the words and which faults to name.
    target_text = text_lib.without_rep_lists(clip.language)
    text = tokenizer(target_text, add_special_tokens=False)["input_ids"][:budget - 1]
    target = list(text) + [special_id(tokenizer, END_TOKEN)]
    info = ClipInfo(source=clip.source, video_id=clip.video_id, exercise=clip.exercise,
                    language=clip.language,
                    faults=None if clip.faults is None else tuple(clip.faults),
                    reps=true_rep_count(clip), rep_faults=true_rep_faults(clip),
                    rule_faults=tuple(inputs.measurement.faults),
                    benchmark=clip.meta.get("benchmark"))
    return Example(inputs=inputs, phase=phase, phase_mask=phase_mask,
                   target_ids=np.asarray(target, np.int32), info=info)


# ----------------------------------------------------------------------------- collation


def collate(examples: Sequence[Example], buckets: Sequence[int], pad_id: int,
            weights: Sequence[float] | None = None, min_length: int = 0,
            min_targets: int = 0) -> Batch:
    """Examples -> one `Batch` (data/batch.py), tokens right-padded to a bucket length.

    Args:
      examples: outputs of `build_example`.
      buckets: the padded lengths allowed (`data.buckets`).
      pad_id: token id of the padding.
      weights: example weights (default 1); a weight-0 row also gets an all-False loss mask.
      min_length: pad to the bucket of at least this many tokens (processes of a multi-host
        run pass the longest example of the global batch, so their shapes agree).
      min_targets: the same for the target slots (`target_pos`: the bucket of the longest
        target, at most the token length).
    """
    weights = np.asarray([1.0] * len(examples) if weights is None else weights, np.float32)
    length = token_bucket(max([min_length] + [len(e) for e in examples]), buckets)
    b = len(examples)
    tokens = np.full((b, length), pad_id, np.int32)    # [B, L]
    token_mask = np.zeros((b, length), bool)           # [B, L]
    loss_mask = np.zeros((b, length), bool)            # [B, L]
    prompt_len = np.zeros(b, np.int32)                 # [B]
    slots = min(length, token_bucket(max([min_targets] + [len(e.target_ids) for e in examples]),
                                     buckets))
    labels = [fault_labels(e.info.faults, e.info.exercise) for e in examples]
    for i, e in enumerate(examples):
        p, t = len(e.inputs.prompt_ids), len(e.target_ids)
        tokens[i, :p] = e.inputs.prompt_ids
        tokens[i, p:p + t] = e.target_ids
        token_mask[i, :p + t] = True
        loss_mask[i, p:p + t] = weights[i] > 0
        prompt_len[i] = p
    return Batch(
        waves=np.stack([e.inputs.waves for e in examples]),
        frame_mask=np.stack([e.inputs.frame_mask for e in examples]),
        phase=np.stack([e.phase for e in examples]),
        phase_mask=np.stack([e.phase_mask for e in examples]),
        faults=np.stack([f for f, _ in labels]),
        fault_mask=np.stack([m for _, m in labels]),
        tokens=tokens, token_mask=token_mask, loss_mask=loss_mask, prompt_len=prompt_len,
        example_weight=weights, target_pos=target_positions(loss_mask, slots))


# ----------------------------------------------------------------------------- sources


class ExampleSource:
    """A grain random-access data source of examples (cached, or rebuilt from the files)."""

    def __init__(self, paths: Sequence[str], tokenizer: Any, data: DataSpec,
                 examples: Sequence[Example] | None = None):
        self.paths = list(paths)
        self.tokenizer = tokenizer
        self.data = data
        self._examples = None if examples is None else list(examples)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def cached(self) -> bool:
        return self._examples is not None

    def __getitem__(self, index: int) -> Example:
        if self._examples is not None:
            return self._examples[index]
        return build_example(load_clip(self.paths[index]), self.tokenizer, self.data)

    def __repr__(self) -> str:
        return f"ExampleSource({len(self)} clips, cached={self._examples is not None})"


@dataclasses.dataclass
class DatasetReport:
    """Outcome of the pre-scan and split."""

    n_files: int
    bad: list[str]        # one "path: field 'x': problem" line per unusable file
    n_train: int
    n_val: int
    n_train_videos: int
    n_val_videos: int

    def summary(self) -> str:
        return (f"{self.n_files} clip files: {self.n_train} train ({self.n_train_videos} videos), "
                f"{self.n_val} val ({self.n_val_videos} videos), {len(self.bad)} skipped")


def scan_clips(paths: Sequence[str], tokenizer: Any, data: DataSpec
               ) -> tuple[list[str], list[Example], list[str]]:
    """Validates and builds every clip; prints one stderr line per unusable file and a count.

    Returns:
      (good paths, their examples, one error line per bad file).
    """
    good, examples, bad = [], [], []
    for path in tqdm(paths, desc="scan clips", disable=len(paths) < 200, file=sys.stderr):
        try:
            examples.append(build_example(load_clip(path), tokenizer, data))
            good.append(path)
        except Exception as e:  # pylint: disable=broad-except  # one bad file, not the scan
            bad.append(clip_error_line(path, e))
            print(f"skipping {bad[-1]}", file=sys.stderr)
    if bad:
        print(f"skipped {len(bad)} of {len(paths)} clip files", file=sys.stderr)
    shortened = [(e, path) for e, path in zip(examples, good) if e.inputs.shortened]
    if shortened:
        print(shortened_note(shortened[0][0].inputs, shortened[0][1], data)
              + f"; {len(shortened)} of {len(good)} clips", file=sys.stderr)
    return good, examples, bad


def load_examples(data_dir: str | os.PathLike, tokenizer: Any, data: DataSpec, *,
                  max_clips: int | None = None) -> tuple[ExampleSource, list[str]]:
    """Every usable clip under `data_dir` (the first `max_clips` files by path), in path order,
    and one error line per bad file (each also reported on stderr and skipped).

    Raises:
      FileNotFoundError: `data_dir` is not a directory.
      ValueError: no usable clip file.
    """
    paths = list_clip_files(data_dir)[:max_clips]
    good, examples, bad = scan_clips(paths, tokenizer, data)
    if not good:
        raise ValueError(f"{os.fspath(data_dir)}: no usable clip files "
                         f"({len(paths)} found, {len(bad)} unusable)")
    return ExampleSource(good, tokenizer, data, examples), bad


def _video_hash(video_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_by_video_id(paths: Sequence[str], val_fraction: float, seed: int,
                      video_ids: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """Train/val indices into `paths`, whole videos on one side.

    A video goes to val when the hash of (seed, video_id) falls below `val_fraction`, so its
    side is independent of the other files. When that leaves val empty although
    `val_fraction > 0` and there are at least two videos, the lowest-hash video goes to val.

    Args:
      paths: clip files.
      val_fraction: target fraction of videos in val, in [0, 1).
      seed: split seed.
      video_ids: the files' video ids (read with `load_clip` when None).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    if video_ids is None:
        video_ids = [load_clip(p).video_id for p in paths]
    hashes = {v: _video_hash(v, seed) for v in set(video_ids)}
    val_videos = {v for v, h in hashes.items() if h < val_fraction}
    if not val_videos and val_fraction > 0 and len(hashes) >= 2:
        val_videos = {min(hashes, key=hashes.get)}
    train = [i for i, v in enumerate(video_ids) if v not in val_videos]
    val = [i for i, v in enumerate(video_ids) if v in val_videos]
    return train, val


def prepare_dataset(data_dir: str | os.PathLike, tokenizer: Any, data: DataSpec,
                    *, seed: int, max_clips: int | None = None
                    ) -> tuple[ExampleSource, ExampleSource, DatasetReport]:
    """Pre-scans `data_dir`, skips bad files, splits by video id.

    Args:
      data_dir: directory of clip JSON files (searched recursively).
      tokenizer: HF tokenizer of the base model (chat template and `<|end|>`).
      data: the run's data spec (`val_fraction`, what the model sees).
      seed: the split's seed (a run's `train.seed`).
      max_clips: use only the first `max_clips` files (sorted by path).

    Returns:
      (train source, val source, report). Raises ValueError if no usable clip remains.
    """
    paths = list_clip_files(data_dir)[:max_clips]
    good, examples, bad = scan_clips(paths, tokenizer, data)
    # Benchmark clips (e.g. data/othergen.py's) are for evaluation only, never training data.
    held_out = {i for i, e in enumerate(examples) if e.info.benchmark is not None}
    for i in sorted(held_out):
        line = (f"{good[i]}: field 'benchmark': an evaluation-only clip "
                f"({examples[i].info.benchmark}); never used for training")
        print(f"skipping {line}", file=sys.stderr)
        bad.append(line)
    good = [p for i, p in enumerate(good) if i not in held_out]
    examples = [e for i, e in enumerate(examples) if i not in held_out]
    if not good:
        raise ValueError(f"{os.fspath(data_dir)}: no usable clip files "
                         f"({len(paths)} found, {len(bad)} unusable)")
    video_ids = [e.info.video_id for e in examples]
    train_idx, val_idx = split_by_video_id(good, data.val_fraction, seed, video_ids)
    cache = len(good) <= MAX_CACHED_EXAMPLES

    def source(idx: list[int]) -> ExampleSource:
        return ExampleSource([good[i] for i in idx], tokenizer, data,
                             [examples[i] for i in idx] if cache else None)

    report = DatasetReport(
        n_files=len(paths), bad=bad, n_train=len(train_idx), n_val=len(val_idx),
        n_train_videos=len({video_ids[i] for i in train_idx}),
        n_val_videos=len({video_ids[i] for i in val_idx}))
    return source(train_idx), source(val_idx), report


# ----------------------------------------------------------------------------- loaders


def per_process_batch_size(batch_size: int, process_count: int) -> int:
    """`train.batch_size` (global) split evenly over processes."""
    if batch_size % process_count:
        raise ValueError(f"train.batch_size={batch_size} is not divisible by "
                         f"{process_count} processes")
    return batch_size // process_count


def make_train_loader(source: ExampleSource, *, batch_size: int, seed: int,
                      process_index: int = 0, process_count: int = 1
                      ) -> grain.DataLoaderIterator:
    """An endless iterator of training batches (reshuffled each epoch), with get/set_state.

    Each process reads its own shard of the examples and yields `batch_size / process_count`
    of them per step; batches never straddle a partial last one (drop_remainder). A process
    cannot see the other shards' lengths, so with several processes every batch is padded to
    the largest bucket (all processes must contribute equal shapes to a global batch).
    """
    total, batch_size = batch_size, per_process_batch_size(batch_size, process_count)
    shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
    if len(source) < total:
        raise ValueError(f"{len(source)} training clips are fewer than one batch "
                         f"(train.batch_size={total})")
    sampler = grain.samplers.IndexSampler(len(source), shard_options=shard, shuffle=True,
                                          num_epochs=None, seed=int(seed))
    token_pad = pad_id(source.tokenizer)
    buckets = source.data.buckets
    min_length = max(buckets) if process_count > 1 else 0
    # In-memory examples are read on the main thread (no GIL contention); examples rebuilt
    # from files are read by a few threads ahead of the step.
    read = (grain.ReadOptions(num_threads=0, prefetch_buffer_size=batch_size) if source.cached
            else grain.ReadOptions(num_threads=4, prefetch_buffer_size=4 * batch_size))
    loader = grain.DataLoader(
        data_source=source, sampler=sampler, worker_count=0, read_options=read,
        operations=[grain.transforms.Batch(
            batch_size, drop_remainder=True,
            batch_fn=lambda examples: collate(examples, buckets, token_pad,
                                              min_length=min_length, min_targets=min_length))])
    return iter(loader)


def make_eval_batches(source: ExampleSource, *, batch_size: int, process_index: int = 0,
                      process_count: int = 1) -> Iterator[Batch]:
    """Batches of every example once, in source order (`batch_size` per global batch).

    The last batch is filled with copies of the first example at example_weight 0 (and an
    all-False loss mask). With several processes each yields its slice of every global batch,
    padded to the bucket of the global batch's longest example.
    """
    local = batch_size // process_count
    token_pad = pad_id(source.tokenizer)
    for start in range(0, len(source), batch_size):
        rows = list(range(start, min(start + batch_size, len(source))))
        longest = max(len(source[i]) for i in rows)
        targets = max(len(source[i].target_ids) for i in rows)
        rows = rows[process_index * local:(process_index + 1) * local]
        n_real = len(rows)
        examples = [source[i] for i in rows] + [source[0]] * (local - n_real)
        weights = [1.0] * n_real + [0.0] * (local - n_real)
        yield collate(examples, source.data.buckets, token_pad, weights, min_length=longest,
                      min_targets=targets)


def num_eval_batches(source: ExampleSource, batch_size: int) -> int:
    return math.ceil(len(source) / batch_size)
