"""Builders shared by the tests (and handy in a notebook): one tiny Phi-3, tiny run configs,
a batch in the training format, and a tiny checkpointed run. Nothing here downloads anything.

    TINY_PHI3                  the one tiny Phi-3 architecture of the tests (GQA, 2 layers)
    tiny_llm(seed)             a random Phi3ForCausalLM of TINY_PHI3
    small_spec(**train)        configs/tiny.py shrunk to test sizes (deterministic steps)
    make_batch(...)            a `Batch` with varied lengths and a padding row
    make_tiny_base(dir)        a tiny random HF directory with the demo tokenizer
    tiny_run_config(dir)       configs/tiny.py shrunk to a few-second CPU run on that base
    tiny_run_spec(dir)         the same as a RunSpec
    train_state(model, spec)   the train state of a model under a spec's `train` group
    build_tiny_run(root)       a base, three synthetic clips and a checkpoint trained on them
    call(model, ids, mask)     the logits of a jitted forward pass of a Phi3ForCausalLM

The PyTorch reference (transformers' Phi3ForCausalLM; torch is imported only when these run):

    reference_config(...)      a transformers Phi3Config of the tiny reference shape (TINY_HF)
    reference_model(seed)      a random fp32 reference model with well-spread logits
    reference_logits(model, ids, mask)   its float32 logits as numpy
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavepose_jax.configs import tiny as tiny_config
from wavepose_jax.data.batch import Batch, target_positions
from wavepose_jax.models.phi3 import Phi3Config, Phi3ForCausalLM
from wavepose_jax.spec import RunSpec

TINY_PHI3 = Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       original_max_position_embeddings=128, pad_token_id=0)


def tiny_llm(seed: int = 1, **overrides: Any) -> Phi3ForCausalLM:
    """A random float32 Phi-3 of `TINY_PHI3` (fields replaced by `overrides`)."""
    return Phi3ForCausalLM(dataclasses.replace(TINY_PHI3, **overrides), rngs=nnx.Rngs(seed))


def small_spec(**train: Any) -> RunSpec:
    """configs/tiny.py shrunk to test sizes; `train` overrides fields of the `train` group.

    No dropout (deterministic steps) and no auxiliary loss: the auxiliary term is a
    per-micro-batch mean, so only the CE is exact under accumulation. A large Adam epsilon
    keeps round-off-level gradients (e.g. of biases feeding a LayerNorm) from being normalised
    into full-size updates of random sign, so parameters after a step can be compared tightly.
    """
    c = tiny_config.get_config()
    c.data.update(rep_channels=False, fault_channels=False)  # the 7 signals of `make_batch`
    c.encoder.update(d_model=32, num_layers=1, num_heads=4, mlp_ratio=2, state_dim=8, dropout=0.0)
    c.bridge.update(num_queries=4, num_layers=1, num_heads=4, mlp_ratio=2, dropout=0.0)
    c.lora.update(rank=4, alpha=8.0, dropout=0.0)
    c.train.update({**dict(steps=100, warmup_steps=0, lr_encoder=1e-2, lr_bridge_lora=1e-2,
                           aux_loss_weight=0.0, adam_eps=1e-5), **train})
    return RunSpec.from_config(c)


def make_batch(seed: int = 0, batch: int = 4, frames: int = 16, length: int = 12,
               labelled: bool = False) -> Batch:
    """A numpy batch in the training format: varied prompt/target lengths and frame counts, the
    last row padding (weight 0); random fault labels, masked out (no fault loss) unless
    `labelled`."""
    from wavepose_jax.data.faults import FAULTS

    rng = np.random.default_rng(seed)
    vocab = TINY_PHI3.vocab_size
    tokens = rng.integers(1, vocab, (batch, length)).astype(np.int32)
    token_mask = np.zeros((batch, length), bool)
    loss_mask = np.zeros((batch, length), bool)
    frame_mask = np.zeros((batch, frames), bool)
    prompt_len = np.zeros(batch, np.int32)
    for b in range(batch):
        prompt, total = 3 + b % 3, length - b % 4
        token_mask[b, :total] = True
        loss_mask[b, prompt:total] = True
        frame_mask[b, :frames - 2 * (b % 3)] = True
        prompt_len[b] = prompt
    tokens[~token_mask] = 0
    weight = np.ones(batch, np.float32)
    weight[-1] = 0.0
    loss_mask[-1] = False
    f = len(FAULTS)
    return Batch(
        waves=rng.normal(size=(batch, frames, 7)).astype(np.float32), frame_mask=frame_mask,
        phase=rng.uniform(0, 2 * np.pi, (batch, frames)).astype(np.float32),
        phase_mask=frame_mask.copy(),
        faults=(rng.random((batch, f)) < 0.3).astype(np.float32),
        fault_mask=np.full((batch, f), labelled), tokens=tokens, token_mask=token_mask,
        loss_mask=loss_mask, prompt_len=prompt_len, example_weight=weight,
        target_pos=target_positions(loss_mask))


def make_tiny_base(directory: str | Path, seed: int = 0, **hf_overrides: Any):
    """A tiny random Phi-3 HF directory with the demo's tokenizer; returns the tokenizer."""
    from wavepose_jax import hf, tiny

    texts = [reply for _, reply in tiny.coaching_corpus(200, seed=0)]
    tokenizer = tiny.build_tokenizer(texts, vocab_size=400)
    hf_config = {**tiny.tiny_phi3_hf_config(tokenizer), "hidden_size": 32,
                 "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "num_key_value_heads": 1, **hf_overrides}
    llm = Phi3ForCausalLM(Phi3Config.from_hf(hf_config), rngs=nnx.Rngs(seed))
    hf.save_pretrained(llm, directory, tokenizer=tokenizer)
    return tokenizer


def tiny_run_config(base_dir: str | Path) -> Any:
    """configs/tiny.py shrunk to a few-second CPU run on the base in `base_dir` (a ConfigDict,
    as a config file returns it)."""
    c = tiny_config.get_config()
    c.llm.path = str(base_dir)
    c.lora.rank = 2
    c.encoder.update(d_model=16, num_layers=1, num_heads=2, state_dim=8)
    c.bridge.update(num_queries=2, num_heads=2)
    c.data.update(seq_len=48, max_prompt_tokens=120, max_target_tokens=100, buckets=(192, 256))
    c.train.update(batch_size=2, warmup_steps=1, aux_loss_weight=0.0)
    c.eval.update(batch_size=2, max_new_tokens=6)
    return c


def tiny_run_spec(base_dir: str | Path) -> RunSpec:
    """`tiny_run_config` as the RunSpec a command makes of it."""
    return RunSpec.from_config(tiny_run_config(base_dir))


def train_state(model: Any, spec: RunSpec, mesh: Any = None) -> Any:
    """`training.state.create_train_state` of `model` with the spec's `train` group and loss
    weights (as train.py makes it)."""
    from wavepose_jax.training.loss import LossWeights
    from wavepose_jax.training.state import create_train_state

    return create_train_state(model, spec.train, LossWeights.of(spec.train, spec.data.target_fps),
                              mesh)


def build_tiny_run(root: Path) -> tuple[Path, Path, nnx.State]:
    """(workdir, clip dir, trained params): a checkpoint at step 7 of a tiny model whose trained
    parameters (a fresh init + 0.01) differ from a fresh init, and three squat clips."""
    from wavepose_jax import run as run_lib
    from wavepose_jax.base_record import base_record_of
    from wavepose_jax.data import synthetic
    from wavepose_jax.training import checkpoint as ckpt_lib
    base_dir, workdir, data_dir = root / "base", root / "work", root / "clips"
    make_tiny_base(base_dir)
    synthetic.write_dataset(data_dir, 3, seed=5, exercises=["squat"], progress=False)
    spec = tiny_run_spec(base_dir)
    base = run_lib.load_base(spec.llm)
    model = run_lib.new_model(spec, llm=base.model)
    state = train_state(model, spec)
    params = jax.tree.map(lambda x: x + 0.01, state.params)
    record = base_record_of(model.llm, path=str(base_dir), files=base.digests)
    with ckpt_lib.Checkpointer(workdir, config=spec.to_dict(), base=record) as ckpt:
        ckpt.save(7, {**state.checkpoint_items(), "params": params})
    return workdir, data_dir, params


@nnx.jit
def _jit_call(model, kwargs):
    return model(**kwargs)


def call(model, input_ids=None, attention_mask=None, **kwargs):
    """Jitted ``model(input_ids, attention_mask, **kwargs)`` (array arguments only): its
    `LMOutput` when a cache is given, else its logits."""
    kwargs = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    if input_ids is not None:
        kwargs["input_ids"] = jnp.asarray(input_ids)
    if attention_mask is not None:
        kwargs["attention_mask"] = jnp.asarray(attention_mask)
    out = _jit_call(model, kwargs)
    return out if "cache" in kwargs else out.logits


# ------------------------------------------------------------------------------------------------
# The PyTorch reference

TINY_HF = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA
    max_position_embeddings=128,
    original_max_position_embeddings=32,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)


def longrope_scaling(rotary_dim: int, seed: int = 0) -> dict:
    """Phi-3.5-like LongRoPE factors: short near 1, long growing with the frequency index."""
    rng = np.random.default_rng(seed)
    n = rotary_dim // 2
    short = 1.0 + 0.1 * rng.random(n)
    long = np.linspace(1.0, 8.0, n) * (1.0 + 0.2 * rng.random(n))
    return {"type": "longrope", "short_factor": short.round(4).tolist(),
            "long_factor": long.round(4).tolist()}


def reference_config(**overrides: Any):
    """transformers' Phi3Config of TINY_HF (`rope_scaling="longrope"` draws LongRoPE factors)."""
    import transformers

    kwargs = {**TINY_HF, **overrides}
    if kwargs.get("rope_scaling") == "longrope":
        head_dim = kwargs["hidden_size"] // kwargs["num_attention_heads"]
        rotary = int(head_dim * kwargs.get("partial_rotary_factor", 1.0))
        kwargs["rope_scaling"] = longrope_scaling(rotary)
    return transformers.Phi3Config(**kwargs)


def reference_model(seed: int = 0, **overrides: Any):
    """A random fp32 transformers Phi-3 (eval mode, eager attention) with weights large enough
    that logits are well spread, and non-trivial norm weights."""
    import torch
    import transformers

    config = reference_config(**overrides)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.Phi3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


def reference_logits(model, input_ids, attention_mask=None) -> np.ndarray:
    """float32 logits of a transformers model."""
    import torch

    with torch.no_grad():
        ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
        mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask))
        return model(input_ids=ids, attention_mask=mask).logits.float().numpy()
