"""KV-cache decoding against transformers' generate, soft-token prefixes, eos and sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from wavepose_jax import hf
from wavepose_jax.generate import (prompt_bucket, decode_chunk, decode_chunk_core, generate,
                                   generate_core, generate_stream, prefill)

pytestmark = pytest.mark.reference  # against transformers' PyTorch Phi-3

NEW = 32
LENGTHS = (5, 11, 17)  # with 32 new tokens every row crosses original_max_position_embeddings=32


@pytest.fixture(scope="module")
def setup(hf_checkpoint):
    torch_model, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 96, n) for n in LENGTHS]
    ids = np.zeros((len(prompts), max(LENGTHS)), np.int32)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, :len(p)], mask[i, :len(p)] = p, 1
    return torch_model, model, prompts, ids, mask


def _hf_greedy(torch_model, prompt, n):
    with torch.no_grad():
        out = torch_model.generate(torch.as_tensor(prompt)[None], max_new_tokens=n, min_new_tokens=n,
                                   do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].numpy()


def test_greedy_matches_transformers(setup):
    torch_model, model, prompts, ids, mask = setup
    out = generate(model, ids, mask, max_new_tokens=NEW)
    assert out.tokens.shape == (3, NEW) and out.tokens.dtype == jnp.int32
    np.testing.assert_array_equal(out.lengths, [NEW] * 3)
    for i, prompt in enumerate(prompts):
        np.testing.assert_array_equal(np.asarray(out.tokens[i]), _hf_greedy(torch_model, prompt, NEW))

    # Left-padded input decodes the same; a new prompt length within the bucket does not recompile.
    left_ids, left_mask = np.zeros((3, 20), np.int32), np.zeros((3, 20), np.int32)
    for i, p in enumerate(prompts):
        left_ids[i, -len(p):], left_mask[i, -len(p):] = p, 1
    compiled = generate_core._cache_size()
    left = generate(model, left_ids, left_mask, max_new_tokens=NEW)
    np.testing.assert_array_equal(left.tokens, out.tokens)
    assert generate_core._cache_size() == compiled


def test_prefix_embeds_equal_token_ids(setup):
    _, model, _, ids, mask = setup
    ref = generate(model, ids, mask, max_new_tokens=8)
    prefix = model.embed(jnp.asarray(ids[:, :4]))  # the first 4 prompt tokens as soft tokens
    out = generate(model, ids[:, 4:], mask[:, 4:], prefix_embeds=prefix, max_new_tokens=8)
    np.testing.assert_array_equal(out.tokens, ref.tokens)


def test_eos_stops_each_sequence(setup):
    _, model, _, ids, mask = setup
    ref = np.asarray(generate(model, ids, mask, max_new_tokens=8).tokens)
    eos = int(ref[0, 2])  # row 0 stops at step 2
    out = generate(model, ids, mask, max_new_tokens=8, eos_ids=(eos, 95), pad_id=-1)
    tokens = np.asarray(out.tokens)
    for row, length in zip(range(3), np.asarray(out.lengths)):
        hits = np.flatnonzero(np.isin(ref[row], (eos, 95)))
        expected = hits[0] + 1 if hits.size else 8
        assert length == expected
        np.testing.assert_array_equal(tokens[row, :length], ref[row, :length])
        assert (tokens[row, length:] == -1).all()
    assert out.lengths[0] == 3


def test_sampling(setup):
    _, model, _, ids, mask = setup
    greedy = generate(model, ids, mask, max_new_tokens=8).tokens
    nucleus = generate(model, ids, mask, max_new_tokens=8, temperature=1.0, top_p=1e-6, rng=jax.random.key(0))
    np.testing.assert_array_equal(nucleus.tokens, greedy)  # top-p this small keeps only the argmax
    a = generate(model, ids, mask, max_new_tokens=8, temperature=2.0, rng=jax.random.key(1)).tokens
    b = generate(model, ids, mask, max_new_tokens=8, temperature=2.0, rng=jax.random.key(1)).tokens
    c = generate(model, ids, mask, max_new_tokens=8, temperature=2.0, rng=jax.random.key(2)).tokens
    np.testing.assert_array_equal(a, b)
    assert (np.asarray(a) != np.asarray(c)).any() and (np.asarray(a) != np.asarray(greedy)).any()
    with pytest.raises(ValueError, match="rng"):
        generate(model, ids, mask, temperature=1.0)


def test_stream_equals_generate_with_eos(setup):
    _, model, _, ids, mask = setup
    ids, mask = ids[1:], mask[1:]  # two prompts of different lengths (11 and 17)
    ref = np.asarray(generate(model, ids, mask, max_new_tokens=NEW).tokens)
    eos = int(ref[0, 6])  # row 0 stops at step 6 (or earlier), row 1 at its first `eos` if any
    out = generate(model, ids, mask, max_new_tokens=NEW, eos_ids=(eos,), pad_id=-1)
    lengths = np.asarray(out.lengths)
    assert lengths[0] <= 7 and lengths[0] < lengths[1] < NEW  # both rows stop early

    compiled = decode_chunk_core._cache_size()
    pieces = list(generate_stream(model, ids, mask, chunk=3, max_new_tokens=NEW, eos_ids=(eos,),
                                  pad_id=-1))
    assert [p.shape[1] for p in pieces[:2]] == [1, 3] and all(p.shape[1] >= 1 for p in pieces)
    streamed = np.concatenate(pieces, axis=1)
    assert streamed.shape[1] == lengths.max()  # stops once every row has hit eos or the budget
    np.testing.assert_array_equal(streamed, np.asarray(out.tokens)[:, :streamed.shape[1]])
    assert (np.asarray(out.tokens)[:, streamed.shape[1]:] == -1).all()
    assert decode_chunk_core._cache_size() == compiled + 1  # every chunk ran one program

    # Without eos every row runs to the budget, across the LongRoPE switch point (position 32).
    pieces = list(generate_stream(model, ids, mask, chunk=3, max_new_tokens=NEW))
    assert sum(p.shape[1] for p in pieces) == NEW and pieces[-1].shape[1] == (NEW - 1) % 3
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), ref)
    assert decode_chunk_core._cache_size() == compiled + 1


def test_prefill_and_decode_chunk(setup):
    _, model, _, ids, mask = setup
    ref = generate(model, ids, mask, max_new_tokens=8, temperature=2.0, rng=jax.random.key(3))
    state, first = prefill(model, ids, mask, max_new_tokens=8, temperature=2.0,
                           rng=jax.random.key(3))
    state, rest = decode_chunk(model, state, 4)
    state, tail = decode_chunk(model, state, 4)  # only 3 steps left
    assert int(state.step) == 8 and state.finished()
    np.testing.assert_array_equal(np.concatenate([first[:, None], rest, tail[:, :3]], axis=1),
                                  ref.tokens)  # sampling draws the same keys as generate
    assert (np.asarray(tail[:, 3]) == 0).all()
    np.testing.assert_array_equal(state.lengths, ref.lengths)
    with pytest.raises(ValueError, match="chunk"):
        next(generate_stream(model, ids, mask, chunk=0))


def test_bucket_length():
    assert [prompt_bucket(n) for n in (1, 16, 17, 100, 512, 513, 1500)] == [16, 16, 32, 128, 512, 1024, 1536]


def test_scanned_stack_decodes_like_transformers(setup, hf_checkpoint):
    """The scanned stack's stacked cache [L, B*K, S, H]: greedy tokens equal transformers'
    across the LongRoPE switch (full recompute), and streaming equals one-call decoding."""
    torch_model, _, prompts, ids, mask = setup
    _, path = hf_checkpoint("longrope_gqa", rope_scaling="longrope")
    model = hf.load_pretrained(path, dtype=jnp.float32, scan_layers=True)
    out = generate(model, ids, mask, max_new_tokens=NEW)
    for i, prompt in enumerate(prompts):
        np.testing.assert_array_equal(np.asarray(out.tokens[i]), _hf_greedy(torch_model, prompt, NEW))
    streamed = np.concatenate(list(generate_stream(model, ids, mask, chunk=5, max_new_tokens=NEW)),
                              axis=1)
    np.testing.assert_array_equal(streamed, np.asarray(out.tokens))
    # LoRA with dropout (off when decoding): its RNG state is not touched inside the loops.
    from flax import nnx
    from wavepose_jax.models.lora import LoraConfig, apply_lora
    apply_lora(model, LoraConfig(rank=2, alpha=4.0, dropout=0.1), nnx.Rngs(0))
    np.testing.assert_array_equal(generate(model, ids, mask, max_new_tokens=NEW).tokens, out.tokens)
