"""WavePose motion encoder: 7 body-region signals over time -> latent motion sequence.

    waves [B, T, 7] -> x input_gain -> Linear(d_model) (or a temporal Conv of width conv_kernel)
                    + sinusoidal positions
                    -> num_layers pre-LN transformer layers (self-attention over real frames)
                    -> LayerNorm -> phi [B, T, d_model]
                    -> 2-layer GELU head -> dynamic_state [B, T, state_dim]

Padded frames (mask False) are never attended to as keys, and their outputs are zeroed, so the
values in padded frames cannot change any output of a real frame.

The auxiliary wave-dynamics loss (training/loss.py) grounds `dynamic_state`: its linear readout
(`dynamics`) must predict each channel's per-frame velocity and, when the data pipeline
supplies it, the rep phase as (sin, cos).

The attention, feed-forward and positional-encoding blocks here are shared with the bridge.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from wavepose_jax.data.schema import NUM_SIGNALS


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of `WavePoseEncoder`."""

    num_signals: int = NUM_SIGNALS  # input channels per frame
    d_model: int = 256  # width of phi
    num_layers: int = 8  # transformer layers
    num_heads: int = 8  # attention heads (d_model must divide evenly)
    mlp_ratio: int = 4  # feed-forward width = mlp_ratio * d_model
    dropout: float = 0.1  # dropout on residual branches (training only)
    state_dim: int = 32  # width of dynamic_state
    # Multiplies the normalised signals before the input projection: their size relative to
    # the unit-amplitude positional encoding, i.e. how much the first layers see of the motion.
    input_gain: float = 1.0
    # Frames the input projection sees at once: 1 projects each frame alone (Dense); k > 1 is a
    # temporal convolution of width k, so the first layer already sees velocity and curvature.
    conv_kernel: int = 1
    max_len: int = 4096  # longest accepted sequence
    dtype: Any = jnp.float32  # compute dtype
    param_dtype: Any = jnp.float32  # parameter dtype


def sinusoidal_positions(length: int, dim: int) -> jax.Array:
    """Transformer sinusoidal position table, [length, dim] float32 (sin on even, cos on odd)."""
    positions = jnp.arange(length, dtype=jnp.float32)[:, None]  # [T, 1]
    inv_freq = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))
    angles = positions * inv_freq  # [T, ceil(D/2)]
    table = jnp.zeros((length, dim), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(angles))
    return table.at[:, 1::2].set(jnp.cos(angles[:, : dim // 2]))


class MultiHeadAttention(nnx.Module):
    """Multi-head attention whose keys are restricted by a boolean key mask.

    Query rows whose keys are all masked produce zeros (never NaN).
    """

    def __init__(self, dim: int, num_heads: int, *, dtype: Any, param_dtype: Any,
                 rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        dense = lambda: nnx.Linear(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query, self.key, self.value, self.out = dense(), dense(), dense(), dense()

    def _heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)  # [B, L, H, K]

    def __call__(self, x_q: jax.Array, x_kv: jax.Array, kv_mask: jax.Array, *,
                 return_weights: bool = False):
        """x_q [B, Q, D], x_kv [B, T, D], kv_mask [B, T] bool -> out [B, Q, D].

        With return_weights, also the attention weights [B, H, Q, T] (zero on masked keys).
        """
        q = self._heads(self.query(x_q))  # [B, Q, H, K]
        k = self._heads(self.key(x_kv))  # [B, T, H, K]
        v = self._heads(self.value(x_kv))  # [B, T, H, K]
        key_mask = kv_mask[:, None, None, :]  # [B, 1, 1, T]
        if return_weights:
            logits = jnp.einsum("bqhk,bthk->bhqt", q, k).astype(jnp.float32)
            logits = logits / math.sqrt(self.head_dim)
            logits = jnp.where(key_mask, logits, jnp.finfo(jnp.float32).min)
            # Rows with no real key would be uniform over padding: zero them instead.
            weights = jax.nn.softmax(logits, axis=-1) * key_mask  # [B, H, Q, T]
            context = jnp.einsum("bhqt,bthk->bqhk", weights.astype(v.dtype), v)
        else:
            context = jax.nn.dot_product_attention(q, k, v, mask=key_mask)  # [B, Q, H, K]
            has_key = jnp.any(kv_mask, axis=-1)[:, None, None, None]  # [B, 1, 1, 1]
            context = jnp.where(has_key, context, 0.0).astype(v.dtype)
        out = self.out(context.reshape(*context.shape[:2], -1))  # [B, Q, D]
        return (out, weights) if return_weights else out


class FeedForward(nnx.Module):
    """Position-wise MLP: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.up = nnx.Linear(dim, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.down = nnx.Linear(hidden, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))


class EncoderLayer(nnx.Module):
    """Pre-LN transformer layer: x + Drop(SelfAttn(LN x)); x + Drop(FFN(LN x))."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
        self.attn_norm = nnx.LayerNorm(config.d_model, **kw)
        self.attn = MultiHeadAttention(config.d_model, config.num_heads, **kw)
        self.mlp_norm = nnx.LayerNorm(config.d_model, **kw)
        self.mlp = FeedForward(config.d_model, config.mlp_ratio * config.d_model, **kw)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
        h = self.attn_norm(x)
        x = x + self.dropout(self.attn(h, h, mask), deterministic=deterministic)
        return x + self.dropout(self.mlp(self.mlp_norm(x)), deterministic=deterministic)


class WavePoseEncoder(nnx.Module):
    """Transformer motion encoder producing phi and the learned dynamic state."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
        if config.conv_kernel > 1:
            self.input_proj = nnx.Conv(config.num_signals, config.d_model,
                                       kernel_size=(config.conv_kernel,), padding="SAME", **kw)
        else:
            self.input_proj = nnx.Linear(config.num_signals, config.d_model, **kw)
        self.input_dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = nnx.LayerNorm(config.d_model, **kw)
        self.state_hidden = nnx.Linear(config.d_model, config.d_model, **kw)
        self.state_out = nnx.Linear(config.d_model, config.state_dim, **kw)
        # Readout: one velocity per signal, then sin and cos of the rep phase.
        self.aux_head = nnx.Linear(config.state_dim, config.num_signals + 2, **kw)

    def __call__(self, waves: jax.Array, mask: jax.Array, *,
                 deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """waves [B, T, num_signals], mask [B, T] bool (True = real frame).

        Returns phi [B, T, d_model] and dynamic_state [B, T, state_dim], both zero on padding.
        """
        cfg = self.config
        if waves.ndim != 3 or waves.shape[-1] != cfg.num_signals:
            raise ValueError(f"waves must be [B, T, {cfg.num_signals}], got {waves.shape}")
        if mask.shape != waves.shape[:2]:
            raise ValueError(f"mask must be {waves.shape[:2]}, got {mask.shape}")
        length = waves.shape[1]
        if length > cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {cfg.max_len}")
        mask = mask.astype(bool)
        keep = mask[..., None].astype(cfg.dtype)  # [B, T, 1]
        waves = jnp.where(mask[..., None], waves * cfg.input_gain, 0.0).astype(cfg.dtype)
        x = self.input_proj(waves) + sinusoidal_positions(length, cfg.d_model).astype(cfg.dtype)
        x = self.input_dropout(x, deterministic=deterministic)  # [B, T, D]
        for layer in self.layers:
            x = layer(x, mask, deterministic=deterministic)
        phi = self.final_norm(x) * keep  # [B, T, D]
        state = self.state_out(jax.nn.gelu(self.state_hidden(phi))) * keep  # [B, T, S]
        return phi, state

    def dynamics(self, dynamic_state: jax.Array) -> jax.Array:
        """dynamic_state [B, T, state_dim] -> readout [B, T, num_signals + 2] in float32: each
        signal's velocity, then sin and cos of the rep phase (the wave-dynamics loss's target)."""
        return self.aux_head(dynamic_state).astype(jnp.float32)
