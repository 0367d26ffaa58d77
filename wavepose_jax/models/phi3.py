"""Phi-3 decoder-only language model in Flax NNX.

Numerically follows transformers' PyTorch ``Phi3ForCausalLM``: RMSNorm in fp32, rotate-half
RoPE (plain or LongRoPE, optionally partial), grouped-query attention with a fused ``qkv_proj``,
SwiGLU MLP with a fused ``gate_up_proj``, optional sliding window and tied embeddings.

Attribute paths mirror the Hugging Face parameter names (``model.layers[i].self_attn.qkv_proj``
...), so checkpoint conversion is a rename plus a transpose (see ``wavepose_jax/hf.py``).

Two forms of the decoder stack (``Phi3Config.scan_layers``):

* unrolled (default): ``model.layers`` is a list of ``Phi3DecoderLayer``; a Python loop calls
  them, so the compiled program holds one copy of the layer per layer.
* scanned: ``model.layers`` is ONE ``Phi3DecoderLayer`` whose parameters carry a leading layer
  axis ([L, ...], made by ``nnx.vmap`` over split RNG keys) and ``jax.lax.scan`` runs it L
  times. Every per-layer computation, including a backend's widening of bf16 weights for its
  matmuls, then happens inside the loop body for one layer at a time, and the program compiles
  one layer instead of L. The numbers are the same as the unrolled form's.

  Checkpoints store Hugging Face names either way (``wavepose_jax/hf.py`` maps
  ``model.layers.{i}.*`` to slot i of the stacked leaf); the KV cache of the scanned form is
  stacked as well ([L, B*K, S, H]; see ``Cache``). With a 16-bit ``param_dtype`` the stacked
  weights (and a 16-bit cache) are stored as their raw bits, uint16 (``stores_bits``; see
  ``BITS`` below for why); ``from_bits`` reads them.

LongRoPE factor choice: the long factors are used for a sequence whose largest position + 1
exceeds ``original_max_position_embeddings``, the short ones otherwise. The choice is made per
sequence of the batch (a batch row gets the logits it would get alone). During cached decoding
the choice follows the position being decoded, and keys already in the cache keep the rotation
they were written with.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

_ACTIVATIONS = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
_LONGROPE_ALIASES = ("longrope", "su", "yarn")  # Phi-3 configs spell LongRoPE these ways.


@dataclasses.dataclass(frozen=True)
class LongRopeScaling:
    """Hashable form of a ``rope_scaling`` entry of type ``longrope``."""

    short_factor: tuple[float, ...]
    long_factor: tuple[float, ...]
    factor: float | None = None  # Explicit scale; default max_position / original_max.
    attention_factor: float | None = None  # Explicit cos/sin multiplier; default from `factor`.


@dataclasses.dataclass(frozen=True)
class Phi3Config:
    """Phi-3 hyper-parameters (Hugging Face names) plus compute settings."""

    vocab_size: int = 32064
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim_override: int | None = None  # HF `head_dim` when it is not hidden / heads.
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: LongRopeScaling | None = None  # None: plain RoPE.
    partial_rotary_factor: float = 1.0  # Fraction of head_dim that is rotated.
    max_position_embeddings: int = 4096
    original_max_position_embeddings: int = 4096
    sliding_window: int | None = None  # Keys at distance >= window are masked.
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    # Kept for the checkpoint's config.json; dropout is not applied by this implementation.
    attention_dropout: float = 0.0
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 32000
    pad_token_id: int | None = 32000
    # Compute settings (not part of the HF config).
    dtype: Any = jnp.float32  # Activations / matmul inputs.
    param_dtype: Any = jnp.float32  # Stored parameters.
    remat: bool = False  # Rematerialise each decoder layer in the backward pass.
    scan_layers: bool = False  # One stacked layer run by lax.scan (params [L, ...]); see docstring.
    attention_impl: str | None = None  # jax.nn.dot_product_attention: None / 'xla' / 'cudnn'.

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @classmethod
    def from_hf(cls, hf: dict, **overrides) -> "Phi3Config":
        """Builds a config from a Hugging Face ``config.json`` dict (legacy or 5.x rope layout).

        Raises ValueError naming the offending field.
        """
        model_type = hf.get("model_type")
        if model_type != "phi3":
            raise ValueError(f"model_type: expected 'phi3', got {model_type!r}")
        archs = hf.get("architectures") or ["Phi3ForCausalLM"]
        if "Phi3ForCausalLM" not in archs:
            raise ValueError(f"architectures: expected Phi3ForCausalLM, got {archs}")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in hf]
        if missing:
            raise ValueError(f"{missing[0]}: missing")
        rope = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
        theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
        partial = float(rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        max_pos = int(hf.get("max_position_embeddings", 4096))
        orig_max = int(hf.get("original_max_position_embeddings",
                              rope.get("original_max_position_embeddings", max_pos)))
        scaling = None
        if rope_type in _LONGROPE_ALIASES:
            try:
                scaling = LongRopeScaling(
                    short_factor=tuple(float(f) for f in rope["short_factor"]),
                    long_factor=tuple(float(f) for f in rope["long_factor"]),
                    factor=None if rope.get("factor") is None else float(rope["factor"]),
                    attention_factor=(None if rope.get("attention_factor") is None
                                      else float(rope["attention_factor"])))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"rope_scaling: invalid longrope entry ({e!r})") from None
        elif rope_type != "default":
            raise ValueError(f"rope_scaling.type: expected 'longrope' or none, got {rope_type!r}")
        act = hf.get("hidden_act", "silu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act: unsupported {act!r} (supported: {sorted(_ACTIVATIONS)})")
        eos = hf.get("eos_token_id", 32000)
        kwargs = dict(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_hidden_layers=int(hf["num_hidden_layers"]),
            num_attention_heads=int(hf["num_attention_heads"]),
            num_key_value_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
            head_dim_override=hf.get("head_dim"),
            hidden_act=act,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
            rope_theta=theta,
            rope_scaling=scaling,
            partial_rotary_factor=partial,
            max_position_embeddings=max_pos,
            original_max_position_embeddings=orig_max,
            sliding_window=hf.get("sliding_window"),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            attention_dropout=float(hf.get("attention_dropout", 0.0)),
            resid_pdrop=float(hf.get("resid_pdrop", 0.0)),
            embd_pdrop=float(hf.get("embd_pdrop", 0.0)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=hf.get("pad_token_id"),
        )
        kwargs.update(overrides)
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Raises ValueError naming the first inconsistent field."""
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads: {self.num_key_value_heads} does not divide "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.rotary_dim % 2:
            raise ValueError(f"partial_rotary_factor: rotary dim {self.rotary_dim} is odd")
        if self.rope_scaling is not None:
            for name in ("short_factor", "long_factor"):
                n = len(getattr(self.rope_scaling, name))
                if n != self.rotary_dim // 2:
                    raise ValueError(f"rope_scaling.{name}: length {n}, expected {self.rotary_dim // 2}")

    def to_hf(self) -> dict:
        """Returns ``config.json`` content that transformers' ``Phi3Config`` accepts."""
        hf = {
            "architectures": ["Phi3ForCausalLM"],
            "model_type": "phi3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "hidden_act": self.hidden_act,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "partial_rotary_factor": self.partial_rotary_factor,
            "max_position_embeddings": self.max_position_embeddings,
            "original_max_position_embeddings": self.original_max_position_embeddings,
            "sliding_window": self.sliding_window,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "attention_dropout": self.attention_dropout,
            "resid_pdrop": self.resid_pdrop,
            "embd_pdrop": self.embd_pdrop,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": (list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
                             else self.eos_token_id),
            "pad_token_id": self.pad_token_id,
            "use_cache": True,
            "torch_dtype": jnp.dtype(self.param_dtype).name,
            "rope_scaling": None,
        }
        if self.head_dim_override is not None:
            hf["head_dim"] = self.head_dim_override
        if self.rope_scaling is not None:
            s = self.rope_scaling
            hf["rope_scaling"] = {"type": "longrope", "rope_type": "longrope",
                                  "short_factor": list(s.short_factor),
                                  "long_factor": list(s.long_factor)}
            if s.factor is not None:
                hf["rope_scaling"]["factor"] = s.factor
            if s.attention_factor is not None:
                hf["rope_scaling"]["attention_factor"] = s.attention_factor
        return hf


def in_stacked_layers(path) -> bool:
    """Whether a parameter path (keys, or a '/'-joined string) lies in a scanned layer stack,
    whose leaves carry a leading layer axis: `layers` followed by a name, not a layer index
    (`model/layers/mlp/down_proj/kernel` [L, I, D] vs `model/layers/3/mlp/down_proj/kernel`)."""
    parts = path.split("/") if isinstance(path, str) else [str(getattr(k, "key", k)) for k in path]
    return any(a == "layers" and not b.isdigit() for a, b in zip(parts, parts[1:]))


# ------------------------------------------------------------------------------------------------
# RoPE


def _inv_freq(config: Phi3Config, factors: tuple[float, ...] | None) -> np.ndarray:
    """Inverse frequencies [rotary_dim // 2] in float32, computed as transformers does."""
    dim = config.rotary_dim
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    base = np.float32(config.rope_theta) ** exponent
    if factors is not None:
        base = np.asarray(factors, np.float32) * base
    return (np.float32(1.0) / base).astype(np.float32)


def rope_attention_factor(config: Phi3Config) -> float:
    """The LongRoPE multiplier on cos/sin (1.0 for plain RoPE)."""
    s = config.rope_scaling
    if s is None:
        return 1.0
    if s.attention_factor is not None:
        return s.attention_factor
    orig = config.original_max_position_embeddings
    factor = s.factor if s.factor is not None else config.max_position_embeddings / orig
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))


def rope_cos_sin(config: Phi3Config, positions: jax.Array, valid: jax.Array):
    """cos, sin [B, T, rotary_dim] in float32.

    positions: [B, T] int; valid: [B, T] bool (tokens that count for the long/short choice).
    """
    positions = positions.astype(jnp.float32)
    if config.rope_scaling is None:
        inv_freq = jnp.asarray(_inv_freq(config, None))[None, :]  # [1, R/2]
    else:
        short = jnp.asarray(_inv_freq(config, config.rope_scaling.short_factor))
        long = jnp.asarray(_inv_freq(config, config.rope_scaling.long_factor))
        max_pos = jnp.max(jnp.where(valid, positions, 0.0), axis=1)  # [B]
        use_long = max_pos + 1 > config.original_max_position_embeddings  # [B]
        inv_freq = jnp.where(use_long[:, None], long[None], short[None])  # [B, R/2]
    freqs = positions[:, :, None] * inv_freq[:, None, :]  # [B, T, R/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, R]
    scale = rope_attention_factor(config)
    return jnp.cos(emb) * scale, jnp.sin(emb) * scale


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half RoPE on the first R dims of x [B, T, N, H]; cos/sin [B, T, R] (float32)."""
    rot = cos.shape[-1]
    x32 = x.astype(jnp.float32)
    x_rot, x_pass = x32[..., :rot], x32[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    out = x_rot * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return jnp.concatenate([out, x_pass], axis=-1).astype(x.dtype)


# ------------------------------------------------------------------------------------------------
# KV cache


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Cache:
    """Fixed-size key/value cache.

    Slots are written left to right; ``positions`` records the RoPE position of each slot's token
    (-1 for an empty slot or a padding token, which are never attended to).
    """

    # Unrolled stack: one [B*K, S, H] array per layer (row b * K + j: sequence b, key/value
    # head j); scanned stack: one [L, B*K, S, H] array (uint16 bits when the cache is 16-bit,
    # see `run_stacked`). Each (sequence, head) pair's keys and values are one contiguous
    # [S, H] matrix behind a single leading axis: a decoding step's attention is then a plain
    # batched matmul that reads the cache where the step wrote it. XLA:CPU copied the cache of
    # every layer for every token with [B, S, K, H] (into the matmul's layout) and, at batch 1,
    # with [B, K, S, H] (the update fused twice, once per consumer).
    k: tuple[jax.Array, ...] | jax.Array
    v: tuple[jax.Array, ...] | jax.Array
    positions: jax.Array  # [B, S] int32
    index: jax.Array  # [] int32, next slot to write

    @property
    def max_len(self) -> int:
        return self.positions.shape[1]

    def next_positions(self) -> jax.Array:
        """[B] int32: the position following each sequence's last cached token."""
        return jnp.max(self.positions, axis=1) + 1


class LMOutput(NamedTuple):
    """What `Phi3ForCausalLM` returns for one call."""

    logits: jax.Array | None  # [B, T, V] float32 (None when the call skipped them)
    hidden: jax.Array  # [B, T, D] final hidden states, after the last norm
    cache: Cache | None  # the cache with this call's keys and values (None without one)


# ------------------------------------------------------------------------------------------------
# Layers


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _lora_branch(h, a, b, scale: float, out_dtype):
    """scale * (h @ a) @ b: the LoRA branch of `Linear` (h the dropped-out input)."""
    return scale * jnp.dot(jnp.dot(h, a), b, preferred_element_type=out_dtype)


def _lora_branch_fwd(h, a, b, scale, out_dtype):
    z = jnp.dot(h, a)  # [..., r]
    return scale * jnp.dot(z, b, preferred_element_type=out_dtype), (h, a, b, z)


def _lora_branch_bwd(scale, out_dtype, res, g):
    """The gradients of `scale * (h @ a) @ b`, with both weight gradients written as plain
    row-major products: the thin [r, T] operand is transposed, never the wide [T, out] one
    (left to itself, XLA:CPU copied the whole output gradient into a transposed layout)."""
    h, a, b, z = res
    f32 = jnp.float32
    h2, z2 = h.reshape(-1, h.shape[-1]), z.reshape(-1, z.shape[-1])
    g2 = (scale * g).reshape(-1, g.shape[-1]).astype(b.dtype)
    dz = jnp.dot(g2, b.T, preferred_element_type=f32).astype(z.dtype)  # [T, r]
    zt, dzt = jax.lax.optimization_barrier((z2.T, dz.T))  # keep the thin transposes explicit
    db = jnp.dot(zt, g2, preferred_element_type=f32)  # [r, out]
    da = jnp.dot(dzt, h2, preferred_element_type=f32).T  # [in, r]
    dh = jnp.dot(dz, a.T, preferred_element_type=f32).reshape(h.shape)
    return dh.astype(h.dtype), da.astype(a.dtype), db.astype(b.dtype)


_lora_branch.defvjp(_lora_branch_fwd, _lora_branch_bwd)


class Linear(nnx.Module):
    """Bias-free dense layer, kernel [in, out], with an optional LoRA branch.

    LoRA is attached after construction by setting ``lora_a`` [in, r], ``lora_b`` [r, out]
    (``nnx.Param``), ``lora_scale`` and optionally ``lora_dropout``; then
    ``y = x @ kernel + lora_scale * (dropout(x) @ lora_a) @ lora_b``.
    """

    def __init__(self, in_features: int, out_features: int, *, dtype, param_dtype,
                 init_std: float, rngs: nnx.Rngs):
        init = jax.nn.initializers.normal(stddev=init_std)
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), param_dtype))
        self.dtype = dtype
        self.lora_a = nnx.data(None)
        self.lora_b = nnx.data(None)
        self.lora_scale = 1.0
        self.lora_dropout = nnx.data(None)

    def __call__(self, x: jax.Array, out_dtype=None) -> jax.Array:  # [..., in] -> [..., out]
        """out_dtype: accumulation/output dtype (default: the compute dtype)."""
        x = x.astype(self.dtype)
        y = jnp.dot(x, self.kernel[...].astype(self.dtype), preferred_element_type=out_dtype)
        if self.lora_a is not None:
            h = self.lora_dropout(x) if self.lora_dropout is not None else x
            delta = _lora_branch(h, self.lora_a[...].astype(self.dtype),
                                 self.lora_b[...].astype(self.dtype), float(self.lora_scale),
                                 out_dtype)
            y = y + delta.astype(y.dtype)
        return y


class RMSNorm(nnx.Module):
    """Root-mean-square norm computed in float32; param ``weight`` [D]."""

    def __init__(self, dim: int, eps: float, *, param_dtype):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:  # [..., D]
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(var + self.eps)
        return (y * self.weight[...].astype(jnp.float32)).astype(x.dtype)


class Phi3Attention(nnx.Module):
    """Grouped-query self-attention with fused qkv projection."""

    def __init__(self, config: Phi3Config, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        out = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, init_std=c.initializer_range, rngs=rngs)
        self.qkv_proj = Linear(c.hidden_size, out, **kw)
        self.o_proj = Linear(c.num_attention_heads * c.head_dim, c.hidden_size, **kw)

    def __call__(self, x, cos, sin, mask, kv_cache, index):
        """x [B, T, D]; cos/sin [B, T, R]; mask [B, 1, T, S] bool; kv_cache ([B*K,S,H] x2) | None."""
        c = self.config
        b, t, _ = x.shape
        n, kh, h = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        qkv = self.qkv_proj(x)  # [B, T, (N + 2K) H]
        q = qkv[..., : n * h].reshape(b, t, n, h)
        k = qkv[..., n * h: (n + kh) * h].reshape(b, t, kh, h)
        v = qkv[..., (n + kh) * h:].reshape(b, t, kh, h)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if kv_cache is None:
            out = self._attention(q, k, v, mask)
        else:
            kv_cache = tuple(  # [B*K, S, H]; the T new slots are written at `index`
                jax.lax.dynamic_update_slice(
                    c, new.swapaxes(1, 2).reshape(b * kh, t, h).astype(c.dtype), (0, index, 0))
                for c, new in zip(kv_cache, (k, v)))
            k, v = (c.astype(q.dtype) for c in kv_cache)
            if t == 1:
                out = _decode_attention(q, k, v, mask)
            else:  # a prompt: one transpose of the cache per call, then the fused path
                k, v = (c.reshape(b, kh, -1, h).swapaxes(1, 2) for c in (k, v))  # [B, S, K, H]
                out = self._attention(q, k, v, mask)
        return self.o_proj(out.reshape(b, t, n * h)), kv_cache

    def _attention(self, q, k, v, mask):
        """q [B, T, N, H], k/v [B, S, K, H] -> [B, T, N, H]."""
        # cuDNN's fused kernel targets long query blocks; a single query uses XLA.
        impl = None if q.shape[1] == 1 else self.config.attention_impl
        return jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask,
                                            implementation=impl)


def _decode_attention(q, k, v, mask):
    """Attention of one new token per sequence over the cache, in the cache's own layout.

    q [B, 1, N, H]; k/v [B*K, S, H]; mask [B, 1, 1, S] -> [B, 1, N, H]. The N query heads are
    grouped by the K key/value heads they share ([B*K, G, H]), so both products are plain
    batched matmuls over the cache's leading axis, reading it in place; the arithmetic is that
    of ``jax.nn.dot_product_attention``'s XLA path (float32 logits, softmax, probabilities in
    the compute dtype).
    """
    b, _, n, h = q.shape
    kh, s = k.shape[0] // b, k.shape[1]
    qg = q.reshape(b * kh, n // kh, h)  # [B*K, G, H]
    logits = jnp.einsum("ngh,nsh->ngs", qg, k, preferred_element_type=jnp.float32)
    logits = (logits * jnp.float32(1.0 / np.sqrt(h))).reshape(b, kh, n // kh, s)
    big_neg = -0.7 * float(jnp.finfo(jnp.float32).max)  # as jax.nn.dot_product_attention
    logits = jnp.where(mask[:, :, 0, None, :], logits, big_neg)  # mask [B, 1, 1, S]
    probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype).reshape(b * kh, n // kh, s)
    out = jnp.einsum("ngs,nsh->ngh", probs, v)  # [B*K, G, H]
    return out.reshape(b, 1, n, h)


class Phi3MLP(nnx.Module):
    """down(up * act(gate)) with fused gate_up projection."""

    def __init__(self, config: Phi3Config, *, rngs: nnx.Rngs):
        c = config
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, init_std=c.initializer_range, rngs=rngs)
        self.gate_up_proj = Linear(c.hidden_size, 2 * c.intermediate_size, **kw)
        self.down_proj = Linear(c.intermediate_size, c.hidden_size, **kw)
        self.act = c.hidden_act

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D]
        gate, up = jnp.split(self.gate_up_proj(x), 2, axis=-1)  # [B, T, I] each
        return self.down_proj(up * _ACTIVATIONS[self.act](gate))


class Phi3DecoderLayer(nnx.Module):
    def __init__(self, config: Phi3Config, *, rngs: nnx.Rngs):
        self.self_attn = Phi3Attention(config, rngs=rngs)
        self.mlp = Phi3MLP(config, rngs=rngs)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                       param_dtype=config.param_dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                                param_dtype=config.param_dtype)

    def __call__(self, x, cos, sin, mask, kv_cache, index):
        attn, kv_cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, index)
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv_cache


def _run_layer(layer, x, cos, sin, mask, kv_cache, index):
    return layer(x, cos, sin, mask, kv_cache, index)


# A scanned stack stores its 16-bit float weights (bf16 / f16) as the raw bits, uint16, and
# turns them back into floats one layer at a time inside the scan. XLA:CPU computes 16-bit float
# operations in float32: it widened a float stacked leaf whole, before the loop, to slice it,
# and kept that float32 copy from the forward to the backward pass (and out of a decoding
# loop), i.e. the base in float32 next to itself. Sliced as bits, only layer i's weights are
# widened, inside the loop. Bits must enter the compiled program as they are (a bitcast inside
# it is a copy of the whole leaf), hence the storage. Bits are never differentiated: a trained
# stacked weight is float32 (training/state.py converts it).
BITS = jnp.dtype(jnp.uint16)
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
_LAYER_WEIGHTS = "layer_weights"  # checkpoint name of one layer's weights inside the scan


def stores_bits(config: Phi3Config) -> bool:
    """Whether the stacked weights of `config` are stored as uint16 bits of `param_dtype`."""
    return config.scan_layers and jnp.dtype(config.param_dtype) in _HALF


def to_bits(x: jax.Array) -> jax.Array:
    """A bf16/f16 array as uint16 with the same bits (floats of other widths unchanged)."""
    return jax.lax.bitcast_convert_type(x, BITS) if jnp.dtype(x.dtype) in _HALF else x


def from_bits(x: jax.Array, dtype) -> jax.Array:
    """uint16 bits as `dtype` (a 16-bit float); any other array unchanged."""
    return jax.lax.bitcast_convert_type(x, dtype) if jnp.dtype(x.dtype) == BITS else x


def stacked_layers(config: Phi3Config, rngs: nnx.Rngs) -> Phi3DecoderLayer:
    """One decoder layer whose variables carry a leading layer axis [L, ...].

    ``nnx.vmap`` over L split RNG keys: layer i is drawn from its own key, as a list of
    independently initialised layers would be. 16-bit float parameters are then stored as
    their bits (`stores_bits`).
    """
    @nnx.split_rngs(splits=config.num_hidden_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs: nnx.Rngs) -> Phi3DecoderLayer:
        return Phi3DecoderLayer(config, rngs=rngs)

    layers = create(rngs)
    if stores_bits(config):
        for _, var in nnx.iter_graph(layers):
            if isinstance(var, nnx.Param):
                var.set_value(to_bits(var.get_value()))
    return layers


def _save_all_but_weights(prim, *_, **params) -> bool:
    """Remat policy of the scanned body without remat: every activation is saved for the
    backward pass, but neither a layer's weights nor their bitcast from bits, so the backward
    pass recomputes them from the scanned bits (a free bitcast) instead of reading a stacked
    copy of all layers' weights made by the forward pass."""
    if prim.name == "bitcast_convert_type":
        return False
    return not (prim.name == "name" and params.get("name") == _LAYER_WEIGHTS)


def run_stacked(layers: Phi3DecoderLayer, x, cos, sin, mask, kv, index, *, remat: bool,
                param_dtype, cache_dtype):
    """Runs a stacked layer (``stacked_layers``) over its leading axis with ``jax.lax.scan``.

    Args:
      layers: the stacked layer; parameters [L, ...] (uint16 ones hold `param_dtype` bits).
      x: [B, T, D] input hidden states; cos/sin [B, T, R]; mask [B, 1, T, S]; index [] int32.
      kv: None, or the stacked cache (k, v), each [L, B*K, S, H] (uint16: `cache_dtype`
        bits); the T new keys/values are written at slot ``index`` of layer i's cache inside
        the loop (in place).
      remat: rematerialise the loop body in the backward pass (``jax.checkpoint``).

    Returns:
      (x [B, T, D], the updated (k, v) or None). Non-parameter state of the layers (the
      LoRA dropout RNG counters) is written back to ``layers``.
    """
    graphdef, params, rest = nnx.split(layers, nnx.Param, ...)
    num_layers = jax.tree.leaves(params)[0].shape[0]
    t = x.shape[1]
    mutated = []  # set while tracing when the body changes non-parameter state (dropout RNGs)

    def body(carry, xs):
        x, kv = carry
        i, layer_params, layer_rest = xs
        layer_params = jax.tree.map(
            lambda w: checkpoint_name(from_bits(w, param_dtype), _LAYER_WEIGHTS), layer_params)
        layer = nnx.merge(graphdef, layer_params, layer_rest)
        layer_kv = None if kv is None else tuple(
            from_bits(jax.lax.dynamic_index_in_dim(c, i, 0, keepdims=False), cache_dtype)
            for c in kv)  # [B*K, S, H] each
        x, layer_kv = layer(x, cos, sin, mask, layer_kv, index)
        if kv is not None:  # write back only the T new slots of layer i
            kv = tuple(jax.lax.dynamic_update_slice(
                c, _store_like(c, jax.lax.dynamic_slice_in_dim(new, index, t, axis=1)),
                (i, 0, index, 0)) for c, new in zip(kv, layer_kv))
        _, _, new_rest = nnx.split(layer, nnx.Param, ...)
        if any(a is not b for a, b in zip(jax.tree.leaves(new_rest), jax.tree.leaves(layer_rest))):
            mutated.append(True)
        return (x, kv), new_rest

    # The backward pass reads each layer's weights again from the bits (never a stacked copy
    # kept from the forward pass); with remat it recomputes the activations as well.
    policy = jax.checkpoint_policies.nothing_saveable if remat else _save_all_but_weights
    body = jax.checkpoint(body, prevent_cse=False, policy=policy)
    (x, kv), rest = jax.lax.scan(body, (x, kv), (jnp.arange(num_layers), params, rest))
    if mutated:  # only then: a deterministic call (e.g. inside a decoding loop) mutates nothing
        nnx.update(layers, rest)
    return x, kv


def _store_like(stacked: jax.Array, new: jax.Array) -> jax.Array:
    """new [B*K, T, H] as one slot [1, B*K, T, H] of `stacked` (bits when it holds bits)."""
    new = new.astype(stacked.dtype) if stacked.dtype != BITS else to_bits(new)
    return new[None]


class Phi3Model(nnx.Module):
    """Embeddings, decoder stack (a list of layers, or one stacked layer) and final norm."""

    def __init__(self, config: Phi3Config, *, rngs: nnx.Rngs):
        self.config = config
        self.embed_tokens = nnx.Embed(
            config.vocab_size, config.hidden_size, dtype=config.dtype,
            param_dtype=config.param_dtype,
            embedding_init=jax.nn.initializers.normal(stddev=config.initializer_range), rngs=rngs)
        if config.scan_layers:
            self.layers = stacked_layers(config, rngs)
        else:
            self.layers = nnx.List([Phi3DecoderLayer(config, rngs=rngs)
                                    for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype=config.param_dtype)


class Phi3ForCausalLM(nnx.Module):
    """Phi-3 causal language model; parameter paths mirror Hugging Face names."""

    def __init__(self, config: Phi3Config, *, rngs: nnx.Rngs):
        config.validate()
        self.config = config
        self.model = Phi3Model(config, rngs=rngs)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, dtype=config.dtype,
                                  param_dtype=config.param_dtype,
                                  init_std=config.initializer_range, rngs=rngs)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        """Token embeddings [B, T, D] in the compute dtype (what ``inputs_embeds`` expects)."""
        return self.model.embed_tokens(input_ids).astype(self.config.dtype)

    def init_cache(self, batch_size: int, max_len: int, dtype=None) -> Cache:
        """An empty cache of ``max_len`` slots (dtype defaults to the compute dtype)."""
        c = self.config
        dtype = dtype or c.dtype
        shape = (batch_size * c.num_key_value_heads, max_len, c.head_dim)
        if c.scan_layers:  # [L, B*K, S, H]; a 16-bit cache of the compute dtype as bits
            as_bits = jnp.dtype(dtype) == jnp.dtype(c.dtype) and jnp.dtype(dtype) in _HALF
            stored = BITS if as_bits else dtype
            k = jnp.zeros((c.num_hidden_layers, *shape), stored)
            v = jnp.zeros((c.num_hidden_layers, *shape), stored)
        else:
            k = tuple(jnp.zeros(shape, dtype) for _ in range(c.num_hidden_layers))
            v = tuple(jnp.zeros(shape, dtype) for _ in range(c.num_hidden_layers))
        return Cache(k=k, v=v, positions=jnp.full((batch_size, max_len), -1, jnp.int32),
                     index=jnp.zeros((), jnp.int32))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Float32 logits [B, T, V] from final hidden states [B, T, D]."""
        if self.lm_head is None:
            w = self.model.embed_tokens.embedding[...].astype(self.config.dtype)  # [V, D]
            return jnp.einsum("btd,vd->btv", hidden, w, preferred_element_type=jnp.float32)
        return self.lm_head(hidden, out_dtype=jnp.float32)

    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, positions=None,
                 cache: Cache | None = None, with_logits: bool = True) -> LMOutput:
        """Runs the model.

        Args:
          input_ids: [B, T] int token ids, or None when ``inputs_embeds`` is given.
          attention_mask: [B, T], 1 for real tokens, 0 for padding (default: all real).
          inputs_embeds: [B, T, D] input embeddings instead of ids.
          positions: [B, T] RoPE positions; default ``cumsum(mask) - 1`` (continuing after the
            cache's last token when a cache is given).
          cache: a ``Cache``; the new keys/values are written at ``cache.index``.
          with_logits: compute the logits of every position; False leaves them to the caller
            (``logits(hidden)`` on the positions it needs).

        Returns:
          ``LMOutput``: float32 logits [B, T, V] (None without ``with_logits``), the final
          (normed) hidden states [B, T, D], and the new cache (None without ``cache``).
        """
        c = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("exactly one of input_ids / inputs_embeds must be given")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(c.dtype)
        b, t, _ = x.shape  # [B, T, D]
        mask = (jnp.ones((b, t), bool) if attention_mask is None
                else jnp.asarray(attention_mask).astype(bool))  # [B, T]
        if positions is None:
            start = jnp.zeros((b,), jnp.int32) if cache is None else cache.next_positions()
            positions = start[:, None] + jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1
            positions = jnp.maximum(positions, 0)
        positions = positions.astype(jnp.int32)  # [B, T]
        chunk_key_pos = jnp.where(mask, positions, -1)  # [B, T]

        if cache is None:
            index = jnp.zeros((), jnp.int32)
            key_pos = chunk_key_pos  # [B, S=T]
        else:
            index = cache.index
            key_pos = jax.lax.dynamic_update_slice(cache.positions, chunk_key_pos, (0, index))
        s = key_pos.shape[1]
        q_slot = index + jnp.arange(t)  # [T]
        attn_mask = (key_pos[:, None, :] >= 0) & (jnp.arange(s)[None, None, :] <= q_slot[None, :, None])
        if c.sliding_window is not None:
            attn_mask &= positions[:, :, None] - key_pos[:, None, :] < c.sliding_window
        attn_mask = attn_mask[:, None]  # [B, 1, T, S]

        cos, sin = rope_cos_sin(c, positions, mask)  # [B, T, R]
        # Rematerialisation only matters under a gradient; decoding with a cache (inside the
        # generator's lax loops, where nnx.remat could not write state back) runs plainly.
        remat = c.remat and cache is None
        if c.scan_layers:
            kv = None if cache is None else (cache.k, cache.v)  # [L, B*K, S, H] each
            x, kv = run_stacked(self.model.layers, x, cos, sin, attn_mask, kv, index,
                                remat=remat, param_dtype=c.param_dtype, cache_dtype=c.dtype)
            new_k, new_v = kv if cache is not None else (None, None)
        else:
            run = nnx.remat(_run_layer) if remat else _run_layer
            new_k, new_v = [], []
            for i, layer in enumerate(self.model.layers):
                kv = None if cache is None else (cache.k[i], cache.v[i])
                x, kv = run(layer, x, cos, sin, attn_mask, kv, index)
                if cache is not None:
                    new_k.append(kv[0])
                    new_v.append(kv[1])
            new_k, new_v = tuple(new_k), tuple(new_v)
        hidden = self.model.norm(x)  # [B, T, D]
        return LMOutput(
            logits=self.logits(hidden) if with_logits else None,  # [B, T, V]
            hidden=hidden,
            cache=None if cache is None else Cache(k=new_k, v=new_v, positions=key_pos,
                                                   index=index + t))
