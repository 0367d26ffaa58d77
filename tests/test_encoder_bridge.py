"""Tests of the WavePose encoder, the WaveBridge and the wave-dynamics auxiliary loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from wavepose_jax.models.bridge import BridgeConfig, EmbedScale, WaveBridge, embedding_rms
from wavepose_jax.models.encoder import EncoderConfig, MultiHeadAttention, WavePoseEncoder
from wavepose_jax.training.loss import wave_dynamics_loss, wave_dynamics_targets

B, T = 3, 12
ENC = EncoderConfig(d_model=32, num_layers=2, num_heads=4, mlp_ratio=2, state_dim=8, max_len=64)
BRIDGE = BridgeConfig(llm_dim=48, d_model=32, state_dim=8, num_queries=4, num_layers=2,
                      num_heads=4, mlp_ratio=2)
LENGTHS = np.array([T, 7, 0])  # full clip, padded clip, all-padded clip


def _mask(lengths=LENGTHS, length=T):
    return jnp.asarray(np.arange(length)[None, :] < lengths[:, None])  # [B, T]


def _waves(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, T, ENC.num_signals))


@pytest.fixture(scope="module")
def models():
    encoder = WavePoseEncoder(ENC, rngs=nnx.Rngs(0))
    table = 0.04 * jax.random.normal(jax.random.key(1), (100, BRIDGE.llm_dim))
    bridge = WaveBridge(BRIDGE, embed_rms=embedding_rms(table), rngs=nnx.Rngs(2))
    return encoder, bridge, table


def test_shapes_and_padding_zeroed(models):
    encoder, bridge, _ = models
    mask = _mask()
    phi, state = encoder(_waves(), mask)
    assert phi.shape == (B, T, ENC.d_model) and state.shape == (B, T, ENC.state_dim)
    assert float(jnp.abs(phi[1, 7:]).max()) == 0.0 and float(jnp.abs(state[2]).max()) == 0.0
    soft = bridge(phi, state, mask)
    assert soft.shape == (B, BRIDGE.num_queries, BRIDGE.llm_dim)


def test_padded_frames_change_no_real_output(models):
    encoder, bridge, _ = models
    mask = _mask()
    waves = _waves(0)
    noisy = jnp.where(mask[..., None], waves, 100.0 * _waves(1))  # only padded frames differ
    phi_a, state_a = encoder(waves, mask)
    phi_b, state_b = encoder(noisy, mask)
    np.testing.assert_allclose(phi_a, phi_b, atol=1e-5)
    np.testing.assert_allclose(state_a, state_b, atol=1e-5)
    np.testing.assert_allclose(bridge(phi_a, state_a, mask), bridge(phi_b, state_b, mask),
                               atol=1e-5)
    # The bridge alone ignores whatever sits in padded encoder outputs.
    junk = jnp.where(mask[..., None], phi_a, 50.0)
    np.testing.assert_allclose(bridge(phi_a, state_a, mask), bridge(junk, state_a, mask),
                               atol=1e-5)
    # ...while real frames do matter.
    moved = encoder(waves.at[0, 3].add(1.0), mask)[0]
    assert float(jnp.abs(moved[0] - phi_a[0]).max()) > 1e-3


def test_all_padded_clip_is_finite(models):
    encoder, bridge, _ = models
    mask = jnp.zeros((B, T), bool)
    phi, state = encoder(_waves(), mask)
    soft, attention = bridge(phi, state, mask, return_attention=True)
    assert bool(jnp.isfinite(soft).all()) and bool(jnp.isfinite(attention).all())
    assert float(jnp.abs(attention).max()) == 0.0


def test_soft_token_rms_matches_embeddings_at_init(models):
    encoder, bridge, table = models
    expected = float(np.sqrt(np.mean(np.square(np.asarray(table, np.float64)))))
    assert embedding_rms(table) == pytest.approx(expected, rel=1e-5)
    mask = _mask()
    soft = bridge(*encoder(_waves(), mask), mask)
    token_rms = np.sqrt(np.mean(np.square(np.asarray(soft)), axis=-1))  # [B, Q]
    np.testing.assert_allclose(token_rms, expected, rtol=0.05)
    # The measured scale is carried as a non-trainable variable.
    assert float(nnx.state(bridge, EmbedScale)["embed_rms"][...]) == pytest.approx(expected)
    assert "embed_rms" not in nnx.state(bridge, nnx.Param)


def test_bad_embed_rms_and_table_rejected():
    with pytest.raises(ValueError, match="embed_rms"):
        WaveBridge(BRIDGE, embed_rms=0.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="RMS"):
        embedding_rms(jnp.zeros((4, 8)))


def test_attention_weights(models):
    encoder, bridge, _ = models
    mask = _mask()
    soft, attention = bridge(*encoder(_waves(), mask), mask, return_attention=True)
    np.testing.assert_allclose(soft, bridge(*encoder(_waves(), mask), mask), atol=1e-6)
    assert attention.shape == (B, BRIDGE.num_layers, BRIDGE.num_queries, T)
    np.testing.assert_allclose(attention[:2].sum(-1), 1.0, atol=1e-5)
    assert float(attention[1, ..., 7:].max()) == 0.0
    assert float(attention[1, ..., :7].min()) > 0.0


def test_attention_paths_agree():
    attn = MultiHeadAttention(16, 4, dtype=jnp.float32, param_dtype=jnp.float32,
                              rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (B, T, 16))
    mask = _mask()
    fast = attn(x, x, mask)
    exact, _ = attn(x, x, mask, return_weights=True)
    np.testing.assert_allclose(fast, exact, atol=1e-5)


def test_dropout_only_when_training(models):
    encoder, bridge, _ = models
    mask = _mask()
    phi, state = encoder(_waves(), mask)
    np.testing.assert_array_equal(phi, encoder(_waves(), mask)[0])
    phi_train, _ = encoder(_waves(), mask, deterministic=False)
    assert float(jnp.abs(phi_train - phi).max()) > 1e-3
    soft = bridge(phi, state, mask)
    np.testing.assert_array_equal(soft, bridge(phi, state, mask))
    assert float(jnp.abs(bridge(phi, state, mask, deterministic=False) - soft).max()) > 1e-4


def test_wave_dynamics_targets():
    waves = jnp.broadcast_to(jnp.arange(T, dtype=jnp.float32)[None, :, None] * 0.5,
                             (B, T, ENC.num_signals))
    mask = _mask()
    phase = jnp.full((B, T), jnp.pi / 2)
    targets = wave_dynamics_targets(waves, mask, fps=30.0, phase=phase)
    assert targets["velocity"].shape == (B, T, ENC.num_signals)
    np.testing.assert_allclose(targets["velocity"][0, 1:], 15.0)  # 0.5 per frame * 30 fps
    assert not bool(targets["velocity_mask"][:, 0].any())
    assert not bool(targets["velocity_mask"][1, 7:].any()) and bool(targets["velocity_mask"][1, 6])
    np.testing.assert_allclose(targets["velocity_scale"], 15.0, rtol=1e-5)
    np.testing.assert_allclose(targets["phase"][0, 0], [1.0, 0.0], atol=1e-6)
    per_frame = wave_dynamics_targets(waves, mask, fps=None)
    np.testing.assert_allclose(per_frame["velocity"][0, 1:], 0.5)
    assert "phase" not in per_frame


def test_constant_channels_have_no_velocity_term():
    """A channel that never moves (an absent signal, an exercise one-hot) has no velocity to
    predict: it is left out instead of being divided by a zero velocity scale."""
    t = jnp.arange(T, dtype=jnp.float32)
    moving = jnp.broadcast_to(jnp.sin(0.5 * t)[None, :, None], (B, T, 2))
    waves = jnp.concatenate([moving, jnp.ones((B, T, 1))], -1)  # channel 2 is constant
    mask = _mask()
    targets = wave_dynamics_targets(waves, mask, fps=30.0)
    assert targets["velocity_channels"].tolist() == [True, True, False]
    pred = jnp.zeros((B, T, 5)).at[..., 2].set(3.0)  # anything on the constant channel
    only_moving = wave_dynamics_loss(pred.at[..., 2].set(0.0), targets, mask)
    assert float(wave_dynamics_loss(pred, targets, mask)) == pytest.approx(float(only_moving))
    assert float(only_moving) == pytest.approx(1.0, rel=1e-5)  # normalised MSE of predicting 0


def test_aux_loss_decreases(models):
    encoder = WavePoseEncoder(ENC, rngs=nnx.Rngs(3))
    mask = _mask()
    t = jnp.arange(T, dtype=jnp.float32)
    waves = jnp.sin(0.5 * t)[None, :, None] * jnp.linspace(0.5, 2.0, ENC.num_signals)
    waves = jnp.broadcast_to(waves, (B, T, ENC.num_signals))
    targets = wave_dynamics_targets(waves, mask, fps=30.0, phase=jnp.broadcast_to(0.5 * t, (B, T)))
    optimizer = nnx.Optimizer(encoder, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        def loss_fn(m):
            _, state = m(waves, mask)
            return wave_dynamics_loss(m.dynamics(state), targets, mask)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(encoder, optimizer)) for _ in range(15)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]
    # The loss is the per-channel-normalised velocity MSE plus the (sin, cos) phase MSE.
    _, state = encoder(waves, mask)
    pred = np.asarray(encoder.dynamics(state))
    m = np.asarray(mask & targets["velocity_mask"])
    vel = (pred[..., :ENC.num_signals] - np.asarray(targets["velocity"])) / np.asarray(
        targets["velocity_scale"])
    pm = np.asarray(targets["phase_mask"] & mask)
    expected = (np.square(vel)[m].mean()
                + np.square(pred[..., ENC.num_signals:] - np.asarray(targets["phase"]))[pm].mean())
    assert float(wave_dynamics_loss(encoder.dynamics(state), targets, mask)) == pytest.approx(
        expected, rel=1e-5)


def test_encoder_rejects_bad_shapes(models):
    encoder, _, _ = models
    with pytest.raises(ValueError, match="waves"):
        encoder(jnp.zeros((B, T, 5)), _mask())
    with pytest.raises(ValueError, match="max_len"):
        encoder(jnp.zeros((1, 65, ENC.num_signals)), jnp.ones((1, 65), bool))


def test_conv_input_sees_neighbours_but_never_padding():
    """conv_kernel > 1: a frame's output depends on its neighbours, never on padded frames."""
    import dataclasses

    encoder = WavePoseEncoder(dataclasses.replace(ENC, conv_kernel=5), rngs=nnx.Rngs(3))
    mask = _mask()
    waves = _waves(0)
    noisy = jnp.where(mask[..., None], waves, 100.0 * _waves(1))
    np.testing.assert_allclose(encoder(waves, mask)[0], encoder(noisy, mask)[0], atol=1e-5)
    # The input projection alone: moving frame 3 changes frames 1..5 and nothing further away.
    x = waves.at[0, 3].add(1.0)
    delta = jnp.abs(encoder.input_proj(x) - encoder.input_proj(waves))[0].max(-1)  # [T]
    assert float(delta[1:6].min()) > 0 and float(jnp.concatenate([delta[:1], delta[6:]]).max()) == 0
