"""Batched autoregressive decoding for ``Phi3ForCausalLM``.

Decoding is two jitted pieces over one fixed-size KV cache: ``prefill`` runs
``[soft prefix | prompt]`` through the model and picks each sequence's first token, then
``decode_chunk`` runs a ``lax.while_loop`` that decodes one token per step for the whole batch
(greedy or temperature / top-p sampling) and stops each sequence at its first eos id.

* ``generate`` compiles both pieces into one program and decodes every token in one call.
* ``generate_stream`` calls ``decode_chunk`` repeatedly, returning to Python every ``chunk``
  tokens; the loop state (``DecodeState``) keeps its shapes, so every chunk reuses one
  compiled program, and the tokens equal those of ``generate``.

Prompt lengths are bucketed, so prompts of a new length reuse a compiled program.

Padding: prompts may be right- (or left-) padded. Padding slots stay in the cache but are never
attended to, and positions count real tokens only, so every row decodes as it would alone.

LongRoPE: when a sequence's next position reaches ``original_max_position_embeddings`` the
whole cache is recomputed with the long factors, exactly as transformers' Phi-3 generation does.
The input embedding of every slot is kept in the decode state for that, so chunked decoding
crosses the switch point like ``generate`` does.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavepose_jax.models.phi3 import Cache, Phi3ForCausalLM


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GenerateOutput:
    tokens: jax.Array  # [B, max_new_tokens] int32, pad_id after a sequence's eos
    lengths: jax.Array  # [B] int32, generated tokens per sequence (eos included)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
    """Everything the decode loop carries from one token to the next (a pytree).

    ``step`` tokens have been decoded; ``token`` is the last of them (the next model input).
    A row is ``done`` once it has decoded an eos id; decoding ends when every row is done or
    ``step == max_new_tokens``.
    """

    cache: Cache  # max_len = prefill length + max_new_tokens
    buffer: jax.Array | None  # [B, S, D] input embedding of every cache slot (LongRoPE) or None
    token: jax.Array  # [B] int32
    step: jax.Array  # [] int32
    done: jax.Array  # [B] bool
    lengths: jax.Array  # [B] int32, decoded tokens up to the eos (max_new_tokens if none yet)
    rng: jax.Array  # PRNG key
    eos_ids: jax.Array  # [E] int32, padded with -1
    pad_id: jax.Array  # [] int32
    temperature: jax.Array  # [] f32
    top_p: jax.Array  # [] f32
    max_new_tokens: int = dataclasses.field(metadata=dict(static=True))
    sample: bool = dataclasses.field(metadata=dict(static=True))

    def finished(self) -> bool:
        """Whether decoding has ended (reads ``step`` and ``done`` from the device)."""
        return int(self.step) >= self.max_new_tokens or bool(np.all(np.asarray(self.done)))


def prompt_bucket(n: int) -> int:
    """Compiled prompt length: a power of two >= 16 up to 512, then a multiple of 512."""
    if n <= 512:
        return max(16, 1 << max(0, n - 1).bit_length())
    return -(-n // 512) * 512


def _select(logits: jax.Array, rng: jax.Array, temperature, top_p, sample: bool) -> jax.Array:
    """Next token [B] from float32 logits [B, V]."""
    if not sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # [B, V] descending
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    keep = jnp.cumsum(probs, axis=-1) - probs < top_p  # always keeps the most likely token
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)  # [B, 1]
    logits = jnp.where(logits >= threshold, logits, -jnp.inf)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _emit(state: DecodeState, logits: jax.Array, **updates) -> tuple[DecodeState, jax.Array]:
    """Picks the token of step ``state.step`` from logits [B, V] and records it.

    Returns the advanced state and the token as output: [B] int32, ``pad_id`` for rows that
    were already done.
    """
    rng, sub = jax.random.split(state.rng)
    tok = _select(logits, sub, state.temperature, state.top_p, state.sample)
    out = jnp.where(state.done, state.pad_id, tok)
    is_eos = jnp.any(out[:, None] == state.eos_ids[None, :], axis=1)
    lengths = jnp.where(~state.done & is_eos, state.step + 1, state.lengths)
    state = dataclasses.replace(state, token=tok, step=state.step + 1, done=state.done | is_eos,
                                lengths=lengths, rng=rng, **updates)
    return state, out


def _prefill(model: Phi3ForCausalLM, input_ids, attention_mask, prefix_embeds, rng, eos_ids,
             pad_id, temperature, top_p, *, max_new_tokens: int,
             sample: bool) -> tuple[DecodeState, jax.Array]:
    """Fills the cache with ``[prefix | prompt]`` and decodes token 0 -> (state, tokens [B])."""
    c = model.config
    b = input_ids.shape[0]
    embeds = model.embed(input_ids)  # [B, T, D]
    mask = attention_mask
    if prefix_embeds is not None:
        embeds = jnp.concatenate([prefix_embeds.astype(embeds.dtype), embeds], axis=1)
        mask = jnp.concatenate([jnp.ones(prefix_embeds.shape[:2], bool), mask], axis=1)
    prefill_len = embeds.shape[1]
    size = prefill_len + max_new_tokens  # cache slots

    # LongRoPE switch point can be reached while decoding: keep every slot's input for a recompute.
    buffer = None
    if c.rope_scaling is not None and size > c.original_max_position_embeddings:
        buffer = jnp.zeros((b, size, embeds.shape[-1]), embeds.dtype).at[:, :prefill_len].set(embeds)

    cache = model.init_cache(b, size)
    out = model(inputs_embeds=embeds, attention_mask=mask, cache=cache, with_logits=False)
    hidden, cache = out.hidden, out.cache  # hidden [B, P+T, D]
    last = jnp.max(jnp.where(mask, jnp.arange(prefill_len), -1), axis=1)  # [B] last real slot
    h_last = jnp.take_along_axis(hidden, jnp.maximum(last, 0)[:, None, None], axis=1)  # [B, 1, D]
    state = DecodeState(
        cache=cache, buffer=buffer, token=jnp.zeros((b,), jnp.int32), step=jnp.zeros((), jnp.int32),
        done=jnp.zeros((b,), bool), lengths=jnp.full((b,), max_new_tokens, jnp.int32), rng=rng,
        eos_ids=eos_ids, pad_id=pad_id, temperature=temperature, top_p=top_p,
        max_new_tokens=max_new_tokens, sample=sample)
    return _emit(state, model.logits(h_last)[:, 0])


def _decode_step(model: Phi3ForCausalLM, state: DecodeState) -> tuple[DecodeState, jax.Array]:
    """Feeds ``state.token`` to the model and decodes the next token -> (state, tokens [B])."""
    c = model.config
    cache, buffer = state.cache, state.buffer

    def incremental(tok, cache, buffer):
        out = model(tok[:, None], cache=cache)  # logits [B, 1, V]
        return out.logits[:, 0], out.cache

    def full_recompute(tok, cache, buffer):
        """Re-runs every cached slot (plus this token) from scratch, as transformers does."""
        index = cache.index
        pos = jax.lax.dynamic_update_slice(cache.positions, cache.next_positions()[:, None], (0, index))
        fresh = model.init_cache(*buffer.shape[:2])
        out = model(inputs_embeds=buffer, attention_mask=pos >= 0,
                    positions=jnp.maximum(pos, 0), cache=fresh, with_logits=False)
        h = jax.lax.dynamic_slice_in_dim(out.hidden, index, 1, axis=1)  # [B, 1, D]
        return model.logits(h)[:, 0], dataclasses.replace(out.cache, index=index + 1)

    if buffer is not None:
        buffer = jax.lax.dynamic_update_slice(buffer, model.embed(state.token[:, None]),
                                              (0, cache.index, 0))
        crossing = jnp.any(cache.next_positions() == c.original_max_position_embeddings)
        logits, cache = jax.lax.cond(crossing, full_recompute, incremental, state.token, cache,
                                     buffer)
    else:
        logits, cache = incremental(state.token, cache, buffer)
    return _emit(state, logits, cache=cache, buffer=buffer)


def _decode(model: Phi3ForCausalLM, state: DecodeState, n: int) -> tuple[DecodeState, jax.Array]:
    """Up to ``n`` decode steps in one ``lax.while_loop`` -> (state, tokens [B, n]).

    Stops early once every row is done or ``max_new_tokens`` tokens are decoded; the slots of
    the steps not run hold ``pad_id``.
    """
    b = state.token.shape[0]
    if n == 0:
        return state, jnp.zeros((b, 0), jnp.int32)
    start = state.step
    stop = jnp.minimum(start + n, state.max_new_tokens)

    def cond(carry):
        state, _ = carry
        return (state.step < stop) & ~jnp.all(state.done)

    def body(carry):
        state, tokens = carry
        i = state.step - start
        state, tok = _decode_step(model, state)
        return state, jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, i))

    tokens = jnp.full((b, n), state.pad_id, jnp.int32)
    return jax.lax.while_loop(cond, body, (state, tokens))


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sample"))
def generate_core(graphdef, params, input_ids, attention_mask, prefix_embeds, rng, eos_ids, pad_id,
                  temperature, top_p, *, max_new_tokens: int, sample: bool) -> GenerateOutput:
    """Prefill and the whole decode loop as one program, over model state from ``nnx.split``.

    Args:
      input_ids: [B, T] int32 (T already bucketed); attention_mask: [B, T] bool.
      prefix_embeds: [B, P, D] soft tokens placed before the prompt, or None.
      rng: PRNG key (used when ``sample``); eos_ids: [E] int32; pad_id, temperature, top_p: scalars.

    Returns:
      GenerateOutput.
    """
    model = nnx.merge(graphdef, params)
    state, first = _prefill(model, input_ids, attention_mask, prefix_embeds, rng, eos_ids, pad_id,
                            temperature, top_p, max_new_tokens=max_new_tokens, sample=sample)
    state, rest = _decode(model, state, max_new_tokens - 1)  # rest [B, N - 1]
    return GenerateOutput(tokens=jnp.concatenate([first[:, None], rest], axis=1),
                          lengths=state.lengths)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sample"))
def prefill_core(graphdef, params, input_ids, attention_mask, prefix_embeds, rng, eos_ids, pad_id,
                 temperature, top_p, *, max_new_tokens: int,
                 sample: bool) -> tuple[DecodeState, jax.Array]:
    """``generate_core``'s prefill alone -> (state, first tokens [B])."""
    return _prefill(nnx.merge(graphdef, params), input_ids, attention_mask, prefix_embeds, rng,
                    eos_ids, pad_id, temperature, top_p, max_new_tokens=max_new_tokens,
                    sample=sample)


@functools.partial(jax.jit, static_argnames=("graphdef", "n"), donate_argnames=("state",))
def decode_chunk_core(graphdef, params, state: DecodeState, *,
                      n: int) -> tuple[DecodeState, jax.Array]:
    """``generate_core``'s decode loop for up to ``n`` steps -> (state, tokens [B, n])."""
    return _decode(nnx.merge(graphdef, params), state, n)


def _core_args(model: Phi3ForCausalLM, input_ids, attention_mask, prefix_embeds, max_new_tokens,
               eos_ids, pad_id, temperature, top_p, rng) -> tuple[tuple, dict]:
    """Validates the user-facing arguments -> (positional, keyword) arguments of the cores."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids: expected [batch, length], got shape {ids.shape}")
    b, t = ids.shape
    mask = np.ones((b, t), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask: shape {mask.shape} differs from input_ids {ids.shape}")
    if prefix_embeds is None and not mask.any(axis=1).all():
        raise ValueError("attention_mask: a sequence has no real token")
    if prefix_embeds is not None and (prefix_embeds.ndim != 3 or prefix_embeds.shape[0] != b):
        raise ValueError(f"prefix_embeds: expected [{b}, P, D], got shape {prefix_embeds.shape}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    sample = temperature > 0
    if sample and rng is None:
        raise ValueError("rng: a PRNG key is required when temperature > 0")
    tb = prompt_bucket(t)
    ids = np.pad(ids.astype(np.int32), ((0, 0), (0, tb - t)), constant_values=pad_id)
    mask = np.pad(mask, ((0, 0), (0, tb - t)))
    eos = np.full(max(8, -(-len(eos_ids) // 8) * 8), -1, np.int32)  # padded: no recompiles
    eos[:len(eos_ids)] = list(eos_ids)
    graphdef, params = nnx.split(model)
    args = (graphdef, params, jnp.asarray(ids), jnp.asarray(mask), prefix_embeds,
            rng if rng is not None else jax.random.key(0), jnp.asarray(eos), jnp.int32(pad_id),
            jnp.float32(temperature if sample else 1.0), jnp.float32(top_p))
    return args, dict(max_new_tokens=max_new_tokens, sample=sample)


def generate(model: Phi3ForCausalLM, input_ids, attention_mask=None, *, prefix_embeds=None,
             max_new_tokens: int = 128, eos_ids=(), pad_id: int = 0, temperature: float = 0.0,
             top_p: float = 1.0, rng=None) -> GenerateOutput:
    """Decodes ``max_new_tokens`` tokens for each prompt.

    Args:
      model: a ``Phi3ForCausalLM``.
      input_ids: [B, T] prompt ids, right-padded; attention_mask: [B, T] (1 = real token).
      prefix_embeds: optional [B, P, D] soft tokens at positions 0..P-1, before each prompt.
      eos_ids: ids that end a sequence (the eos is kept; pad_id fills the rest).
      temperature: 0 for greedy decoding; otherwise sampling with nucleus ``top_p`` using ``rng``.
    """
    args, static = _core_args(model, input_ids, attention_mask, prefix_embeds, max_new_tokens,
                              eos_ids, pad_id, temperature, top_p, rng)
    return generate_core(*args, **static)


def prefill(model: Phi3ForCausalLM, input_ids, attention_mask=None, *, prefix_embeds=None,
            max_new_tokens: int = 128, eos_ids=(), pad_id: int = 0, temperature: float = 0.0,
            top_p: float = 1.0, rng=None) -> tuple[DecodeState, jax.Array]:
    """Starts a chunked decode (arguments as ``generate``) -> (state, first tokens [B]).

    The cache is sized for ``max_new_tokens``; continue with ``decode_chunk``.
    """
    args, static = _core_args(model, input_ids, attention_mask, prefix_embeds, max_new_tokens,
                              eos_ids, pad_id, temperature, top_p, rng)
    return prefill_core(*args, **static)


def decode_chunk(model: Phi3ForCausalLM, state: DecodeState,
                 n: int) -> tuple[DecodeState, jax.Array]:
    """Decodes up to ``n`` more tokens in one jitted loop -> (state, tokens [B, n]).

    Token ``j`` of the result is step ``state.step + j``; slots past the end of decoding (every
    row done or ``max_new_tokens`` reached) and past a row's eos hold ``pad_id``. ``state`` is
    donated: use the returned one. Every call with the same ``n`` and state shapes reuses one
    compiled program.
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    graphdef, params = nnx.split(model)
    return decode_chunk_core(graphdef, params, state, n=n)


def generate_stream(model: Phi3ForCausalLM, input_ids, attention_mask=None, *, chunk: int = 8,
                    prefix_embeds=None, max_new_tokens: int = 128, eos_ids=(), pad_id: int = 0,
                    temperature: float = 0.0, top_p: float = 1.0,
                    rng=None) -> Iterator[np.ndarray]:
    """``generate`` that yields tokens as they are decoded (arguments as ``generate``).

    Yields [B, k] int32 arrays: first the prefill's token (k = 1), then up to ``chunk`` tokens
    per ``decode_chunk`` call, until every row has decoded an eos id or ``max_new_tokens``
    tokens. Concatenated they equal ``generate(...).tokens[:, :K]`` (K tokens yielded in all;
    ``generate`` holds ``pad_id`` past K).
    """
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")
    state, first = prefill(model, input_ids, attention_mask, prefix_embeds=prefix_embeds,
                           max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id,
                           temperature=temperature, top_p=top_p, rng=rng)
    yield np.asarray(first)[:, None]
    step = 1
    while not state.finished():
        state, tokens = decode_chunk(model, state, chunk)
        new_step = int(state.step)
        yield np.asarray(tokens)[:, :new_step - step]
        step = new_step
