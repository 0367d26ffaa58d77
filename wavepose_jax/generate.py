"""Batched autoregressive decoding for ``Phi3ForCausalLM``.

One jitted function does everything: prefill of ``[soft prefix | prompt]`` into a fixed-size KV
cache, then a ``lax.while_loop`` that decodes one token per step for the whole batch (greedy or
temperature / top-p sampling) and stops each sequence at its first eos id. Prompt lengths are
bucketed, so prompts of a new length reuse a compiled program.

Padding: prompts may be right- (or left-) padded. Padding slots stay in the cache but are never
attended to, and positions count real tokens only, so every row decodes as it would alone.

LongRoPE: when a sequence's next position reaches ``original_max_position_embeddings`` the
whole cache is recomputed with the long factors, exactly as transformers' Phi-3 generation does.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavepose_jax.models.phi3 import Phi3ForCausalLM


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GenerateOutput:
    tokens: jax.Array  # [B, max_new_tokens] int32, pad_id after a sequence's eos
    lengths: jax.Array  # [B] int32, generated tokens per sequence (eos included)


def bucket_length(n: int) -> int:
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


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sample"))
def generate_core(graphdef, state, input_ids, attention_mask, prefix_embeds, rng, eos_ids, pad_id,
                  temperature, top_p, *, max_new_tokens: int, sample: bool):
    """Jitted decoding over model state from ``nnx.split(model)``.

    Args:
      input_ids: [B, T] int32 (T already bucketed); attention_mask: [B, T] bool.
      prefix_embeds: [B, P, D] soft tokens placed before the prompt, or None.
      rng: PRNG key (used when ``sample``); eos_ids: [E] int32; pad_id, temperature, top_p: scalars.

    Returns:
      GenerateOutput.
    """
    model: Phi3ForCausalLM = nnx.merge(graphdef, state)
    c = model.config
    b, t = input_ids.shape
    n = max_new_tokens
    embeds = model.embed(input_ids)  # [B, T, D]
    mask = attention_mask
    if prefix_embeds is not None:
        embeds = jnp.concatenate([prefix_embeds.astype(embeds.dtype), embeds], axis=1)
        mask = jnp.concatenate([jnp.ones(prefix_embeds.shape[:2], bool), mask], axis=1)
    prefill_len = embeds.shape[1]
    size = prefill_len + n  # cache slots

    # LongRoPE switch point can be reached during this call: keep every slot's input for a recompute.
    recompute = c.rope_scaling is not None and size > c.original_max_position_embeddings
    buffer = None
    if recompute:
        buffer = jnp.zeros((b, size, embeds.shape[-1]), embeds.dtype).at[:, :prefill_len].set(embeds)

    cache = model.init_cache(b, size)
    _, hidden, cache = model(inputs_embeds=embeds, attention_mask=mask, cache=cache,
                             return_hidden=True)  # hidden [B, P+T, D]
    last = jnp.max(jnp.where(mask, jnp.arange(prefill_len), -1), axis=1)  # [B] last real slot
    h_last = jnp.take_along_axis(hidden, jnp.maximum(last, 0)[:, None, None], axis=1)  # [B, 1, D]
    rng, sub = jax.random.split(rng)
    first = _select(model.logits(h_last)[:, 0], sub, temperature, top_p, sample)

    def record(i, tok, tokens, done, lengths):
        tok = jnp.where(done, pad_id, tok)
        is_eos = jnp.any(tok[:, None] == eos_ids[None, :], axis=1)
        lengths = jnp.where(~done & is_eos, i + 1, lengths)
        return tokens.at[:, i].set(tok), done | is_eos, lengths

    def incremental(tok, cache, buffer):
        logits, cache = model(tok[:, None], cache=cache)  # [B, 1, V]
        return logits[:, 0], cache

    def full_recompute(tok, cache, buffer):
        """Re-runs every cached slot (plus this token) from scratch, as transformers does."""
        index = cache.index
        pos = jax.lax.dynamic_update_slice(cache.positions, cache.next_positions()[:, None], (0, index))
        fresh = model.init_cache(b, size)
        _, hidden, new = model(inputs_embeds=buffer, attention_mask=pos >= 0, positions=jnp.maximum(pos, 0),
                               cache=fresh, return_hidden=True)
        h = jax.lax.dynamic_slice_in_dim(hidden, index, 1, axis=1)  # [B, 1, D]
        return model.logits(h)[:, 0], dataclasses.replace(new, index=index + 1)

    def body(carry):
        i, tok, cache, buffer, tokens, done, lengths, rng = carry
        if recompute:
            buffer = jax.lax.dynamic_update_slice(buffer, model.embed(tok[:, None]), (0, cache.index, 0))
            crossing = jnp.any(cache.next_positions() == c.original_max_position_embeddings)
            logits, cache = jax.lax.cond(crossing, full_recompute, incremental, tok, cache, buffer)
        else:
            logits, cache = incremental(tok, cache, buffer)
        rng, sub = jax.random.split(rng)
        tok = _select(logits, sub, temperature, top_p, sample)
        tokens, done, lengths = record(i, tok, tokens, done, lengths)
        return i + 1, tok, cache, buffer, tokens, done, lengths, rng

    def cond(carry):
        i, done = carry[0], carry[5]
        return (i < n) & ~jnp.all(done)

    tokens = jnp.full((b, n), pad_id, jnp.int32)
    done = jnp.zeros((b,), bool)
    lengths = jnp.full((b,), n, jnp.int32)
    tokens, done, lengths = record(0, first, tokens, done, lengths)
    carry = (jnp.ones((), jnp.int32), first, cache, buffer, tokens, done, lengths, rng)
    carry = jax.lax.while_loop(cond, body, carry)
    return GenerateOutput(tokens=carry[4], lengths=carry[6])


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
    tb = bucket_length(t)
    ids = np.pad(ids.astype(np.int32), ((0, 0), (0, tb - t)), constant_values=pad_id)
    mask = np.pad(mask, ((0, 0), (0, tb - t)))
    eos = np.full(max(8, -(-len(eos_ids) // 8) * 8), -1, np.int32)  # padded: no recompiles
    eos[:len(eos_ids)] = list(eos_ids)
    graphdef, state = nnx.split(model)
    return generate_core(
        graphdef, state, jnp.asarray(ids), jnp.asarray(mask), prefix_embeds,
        rng if rng is not None else jax.random.key(0), jnp.asarray(eos),
        jnp.int32(pad_id), jnp.float32(temperature if sample else 1.0), jnp.float32(top_p),
        max_new_tokens=max_new_tokens, sample=sample)
