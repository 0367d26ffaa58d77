"""The composed model's loss and the train step: masking, freezing, accumulation, learning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wavepose_jax.models.lora import trainable_filter
from wavepose_jax.run import new_model
from wavepose_jax.testing import make_batch, small_spec, tiny_llm, train_state
from wavepose_jax.training import optim
from wavepose_jax.training import state as state_lib
from wavepose_jax.training import step as step_lib
from wavepose_jax.training.checkpoint import Checkpointer
from wavepose_jax.training.loss import LossWeights, model_loss_terms

REPO = Path(__file__).resolve().parents[1]


# One jitted step for every test here: states of one lineage share graphdef and optimizer, so
# each grad_accum value compiles once.
STEP = jax.jit(step_lib.train_step, static_argnames="grad_accum")


@pytest.fixture(scope="module")
def model():
    return new_model(small_spec(), llm=tiny_llm())


@pytest.fixture(scope="module")
def initial_state(model):
    return train_state(model, small_spec())


@pytest.fixture(scope="module")
def batch():
    return jax.tree.map(jnp.asarray, make_batch())


@pytest.fixture(scope="module")
def run20(initial_state, batch):
    """(final state, losses, last metrics) of 20 steps on one batch."""
    state, losses = initial_state, []
    for _ in range(20):
        state, metrics = STEP(state, batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    return state, losses, metrics


def test_loss_decreases(run20):
    _, losses, metrics = run20
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5]), losses
    assert losses[-1] < 0.93 * losses[0], losses
    assert float(metrics["grad_norm"]) > 0
    # lr of step 19: cosine from 1e-2 towards 1e-3 over 100 steps, no warmup.
    expected = 1e-3 + 0.5 * 9e-3 * (1 + np.cos(np.pi * 19 / 100))
    assert float(metrics["lr"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["target_tokens"]) == make_batch().loss_mask.sum()


def test_frozen_bit_identical_and_not_in_optimizer(initial_state, run20):
    state = run20[0]
    # Frozen base weights: untouched, bit for bit.
    for a, b in zip(jax.tree.leaves(initial_state.frozen), jax.tree.leaves(state.frozen)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Every trainable group moved (LoRA B starts at 0 and becomes non-zero).
    flat0 = dict(nnx.to_flat_state(initial_state.params))
    moved = {p[0] for p, v in nnx.to_flat_state(state.params)
             if not np.array_equal(np.asarray(v[...]), np.asarray(flat0[p][...]))}
    assert moved == {"encoder", "bridge", "llm"}
    # The optimizer state holds moments for trainable leaves only.
    frozen_paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(state.frozen)}
    opt_paths = {jax.tree_util.keystr(kp) for kp, _ in
                 jax.tree_util.tree_flatten_with_path(state.opt_state)[0]}
    assert not any(fp.split("/")[-2] + "']['kernel" in op and "lora" not in op
                   for op in opt_paths for fp in frozen_paths)
    n_trainable = sum(x.size for x in jax.tree.leaves(state.params))
    n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
    # mu + nu per trainable leaf, plus a few scalar counters.
    assert 2 * n_trainable <= n_opt < 2 * n_trainable + 16


def test_accumulation_equals_one_big_step(initial_state, batch):
    results = []
    for k in (1, 2):
        state, metrics = STEP(initial_state, batch, jax.random.key(0), grad_accum=k)
        results.append((jax.tree.map(np.asarray, state.params), metrics))
    (ref, ref_m), (params, metrics) = results
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_m["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(ref_m["grad_norm"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="grad_accum"):
        STEP(initial_state, batch, jax.random.key(0), grad_accum=3)


def test_trainable_split_and_labels(model, initial_state):
    trainable = small_spec().train.trainable
    names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(initial_state.params)}
    assert any(n.endswith("qkv_proj/lora_a") for n in names)
    assert not any(n.endswith("/kernel") and n.startswith("llm/") for n in names)
    assert "bridge/embed_rms" not in names  # a measured constant, not a parameter
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(initial_state.params))
    assert {optim.param_label(n, trainable) for n in names} == {optim.ENCODER, optim.ADAPTER}
    assert optim.param_label("llm/model/layers/0/mlp/down_proj/kernel",
                             trainable) == optim.FROZEN
    # Full fine-tuning by regex: base weights train too, in the adapter group.
    full = small_spec(trainable=(".*",)).train.trainable
    _, trains, frozen, _ = nnx.split(model, trainable_filter(full), nnx.Param, ...)
    assert not jax.tree.leaves(frozen)
    assert "embedding" in str(trains["llm"]["model"]["embed_tokens"])
    assert optim.param_label("llm/model/embed_tokens/embedding", full) == optim.ADAPTER


def test_bad_trainable_regex_is_one_line_error(model):
    config = small_spec(trainable=("nothing/.*",))
    with pytest.raises(ValueError, match="train.trainable"):
        train_state(model, config)


@nnx.jit
def _loss_and_reference(model, batch):
    """The model's loss terms, and log-probs of [soft | tokens] computed directly."""
    terms = model_loss_terms(model, batch, LossWeights(), deterministic=True)
    soft = model.soft_tokens(batch.waves, batch.frame_mask)
    inputs = jnp.concatenate([soft, model.llm.embed(batch.tokens)], axis=1)
    mask = jnp.concatenate([jnp.ones(soft.shape[:2], bool), batch.token_mask], axis=1)
    return terms, jax.nn.log_softmax(model.llm(inputs_embeds=inputs, attention_mask=mask).logits)


def test_loss_only_on_targets_and_exact_with_padding(model):
    batch = make_batch(1)
    terms, logp = _loss_and_reference(model, jax.tree.map(jnp.asarray, batch))
    logp = np.asarray(logp)
    s = model.num_soft_tokens
    ce, n = 0.0, 0.0  # label t is predicted at position S + t - 1
    for b in range(4):
        for t in range(batch.tokens.shape[1]):
            if batch.loss_mask[b, t] and batch.example_weight[b] > 0:
                ce -= logp[b, s + t - 1, batch.tokens[b, t]]
                n += 1
    np.testing.assert_allclose(float(terms.ce_sum), ce, rtol=1e-5)
    assert float(terms.num_tokens) == n

    # Right-padding columns and a weight-0 example (here a copy of row 0) change nothing.
    padded = batch.replace(**{key: np.pad(getattr(batch, key), ((0, 0), (0, 4)))
                              for key in ("tokens", "token_mask", "loss_mask")})
    padded = jax.tree.map(lambda x: np.concatenate([x[:3], x[:1]]), padded)
    padded.example_weight[3] = 0.0
    extra, _ = _loss_and_reference(model, jax.tree.map(jnp.asarray, padded))
    real_rows = batch.loss_mask[:3].sum()
    assert float(extra.num_tokens) == real_rows
    np.testing.assert_allclose(float(extra.ce_sum), -sum(
        logp[b, s + t - 1, batch.tokens[b, t]] for b in range(3)
        for t in range(batch.tokens.shape[1]) if batch.loss_mask[b, t]), rtol=1e-5)


def test_optimizer_masks_frozen_labels():
    # Applied to a full tree, the frozen group gets exactly zero updates, the others move.
    config = small_spec()
    params = {"encoder": {"w": jnp.ones((3, 2))},
              "bridge": {"gate": jnp.ones((2,))},
              "llm": {"layer": {"kernel": jnp.ones((2, 2)), "lora_a": jnp.ones((2, 2))}}}
    tx, _ = optim.make_optimizer(config.train)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
    assert float(jnp.abs(updates["llm"]["layer"]["kernel"]).max()) == 0.0
    for leaf in (updates["encoder"]["w"], updates["bridge"]["gate"],
                 updates["llm"]["layer"]["lora_a"]):
        assert float(jnp.abs(leaf).min()) > 0


def _train_py(*args: str, workdir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(REPO / "train.py"), "--workdir", str(workdir),
                           *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_py_end_to_end(tmp_path):
    """configs/tiny.py for 2 steps: metrics, checkpoints, validation and held-out eval.json."""
    args = ["--config", str(REPO / "configs" / "tiny.py"), "--config.train.steps=2",
            "--config.train.log_every=1", "--config.train.ckpt_every=1",
            "--config.train.eval_every=0", "--config.train.num_eval_samples=0",
            "--config.data.synthetic_n=12", "--config.train.batch_size=4",
            "--config.eval.synthetic_n=2", "--config.eval.ood_n=2",
            "--config.eval.max_new_tokens=4"]
    run = _train_py(*args, workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in train_records)
    assert any("val_loss" in r for r in records)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
        "1", "2"]
    # The run records the built-in base by its package path, so the run directory can move.
    with Checkpointer(tmp_path, read_only=True) as ckpt:
        assert ckpt.read_record()[2].path == "wavepose_jax:assets/tiny-phi3"
    results = json.loads((tmp_path / "eval.json").read_text())
    result, ood = results["in_distribution"], results["out_of_distribution"]
    assert result["n_clips"] == 2 and "seed1000003" in result["data"]
    assert np.isfinite(result["val_loss"])
    # The out-of-distribution benchmark is evaluated, and was never training data.
    assert ood["n_clips"] == 2 and "othergen" in ood["data"] and np.isfinite(ood["val_loss"])
    assert "othergen" not in (tmp_path / "metrics.jsonl").read_text()


def test_train_py_bad_input_is_one_line(tmp_path):
    bad = _train_py("--config", str(REPO / "configs" / "tiny.py"),
                    f"--config.llm.path={tmp_path / 'missing'}", workdir=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: directory not found"]
