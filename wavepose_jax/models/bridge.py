"""WaveBridge: learned event queries read the encoded motion and become LLM soft tokens.

    [phi | dynamic_state] [B, T, d_model + state_dim] -> Linear(d_model) + sinusoidal positions
    num_queries learned event queries [Q, d_model]
      -> num_layers pre-LN cross-attention layers (queries <- real frames only), each with an FFN
      -> LayerNorm = event states [B, Q, d_model]
      -> Linear(llm_dim) -> unit RMS per token -> x embed_rms * (1 + tanh(gate))
    soft tokens [B, Q, llm_dim]

With `num_faults > 0` the bridge also has a fault head: mean of the event states over the
queries -> Linear(num_faults) logits, one per fault of the global vocabulary
(`wavepose_jax.data.faults.FAULTS` order). Trained with an auxiliary BCE loss, it makes the event
states fault-aware from the first steps, before the language model has learned to read them.
With `fault_tokens` as well, every soft token also carries the head's estimate: the fault
probabilities times a learned table of one embedding per fault [num_faults, llm_dim] (zero at
initialisation), added to each token. The language model then finds "which faults" in one
fixed direction per fault instead of untangling it from the event states. The head is trained
by the fault loss only (the estimate enters the tokens without a gradient); the table by the
text loss. It is computed from the motion alone, so zeroing the soft tokens removes it with
everything else.

The gate starts at 0, so at initialisation every soft token has exactly the RMS of the LLM's
token embeddings (`embed_rms`, measured from the loaded embedding table by the caller) and
the learned gate can move each channel's scale anywhere in (0, 2 * embed_rms).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavepose_jax.models.encoder import FeedForward, MultiHeadAttention, sinusoidal_positions

_RMS_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    """Hyper-parameters of `WaveBridge`."""

    llm_dim: int = 3072  # LLM hidden size (Phi-3.5-mini: 3072)
    d_model: int = 256  # bridge width; equals the encoder's d_model
    state_dim: int = 32  # encoder dynamic_state width
    num_queries: int = 8  # learned event queries = soft tokens per clip
    num_layers: int = 2  # cross-attention layers
    num_heads: int = 8  # attention heads (d_model must divide evenly)
    mlp_ratio: int = 4  # feed-forward width = mlp_ratio * d_model
    dropout: float = 0.1  # dropout on residual branches (training only)
    num_faults: int = 0  # fault-head outputs (0: no fault head)
    fault_tokens: bool = False  # add the fault head's estimate to every soft token
    dtype: Any = jnp.float32  # compute dtype
    param_dtype: Any = jnp.float32  # parameter dtype


class EmbedScale(nnx.Variable):
    """A measured constant stored with the model (checkpointed, never trained)."""


def embedding_rms(embedding_table: Any) -> float:
    """RMS of an LLM token-embedding table [V, D]: sqrt(mean(E ** 2)), accumulated in float32."""
    table = jnp.asarray(embedding_table)
    if table.ndim != 2 or table.size == 0:
        raise ValueError(f"embedding table must be a non-empty [V, D] array, got {table.shape}")
    rms = float(jnp.sqrt(jnp.mean(jnp.square(table.astype(jnp.float32)))))
    if not np.isfinite(rms) or rms <= 0.0:
        raise ValueError(f"embedding table RMS is {rms}; expected a positive finite value")
    return rms


class BridgeLayer(nnx.Module):
    """Pre-LN cross-attention layer: q + Drop(Attn(LN q, LN ctx)); q + Drop(FFN(LN q))."""

    def __init__(self, config: BridgeConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
        self.query_norm = nnx.LayerNorm(config.d_model, **kw)
        self.context_norm = nnx.LayerNorm(config.d_model, **kw)
        self.attn = MultiHeadAttention(config.d_model, config.num_heads, **kw)
        self.mlp_norm = nnx.LayerNorm(config.d_model, **kw)
        self.mlp = FeedForward(config.d_model, config.mlp_ratio * config.d_model, **kw)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)

    def __call__(self, queries: jax.Array, context: jax.Array, mask: jax.Array, *,
                 deterministic: bool) -> tuple[jax.Array, jax.Array]:
        """queries [B, Q, D], context [B, T, D], mask [B, T] -> (queries, weights [B, H, Q, T])."""
        attended, weights = self.attn(self.query_norm(queries), self.context_norm(context), mask,
                                      return_weights=True)
        queries = queries + self.dropout(attended, deterministic=deterministic)
        queries = queries + self.dropout(self.mlp(self.mlp_norm(queries)),
                                         deterministic=deterministic)
        return queries, weights


class WaveBridge(nnx.Module):
    """Cross-attention bridge from encoder outputs to `num_queries` LLM soft tokens."""

    def __init__(self, config: BridgeConfig, *, embed_rms: float, rngs: nnx.Rngs):
        embed_rms = float(embed_rms)
        if not np.isfinite(embed_rms) or embed_rms <= 0.0:
            raise ValueError(f"embed_rms must be a positive finite float, got {embed_rms}")
        self.config = config
        kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
        self.fuse = nnx.Linear(config.d_model + config.state_dim, config.d_model, **kw)
        self.queries = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (config.num_queries, config.d_model),
                                     config.param_dtype))  # [Q, D]
        self.layers = nnx.List([BridgeLayer(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = nnx.LayerNorm(config.d_model, **kw)
        self.to_llm = nnx.Linear(config.d_model, config.llm_dim, **kw)
        self.gate = nnx.Param(jnp.zeros((config.llm_dim,), config.param_dtype))  # [llm_dim]
        self.embed_rms = EmbedScale(jnp.asarray(embed_rms, jnp.float32))
        self.fault_head = (nnx.Linear(config.d_model, config.num_faults, **kw)
                           if config.num_faults > 0 else None)
        if config.fault_tokens and config.num_faults <= 0:
            raise ValueError("config field 'bridge.fault_tokens': needs the fault head "
                             "(train.fault_loss_weight > 0)")
        # [F, llm_dim], one direction per fault; zero at first, so the language model starts
        # from the soft tokens it would get without it.
        self.fault_embed = (nnx.Param(jnp.zeros((config.num_faults, config.llm_dim),
                                                config.param_dtype))
                            if config.fault_tokens else None)

    def events(self, phi: jax.Array, dynamic_state: jax.Array, mask: jax.Array, *,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """phi [B, T, d_model], dynamic_state [B, T, state_dim], mask [B, T] bool (True = real).

        Returns the event states [B, num_queries, d_model] (after the final LayerNorm) and the
        attention weights [B, num_layers, num_queries, T] averaged over heads (zero on padding).
        """
        cfg = self.config
        if phi.shape[:2] != dynamic_state.shape[:2] or phi.shape[:2] != mask.shape:
            raise ValueError(f"phi {phi.shape}, dynamic_state {dynamic_state.shape} and mask "
                             f"{mask.shape} must share [B, T]")
        mask = mask.astype(bool)
        fused = jnp.concatenate([phi, dynamic_state], axis=-1).astype(cfg.dtype)
        context = self.fuse(fused)  # [B, T, D]
        context = context + sinusoidal_positions(phi.shape[1], cfg.d_model).astype(cfg.dtype)
        queries = jnp.broadcast_to(self.queries[...].astype(cfg.dtype),
                                   (phi.shape[0], cfg.num_queries, cfg.d_model))  # [B, Q, D]
        attention = []
        for layer in self.layers:
            queries, weights = layer(queries, context, mask, deterministic=deterministic)
            attention.append(weights.mean(axis=1))  # [B, Q, T]
        return self.final_norm(queries), jnp.stack(attention, axis=1)  # [B, Q, D], [B, L, Q, T]

    def project(self, events: jax.Array) -> jax.Array:
        """Event states [B, Q, d_model] -> soft tokens [B, Q, llm_dim] in the compute dtype
        (with `fault_tokens`, plus the fault estimate on every token)."""
        tokens = self.to_llm(events).astype(jnp.float32)  # [B, Q, llm_dim]
        tokens = tokens * jax.lax.rsqrt(jnp.mean(jnp.square(tokens), -1, keepdims=True) + _RMS_EPS)
        scale = self.embed_rms[...] * (1.0 + jnp.tanh(self.gate[...].astype(jnp.float32)))
        tokens = tokens * scale
        if self.fault_embed is not None:
            # The head learns from the fault loss alone; the text loss learns to read it.
            probs = jax.nn.sigmoid(jax.lax.stop_gradient(self.fault_logits(events)))  # [B, F]
            tokens = tokens + (probs @ self.fault_embed[...].astype(jnp.float32))[:, None, :]
        return tokens.astype(self.config.dtype)

    def fault_logits(self, events: jax.Array) -> jax.Array:
        """Event states [B, Q, d_model] -> fault logits [B, num_faults] (float32)."""
        if self.fault_head is None:
            raise ValueError("this bridge has no fault head (BridgeConfig.num_faults is 0)")
        return self.fault_head(events.mean(axis=1)).astype(jnp.float32)  # [B, F]

    def __call__(self, phi: jax.Array, dynamic_state: jax.Array, mask: jax.Array, *,
                 deterministic: bool = True, return_attention: bool = False):
        """phi [B, T, d_model], dynamic_state [B, T, state_dim], mask [B, T] bool (True = real).

        Returns soft tokens [B, num_queries, llm_dim]; with return_attention also the attention
        weights [B, num_layers, num_queries, T] averaged over heads (zero on padded frames).
        """
        events, attention = self.events(phi, dynamic_state, mask, deterministic=deterministic)
        soft_tokens = self.project(events)  # [B, Q, llm_dim]
        if return_attention:
            return soft_tokens, attention
        return soft_tokens
