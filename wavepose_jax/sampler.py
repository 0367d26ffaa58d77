"""From motion to feedback text: a WaveLLM with its tokenizer, stop ids and decoding.

    sampler = Sampler(model, tokenizer, stop_ids)
    soft, attention = sampler.encode(waves, frame_mask)          # [B, S, D], [B, L, S, T]
    texts = sampler.generate(soft, prompts, max_new_tokens=96).texts
    for texts_so_far in sampler.stream(soft, prompts, max_new_tokens=96): ...

The prompts are token ids (`inputs.model_inputs(...).prompt_ids`); the soft tokens are the
prefix every prompt follows. They come from the caller so that one encoder pass can serve
several decodings (evaluation's ablations zero or shuffle them). Decoding is
`generate.generate` (one jitted program) or `generate.generate_stream` (the same loop,
returning to Python every `chunk` tokens), greedy unless `temperature > 0`. LoRA dropout is
always off here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from wavepose_jax import generate as generate_lib
from wavepose_jax.inputs import pad_id

@dataclasses.dataclass(frozen=True)
class Samples:
    """Decoded feedback of a batch (rows past the real prompts dropped)."""

    texts: list[str]
    tokens: np.ndarray   # [N, K] int32, pad_id after each row's stop token
    lengths: np.ndarray  # [N] int32, tokens up to and including the stop token


class Sampler:
    """Generates feedback text for prompts that follow soft-token prefixes."""

    def __init__(self, model: Any, tokenizer: Any, stop_ids: Sequence[int]):
        """model: a `models.wavellm.WaveLLM`; stop_ids: token ids that end generation (the base's
        generation config, `hf.stop_ids`; `run.Run.stop_ids` for a restored run)."""
        if not stop_ids:
            raise ValueError("Sampler needs at least one stop token id")
        self.tokenizer = tokenizer
        self.stop_ids = tuple(int(i) for i in stop_ids)
        self.pad_id = pad_id(tokenizer)
        self.llm = nnx.view(model.llm, deterministic=True, raise_if_not_found=False)
        graphdef, self._state = nnx.split(model)

        @jax.jit
        def encode(state, waves, frame_mask):
            return nnx.merge(graphdef, state).soft_tokens(waves, frame_mask,
                                                          return_attention=True)

        self._encode = encode

    def encode(self, waves: Any, frame_mask: Any) -> tuple[jax.Array, jax.Array]:
        """waves [B, T, 7], frame_mask [B, T] -> soft tokens [B, S, D] and the bridge attention
        [B, layers, S, T] (one jitted program per shape)."""
        return self._encode(self._state, waves, frame_mask)

    def prompt_matrix(self, prompts: Sequence[np.ndarray], rows: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Prompt ids right-padded into [rows, P] ids and mask (extra rows repeat the last)."""
        rows = len(prompts) if rows is None else rows
        padded = list(prompts) + [prompts[-1]] * (rows - len(prompts))
        width = max(len(p) for p in padded)
        ids = np.full((rows, width), self.pad_id, np.int32)  # [B, P]
        mask = np.zeros((rows, width), bool)                 # [B, P]
        for i, p in enumerate(padded):
            ids[i, :len(p)], mask[i, :len(p)] = p, True
        return ids, mask

    def _decode_args(self, soft, prompts, max_new_tokens, temperature, top_p, rng) -> dict:
        ids, mask = self.prompt_matrix(prompts, rows=soft.shape[0])
        return dict(input_ids=ids, attention_mask=mask, prefix_embeds=soft,
                    max_new_tokens=max_new_tokens, eos_ids=self.stop_ids, pad_id=self.pad_id,
                    temperature=temperature, top_p=top_p, rng=rng)

    def text(self, ids: Sequence[int]) -> str:
        """Decoded text of token ids (special tokens dropped, outer whitespace stripped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def length(self, ids: np.ndarray) -> int:
        """Tokens of a decoded row [K] up to and including its first stop token."""
        hits = np.flatnonzero(np.isin(ids, self.stop_ids))
        return int(hits[0]) + 1 if hits.size else len(ids)

    def _samples(self, tokens: np.ndarray, lengths: np.ndarray, n: int) -> Samples:
        return Samples(texts=[self.text(tokens[i, :lengths[i]]) for i in range(n)],
                       tokens=tokens[:n], lengths=lengths[:n])

    def generate(self, soft: jax.Array, prompts: Sequence[np.ndarray], *, max_new_tokens: int,
                 temperature: float = 0.0, top_p: float = 1.0, rng: Any = None) -> Samples:
        """Feedback for each prompt after its row of soft tokens [B, S, D] (B >= len(prompts);
        the rows past the prompts are padding and dropped)."""
        out = generate_lib.generate(
            self.llm, **self._decode_args(soft, prompts, max_new_tokens, temperature, top_p, rng))
        return self._samples(np.asarray(out.tokens), np.asarray(out.lengths), len(prompts))

    def stream(self, soft: jax.Array, prompts: Sequence[np.ndarray], *, max_new_tokens: int,
               temperature: float = 0.0, top_p: float = 1.0, rng: Any = None,
               chunk: int = 8) -> Iterator[Samples]:
        """`generate` that yields the feedback decoded so far every `chunk` tokens; the last
        value yielded is the complete result (equal to `generate`'s).

        Text grows incrementally: each row's new tokens go through a `tokenizers`
        `DecodeStream`, so a chunk costs its own tokens, not a decode of the whole text.
        """
        rows = len(prompts)
        text = _IncrementalText(self.tokenizer, rows)
        lengths = np.zeros(rows, np.int32)
        done = np.zeros(rows, bool)
        pieces = []
        for piece in generate_lib.generate_stream(
                self.llm, chunk=chunk,
                **self._decode_args(soft, prompts, max_new_tokens, temperature, top_p, rng)):
            piece = np.asarray(piece)  # [B, k]
            pieces.append(piece)
            for r in range(rows):
                for token in piece[r]:
                    if done[r]:
                        break
                    lengths[r] += 1
                    done[r] = int(token) in self.stop_ids
                    if not done[r]:
                        text.push(r, int(token))
            yield Samples(texts=text.texts(), tokens=np.concatenate(pieces, axis=1)[:rows],
                          lengths=lengths.copy())


class _IncrementalText:
    """Per-row text built token by token (`tokenizers.decoders.DecodeStream`, special tokens
    skipped); a tokenizer without a fast backend falls back to decoding the row's ids."""

    def __init__(self, tokenizer: Any, rows: int):
        self._tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._ids = [[] for _ in range(rows)]
        self._text = [""] * rows
        self._streams = None
        if self._backend is not None:
            from tokenizers.decoders import DecodeStream  # pylint: disable=import-outside-toplevel

            self._streams = [DecodeStream(skip_special_tokens=True) for _ in range(rows)]

    def push(self, row: int, token: int) -> None:
        if self._streams is None:
            self._ids[row].append(token)
            return
        piece = self._streams[row].step(self._backend, token)
        if piece:
            self._text[row] += piece

    def texts(self) -> list[str]:
        if self._streams is None:
            return [self._tokenizer.decode(ids, skip_special_tokens=True).strip()
                    for ids in self._ids]
        return [t.strip() for t in self._text]
