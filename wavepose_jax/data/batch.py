"""The training batch: one typed pytree that the loader builds and the model and losses read.

    B examples, T = data.seq_len frames, C = 7 signals, L = bucket length, F = len(FAULTS),
    K = target slots (a bucket length >= every row's target)

The language model reads one sequence per example: [soft tokens | tokens], where `tokens` is
the prompt, then the target text and its closing <|end|>, right-padded to L. `loss_mask`
marks the target; padding examples (added to fill the last batch of an evaluation, or to
keep the shapes of a multi-host batch equal) have `example_weight` 0 and an all-False
`loss_mask`. `target_pos` lists each row's target positions (then 0, a prompt position whose
loss weight is 0), so the language model's head and the cross-entropy run on K positions, not
on all L. Every field is an array, so a `Batch` passes through `jax.jit`, `jax.tree.map`
and `make_array_from_process_local_data` as is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch (numpy on the host, jax.Array on the devices); shapes in the comments."""

    waves: Any           # [B, T, C] f32   normalised signals (`Clip.model_input`)
    frame_mask: Any      # [B, T] bool     real frames
    phase: Any           # [B, T] f32      rep phase in radians (`dataset.rep_phase`)
    phase_mask: Any      # [B, T] bool     frames inside a rep
    faults: Any          # [B, F] f32      multi-hot fault labels, `faults.FAULTS` order
    fault_mask: Any      # [B, F] bool     labelled and applicable to the exercise
    tokens: Any          # [B, L] int32    prompt + target + <|end|>, right-padded
    token_mask: Any      # [B, L] bool     real tokens
    loss_mask: Any       # [B, L] bool     target tokens (the text and its <|end|>)
    prompt_len: Any      # [B] int32       prompt tokens at the start of each row
    example_weight: Any  # [B] f32         1 for a real example, 0 for padding
    target_pos: Any      # [B, K] int32    positions in `tokens` of the targets, then 0

    @property
    def size(self) -> int:
        """B, the number of rows."""
        return int(self.tokens.shape[0])

    def target_weight(self) -> jax.Array:
        """[B, L] f32: example_weight on target tokens, 0 elsewhere (the CE weight)."""
        mask = jnp.asarray(self.loss_mask).astype(bool) & jnp.asarray(self.token_mask).astype(bool)
        return mask.astype(jnp.float32) * jnp.asarray(self.example_weight, jnp.float32)[:, None]

    def real_rows(self) -> jax.Array:
        """[B] bool: rows that are real examples (weight > 0)."""
        return jnp.asarray(self.example_weight, jnp.float32) > 0

    def prompts(self) -> list[np.ndarray]:
        """Each row's prompt ids (host arrays), e.g. to generate from."""
        tokens, lengths = np.asarray(self.tokens), np.asarray(self.prompt_len)
        return [tokens[i, :lengths[i]] for i in range(len(lengths))]

    def replace(self, **changes: Any) -> Batch:
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        """Raises ValueError naming the first field whose shape disagrees with the others."""
        b, t = np.shape(self.frame_mask)
        length = np.shape(self.tokens)[1]
        expected = {"waves": (b, t, np.shape(self.waves)[-1]), "phase": (b, t),
                    "phase_mask": (b, t), "faults": (b, np.shape(self.faults)[-1]),
                    "fault_mask": np.shape(self.faults), "token_mask": (b, length),
                    "loss_mask": (b, length), "prompt_len": (b,), "example_weight": (b,),
                    "target_pos": (b, np.shape(self.target_pos)[-1])}
        for name, shape in expected.items():
            got = tuple(np.shape(getattr(self, name)))
            if got != tuple(shape):
                raise ValueError(f"batch field '{name}': shape {got}, expected {tuple(shape)}")


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Batch))


def token_bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest of `data.buckets` >= n tokens; ValueError if none is."""
    for b in sorted(buckets):
        if b >= n:
            return int(b)
    raise ValueError(f"sequence of {n} tokens is longer than the largest bucket {max(buckets)}")


def target_positions(loss_mask: np.ndarray, slots: int | None = None) -> np.ndarray:
    """[B, L] loss mask -> `Batch.target_pos` [B, K]: each row's target positions, then 0.

    K = `slots`, default the longest row's target count (at least 1); ValueError if a row has
    more targets than K.
    """
    loss_mask = np.asarray(loss_mask, bool)
    counts = loss_mask.sum(axis=1)
    slots = max(int(counts.max(initial=0)), 1) if slots is None else slots
    if counts.max(initial=0) > slots:
        raise ValueError(f"a row has {int(counts.max())} target tokens, more than {slots} slots")
    pos = np.zeros((loss_mask.shape[0], slots), np.int32)  # [B, K]
    for row, mask in enumerate(loss_mask):
        where = np.flatnonzero(mask)
        pos[row, :len(where)] = where
    return pos
