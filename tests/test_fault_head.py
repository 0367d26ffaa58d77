"""The bridge's fault head, its BCE loss and the batch's fault labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from wavepose_jax import dataset
from wavepose_jax.configs import tiny as tiny_config
from wavepose_jax.data.faults import FAULTS
from wavepose_jax.inputs import ModelInputs
from wavepose_jax.models.bridge import BridgeConfig, WaveBridge
from wavepose_jax.models.encoder import EncoderConfig, WavePoseEncoder
from wavepose_jax.run import new_model
from wavepose_jax.spec import RunSpec
from wavepose_jax.testing import make_batch, tiny_llm
from wavepose_jax.training.loss import LossWeights, fault_bce, model_loss_terms

F = len(FAULTS)
B, T = 6, 16
ENC = EncoderConfig(d_model=32, num_layers=1, num_heads=4, mlp_ratio=2, state_dim=8,
                    dropout=0.0)
BRIDGE = BridgeConfig(llm_dim=48, d_model=32, state_dim=8, num_queries=4, num_layers=1,
                      num_heads=4, mlp_ratio=2, dropout=0.0, num_faults=F)


def _example(exercise: str, faults):
    info = dataset.ClipInfo("c.json", "v", exercise, "text", faults, 3)
    inputs = ModelInputs(waves=np.zeros((8, 7), np.float32),
                                  frame_mask=np.ones(8, bool),
                                  prompt_ids=np.arange(5, dtype=np.int32), summary=None,
                                  measurement=None)
    return dataset.Example(inputs=inputs, phase=np.zeros(8, np.float32),
                            phase_mask=np.zeros(8, bool), target_ids=np.ones(3, np.int32),
                            info=info)


def test_batch_has_fault_labels_and_mask():
    buckets = tiny_config.get_config().data.buckets
    examples = [_example("squat", ("shallow_depth", "fast_eccentric")),
                _example("pushup", ()), _example("press", None)]
    batch = dataset.collate(examples, buckets, pad_id=0)
    assert batch.faults.shape == (3, F) and batch.faults.dtype == np.float32
    assert batch.fault_mask.shape == (3, F) and batch.fault_mask.dtype == bool
    ids = list(FAULTS)
    on = [ids[i] for i in np.flatnonzero(batch.faults[0])]
    assert on == ["shallow_depth", "fast_eccentric"]
    # The mask covers the faults of the clip's exercise plus those of any exercise.
    masked = {ids[i] for i in np.flatnonzero(batch.fault_mask[1])}
    assert masked == {"pushup_partial_range", "pushup_hip_sag", "fast_eccentric", "uneven_tempo"}
    assert batch.faults[1].sum() == 0
    assert not batch.fault_mask[2].any()  # unlabelled clip: no fault loss


def test_fault_head_shapes_and_absent_head():
    bridge = WaveBridge(BRIDGE, embed_rms=0.5, rngs=nnx.Rngs(0))
    phi = jax.random.normal(jax.random.key(0), (B, T, ENC.d_model))
    state = jax.random.normal(jax.random.key(1), (B, T, ENC.state_dim))
    mask = jnp.ones((B, T), bool)
    events, attention = bridge.events(phi, state, mask)
    assert events.shape == (B, BRIDGE.num_queries, BRIDGE.d_model)
    assert attention.shape == (B, BRIDGE.num_layers, BRIDGE.num_queries, T)
    np.testing.assert_allclose(bridge.project(events), bridge(phi, state, mask), atol=1e-6)
    logits = bridge.fault_logits(events)
    assert logits.shape == (B, F) and logits.dtype == jnp.float32
    plain = WaveBridge(BridgeConfig(**{**BRIDGE.__dict__, "num_faults": 0}), embed_rms=0.5,
                       rngs=nnx.Rngs(0))
    assert plain.fault_head is None
    with pytest.raises(ValueError, match="no fault head"):
        plain.fault_logits(events)


def test_fault_bce_is_masked():
    logits = jnp.array([[3.0, -2.0], [0.0, 100.0]])
    labels = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    mask = jnp.array([[True, True], [False, False]])
    expected = float(np.mean([np.log1p(np.exp(-3.0)), np.log1p(np.exp(-2.0))]))
    assert float(fault_bce(logits, labels, mask)) == pytest.approx(expected, rel=1e-5)
    assert float(fault_bce(logits, labels, jnp.zeros_like(mask))) == 0.0


def test_fault_bce_decreases_when_training_encoder_and_bridge():
    """Faults that depend on the signals are learnt: the BCE on a fixed batch drops."""
    rng = np.random.default_rng(0)
    waves = rng.normal(size=(B, T, 7)).astype(np.float32)
    labels = np.zeros((B, F), np.float32)
    labels[:, 0] = waves[:, :, 4].mean(1) > 0   # a fault from the knee-angle channel
    labels[:, 8] = waves[:, :, 0].std(1) > 1.0  # another from the hip channel
    mask = jnp.ones((B, T), bool)
    model = nnx.List([WavePoseEncoder(ENC, rngs=nnx.Rngs(0)),
                      WaveBridge(BRIDGE, embed_rms=0.5, rngs=nnx.Rngs(1))])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    def loss_fn(p):
        encoder, bridge = nnx.merge(graphdef, p, rest)
        phi, state = encoder(jnp.asarray(waves), mask)
        events, _ = bridge.events(phi, state, mask)
        return fault_bce(bridge.fault_logits(events), jnp.asarray(labels),
                                 jnp.ones((B, F), bool))

    @jax.jit
    def step(p, o):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    losses = []
    for _ in range(40):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_wavellm_fault_loss_follows_its_weight():
    spec = RunSpec.from_config(tiny_config.get_config()).replace(
        data=dict(rep_channels=False, fault_channels=False),  # make_batch's 7 signals
        encoder=dict(d_model=32, num_layers=1, num_heads=4, mlp_ratio=2, state_dim=8),
        bridge=dict(d_model=32, state_dim=8, num_queries=4, num_layers=1, num_heads=4,
                    mlp_ratio=2),
        lora=dict(rank=2, alpha=4.0))
    assert spec.train.fault_loss_weight > 0
    model = new_model(spec, llm=tiny_llm(0, num_hidden_layers=1))
    assert model.bridge.fault_head is not None
    batch = make_batch(1, batch=2, frames=T, length=6, labelled=True)
    batch = batch.replace(example_weight=np.ones(2, np.float32))
    weights = LossWeights.of(spec.train, spec.data.target_fps)

    def terms_of(m, w):  # one compiled program, not op-by-op dispatch
        return nnx.jit(lambda m, b: model_loss_terms(m, b, w, deterministic=True))(m, batch)

    terms = terms_of(model, weights)
    assert np.isfinite(float(terms.fault_loss)) and float(terms.fault_loss) > 0.1
    spec = spec.replace(train=dict(fault_loss_weight=0.0),
                        bridge=dict(fault_tokens=False))  # they need the head
    plain = new_model(spec, llm=tiny_llm(0, num_hidden_layers=1))
    plain_terms = terms_of(plain, LossWeights.of(spec.train, spec.data.target_fps))
    assert plain.bridge.fault_head is None and float(plain_terms.fault_loss) == 0.0


def test_fault_tokens_carry_the_fault_estimate_into_every_soft_token():
    import dataclasses

    with_tokens = WaveBridge(dataclasses.replace(BRIDGE, fault_tokens=True), embed_rms=0.5,
                             rngs=nnx.Rngs(0))
    plain = WaveBridge(BRIDGE, embed_rms=0.5, rngs=nnx.Rngs(0))
    phi = jax.random.normal(jax.random.key(0), (B, T, ENC.d_model))
    state = jax.random.normal(jax.random.key(1), (B, T, ENC.state_dim))
    mask = jnp.ones((B, T), bool)
    events, _ = with_tokens.events(phi, state, mask)
    # At initialisation the table is zero: the soft tokens are those of a bridge without it.
    np.testing.assert_array_equal(with_tokens.project(events), plain.project(events))
    with_tokens.fault_embed[...] = jax.random.normal(jax.random.key(2), (F, 48))
    soft = with_tokens.project(events)
    assert soft.shape == (B, 4, 48)
    probs = jax.nn.sigmoid(with_tokens.fault_logits(events))
    np.testing.assert_allclose(soft - plain.project(events), jnp.broadcast_to(
        (probs @ with_tokens.fault_embed[...])[:, None], soft.shape), atol=1e-5)

    # The text loss trains the table, never the head (the fault loss does that).
    def soft_tokens_loss(bridge):
        return jnp.sum(bridge.project(bridge.events(phi, state, mask)[0]) ** 2)

    grads = nnx.grad(soft_tokens_loss)(with_tokens)
    assert jnp.abs(grads.fault_embed[...]).sum() > 0
    assert not jnp.abs(grads.fault_head.kernel[...]).sum()
    with pytest.raises(ValueError, match="bridge.fault_tokens"):
        WaveBridge(dataclasses.replace(BRIDGE, num_faults=0, fault_tokens=True), embed_rms=0.5,
                   rngs=nnx.Rngs(0))
