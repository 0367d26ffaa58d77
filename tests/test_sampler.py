"""Text generation: batch texts and the incremental stream agree, stop ids come from the base."""

import numpy as np
import pytest

from wavepose_jax import hf
from wavepose_jax.configs import tiny as tiny_config
from wavepose_jax.inputs import special_id
from wavepose_jax.prompt import PhysicsSummary, prompt_ids
from wavepose_jax.run import new_model
from wavepose_jax.sampler import Sampler
from wavepose_jax.spec import RunSpec


@pytest.fixture(scope="module")
def sampler():
    spec = RunSpec.from_config(tiny_config.get_config())  # the committed tiny base: fluent text
    tokenizer = hf.load_tokenizer(spec.llm.path)
    return Sampler(new_model(spec), tokenizer, hf.stop_ids(spec.llm.path, tokenizer)), spec


def _prompts(tokenizer):
    summaries = [PhysicsSummary(exercise=ex, reps=reps, grade=grade, overall=None,
                                smoothness=None, control=None, consistency=None, tempo_sec=t,
                                phases=(), dominant_hz=None)
                 for ex, reps, grade, t in (("squat", 5, "B", 2.1), ("press", 11, "D", 3.4),
                                            ("pushup", 8, "A", 1.6))]
    return [np.asarray(prompt_ids(s, tokenizer, compact=True), np.int32) for s in summaries]


def test_stream_ends_with_the_batch_result_and_only_grows(sampler):
    sampler, config = sampler
    prompts = _prompts(sampler.tokenizer)
    width = config.data.num_channels  # signals, rep and fault channels
    waves = np.zeros((4, config.data.seq_len, width), np.float32)  # 3 clips + 1 padding row
    soft, attention = sampler.encode(waves, np.ones((4, config.data.seq_len), bool))
    assert soft.shape[:2] == (4, config.bridge.num_queries) and attention.shape[0] == 4
    batch = sampler.generate(soft, prompts, max_new_tokens=60)
    assert len(batch.texts) == 3 and all(batch.texts)
    assert all(batch.lengths < 60)  # each row ended on a stop token
    snapshots = list(sampler.stream(soft, prompts, max_new_tokens=60, chunk=5))
    assert len(snapshots) > 3
    final = snapshots[-1]
    assert final.texts == batch.texts
    np.testing.assert_array_equal(final.lengths, batch.lengths)
    for row in range(3):
        np.testing.assert_array_equal(final.tokens[row, :final.lengths[row]],
                                      batch.tokens[row, :batch.lengths[row]])
        texts = [s.texts[row] for s in snapshots]
        assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # text only grows


def test_stop_ids_come_from_the_generation_config(sampler, tmp_path):
    sampler, config = sampler
    tokenizer = sampler.tokenizer
    end = special_id(tokenizer, "<|end|>")
    assert sampler.stop_ids[0] == end and len(sampler.stop_ids) == 3
    with pytest.raises(ValueError, match="at least one stop token"):
        Sampler(sampler.llm, tokenizer, ())


@pytest.mark.parametrize("scan_layers", [False, True])
def test_a_remat_model_decodes_like_a_plain_one(sampler, scan_layers):
    """`llm.remat` (the real recipe's default) changes the backward pass only: decoding inside
    the generator's loops gives the same tokens as the same weights without it."""
    sampler, config = sampler
    prompts = _prompts(sampler.tokenizer)[:2]
    waves = np.zeros((2, config.data.seq_len, config.data.num_channels), np.float32)
    tokens = []
    for remat in (False, True):
        c = config.replace(llm=dict(remat=remat, scan_layers=scan_layers))
        s = Sampler(new_model(c), sampler.tokenizer, sampler.stop_ids)
        soft, _ = s.encode(waves, np.ones((2, c.data.seq_len), bool))
        tokens.append(s.generate(soft, prompts, max_new_tokens=12).tokens)
    np.testing.assert_array_equal(tokens[0], tokens[1])
