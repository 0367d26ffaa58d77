"""WaveLLM: the composed model, motion encoder -> bridge -> soft tokens -> Phi-3 (+ LoRA).

The language model reads one sequence per clip (batch format: data/pipeline.py):

    [ soft tokens (S = bridge.num_queries) | tokens (prompt + target + <|end|>, right-padded) ]
    positions 0 .. S + L - 1,   attention mask [ones(S) | token_mask]

The logit predicting tokens[:, t] sits at sequence position S + t - 1, so every target token,
including the first one after the prompt, is predicted from everything before it. Labels exist
only where `loss_mask` is set (the feedback text and its closing <|end|>); prompt and padding
never enter the loss.

`__call__` returns `LossTerms` (sums, not means) so the train step divides by the token count
of the global batch: exact with padding, padded examples and gradient accumulation.

Two auxiliary losses ground the motion path (each on when its weight is > 0): the encoder's
wave-dynamics loss on `dynamic_state`, and the bridge's fault loss, a masked BCE of the fault
head's logits against the clip's fault labels (`faults` / `fault_mask` of the batch, global
`wavepose_jax.faults.FAULTS` order).

Parameter paths: `encoder/...`, `bridge/...`, `llm/...` (Hugging Face names below `llm`, LoRA
deltas as `.../qkv_proj/lora_a`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wavepose_jax import hf
from wavepose_jax import peft_io
from wavepose_jax import sharding as sharding_lib
from wavepose_jax.faults import FAULTS
from wavepose_jax.models.bridge import BridgeConfig, WaveBridge, embedding_rms
from wavepose_jax.models.encoder import EncoderConfig, WavePoseEncoder, wave_dynamics_targets
from wavepose_jax.models.lora import apply_lora
from wavepose_jax.models.phi3 import Phi3Config, Phi3ForCausalLM


class LossTerms(NamedTuple):
    """Loss sums of one (micro-)batch; the train step normalises them."""

    ce_sum: jax.Array  # [] f32: sum over target tokens of CE x example_weight
    num_tokens: jax.Array  # [] f32: sum over target tokens of example_weight
    aux_loss: jax.Array  # [] f32: wave-dynamics loss of this batch (0 when its weight is 0)
    fault_loss: jax.Array  # [] f32: mean fault BCE over labelled entries (0 when its weight is 0)


class WaveLLM(nnx.Module):
    """Encoder + bridge + language model, trained end to end on masked next-token CE."""

    def __init__(self, encoder: WavePoseEncoder, bridge: WaveBridge, llm: Phi3ForCausalLM, *,
                 aux_loss_weight: float = 0.0, fault_loss_weight: float = 0.0,
                 fps: float | None = 30.0):
        """aux_loss_weight / fault_loss_weight: weights of the wave-dynamics and fault losses
        (the fault loss needs a bridge with a fault head); fps: frame rate of `waves`."""
        if fault_loss_weight > 0 and bridge.fault_head is None:
            raise ValueError("config field 'train.fault_loss_weight': > 0 needs a bridge with a "
                             "fault head (bridge num_faults > 0)")
        self.encoder = encoder
        self.bridge = bridge
        self.llm = llm
        self.aux_loss_weight = float(aux_loss_weight)
        self.fault_loss_weight = float(fault_loss_weight)
        self.fps = fps

    @property
    def num_soft_tokens(self) -> int:
        return self.bridge.config.num_queries

    def soft_tokens(self, waves: jax.Array, frame_mask: jax.Array, return_attention: bool = False,
                    *, deterministic: bool = True):
        """waves [B, T, 7], frame_mask [B, T] -> soft tokens [B, S, D_llm] in the LLM dtype.

        With return_attention also the bridge attention [B, layers, S, T].
        """
        phi, state = self.encoder(waves, frame_mask, deterministic=deterministic)
        return self.bridge(phi, state, frame_mask, deterministic=deterministic,
                           return_attention=return_attention)

    def __call__(self, batch: dict[str, jax.Array], deterministic: bool = True) -> LossTerms:
        """Loss sums of a training batch (batch format: wavepose_jax/data/pipeline.py; keys below).

        Uses waves [B, T, 7], frame_mask [B, T], tokens / token_mask / loss_mask [B, L],
        example_weight [B], phase / phase_mask [B, T] when the auxiliary loss is on, and
        faults / fault_mask [B, F] when the fault loss is on (fault_loss is 0 without them).
        """
        waves, frame_mask = batch["waves"], batch["frame_mask"].astype(bool)
        tokens = batch["tokens"]  # [B, L]
        phi, state = self.encoder(waves, frame_mask, deterministic=deterministic)
        events, _ = self.bridge.events(phi, state, frame_mask,
                                       deterministic=deterministic)  # [B, S, d_bridge]
        soft = self.bridge.project(events)  # [B, S, D]

        b, s = soft.shape[:2]
        length = tokens.shape[1]
        text = self.llm.embed(tokens)  # [B, L, D]
        inputs = jnp.concatenate([soft.astype(text.dtype), text], axis=1)  # [B, S + L, D]
        attention_mask = jnp.concatenate(
            [jnp.ones((b, s), bool), batch["token_mask"].astype(bool)], axis=1)  # [B, S + L]
        positions = jnp.broadcast_to(jnp.arange(s + length, dtype=jnp.int32), (b, s + length))
        llm = nnx.view(self.llm, deterministic=deterministic, raise_if_not_found=False)
        logits = llm(inputs_embeds=inputs, attention_mask=attention_mask,
                     positions=positions)  # [B, S + L, V] f32
        logits = logits[:, s - 1:s - 1 + length].astype(jnp.float32)  # [B, L, V]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens)  # [B, L]
        example_weight = batch["example_weight"].astype(jnp.float32)  # [B]
        weight = (batch["loss_mask"].astype(bool) & batch["token_mask"].astype(bool))
        weight = weight.astype(jnp.float32) * example_weight[:, None]  # [B, L]
        ce_sum = jnp.sum(jnp.where(weight > 0, ce, 0.0) * weight)

        aux = jnp.zeros((), jnp.float32)
        if self.aux_loss_weight > 0:
            real = frame_mask & (example_weight > 0)[:, None]  # [B, T]
            targets = wave_dynamics_targets(waves, real, self.fps, batch.get("phase"),
                                            batch.get("phase_mask"))
            aux = self.encoder.aux_loss(state, targets, real)
        fault = jnp.zeros((), jnp.float32)
        if self.fault_loss_weight > 0 and "faults" in batch:
            fault = fault_bce(self.bridge.fault_logits(events), batch["faults"],
                              batch["fault_mask"].astype(bool) & (example_weight > 0)[:, None])
        return LossTerms(ce_sum=ce_sum, num_tokens=jnp.sum(weight), aux_loss=aux,
                         fault_loss=fault)


def fault_bce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean binary cross-entropy over the entries where mask is set (0 when none is).

    logits [B, F], labels [B, F] in {0, 1}, mask [B, F] bool -> [] float32.
    """
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                             labels.astype(jnp.float32))  # [B, F]
    mask = mask.astype(jnp.float32)
    return jnp.sum(bce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


# ------------------------------------------------------------------------------------------------
# Construction


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str, field: str) -> Any:
    """'bfloat16' -> jnp.bfloat16; a ValueError naming the config field otherwise."""
    try:
        return _DTYPES[str(name)]
    except KeyError:
        raise ValueError(f"config field '{field}': unknown dtype {name!r} "
                         f"(choose from {sorted(_DTYPES)})") from None


def llm_overrides(config: Any) -> dict[str, Any]:
    """Phi3Config compute settings from `config.llm` (dtype, param_dtype, remat, attention)."""
    c = config.llm
    return dict(dtype=dtype_from_name(c.dtype, "llm.dtype"),
                param_dtype=dtype_from_name(c.param_dtype, "llm.param_dtype"),
                remat=bool(c.remat), attention_impl=c.attention_impl or None)


def encoder_config(config: Any) -> EncoderConfig:
    return EncoderConfig(**config.encoder.to_dict())


def bridge_config(config: Any, llm_dim: int) -> BridgeConfig:
    """The bridge of a run: a fault head over the global vocabulary iff the fault loss is on."""
    with_head = float(config.train.get("fault_loss_weight", 0.0)) > 0
    return BridgeConfig(llm_dim=llm_dim, num_faults=len(FAULTS) if with_head else 0,
                        **config.bridge.to_dict())


def create_wavellm(config: Any, llm_config: Phi3Config, embed_rms: float,
                   rngs: nnx.Rngs) -> WaveLLM:
    """A freshly initialised WaveLLM (random base) with LoRA attached; used under jit / eval_shape."""
    llm = Phi3ForCausalLM(llm_config, rngs=rngs)
    apply_lora(llm, config.lora, rngs)
    encoder = WavePoseEncoder(encoder_config(config), rngs=rngs)
    bridge = WaveBridge(bridge_config(config, llm_config.hidden_size), embed_rms=embed_rms,
                        rngs=rngs)
    return WaveLLM(encoder, bridge, llm, aux_loss_weight=config.train.aux_loss_weight,
                   fault_loss_weight=config.train.get("fault_loss_weight", 0.0),
                   fps=config.data.target_fps or 30.0)


def is_base_weight(path: tuple, variable: Any) -> bool:
    """Parameters of the pretrained language model itself (not LoRA, not encoder or bridge)."""
    return (len(path) > 0 and path[0] == "llm" and isinstance(variable, nnx.Param)
            and path[-1] not in ("lora_a", "lora_b"))


def build_wavellm(config: Any, llm: Phi3ForCausalLM | None = None,
                  mesh: jax.sharding.Mesh | None = None) -> WaveLLM:
    """The trainable model: pretrained base + fresh encoder, bridge and LoRA deltas.

    Args:
      config: the run config (llm, lora, encoder, bridge, data, train groups).
      llm: an already loaded base (e.g. a tiny random model in tests); default: loaded with
        `hf.load_pretrained(config.llm.path)`.
      mesh: when given, base weights are placed by the sharding rules and the new parameters
        are initialised straight onto their shardings by a jitted init (no host copy).

    The bridge's output scale is the RMS of the loaded embedding table. The new parameters
    are drawn from `config.train.seed`; the base weights are used as loaded (not copied).
    """
    if llm is None:
        llm = hf.load_pretrained(config.llm.path, mesh=mesh, **llm_overrides(config))
    embed_rms = embedding_rms(llm.model.embed_tokens.embedding[...])

    def create(key):
        params_key, dropout_key = jax.random.split(key)
        return create_wavellm(config, llm.config, embed_rms,
                              nnx.Rngs(params=params_key, dropout=dropout_key))

    key = jax.random.key(int(config.train.seed))
    model = nnx.eval_shape(lambda: create(key))  # abstract; nothing allocated
    new_filter = nnx.Not(is_base_weight)
    base = nnx.state(llm, nnx.Param)
    out_shardings = None
    if mesh is not None:
        abstract_new = nnx.state(model, new_filter)
        out_shardings = sharding_lib.param_shardings(abstract_new, mesh)
        base = jax.tree.map(_place, base, sharding_lib.param_shardings(base, mesh))

    # The random base drawn inside `create` is dead code: XLA removes it, only new leaves run.
    jit_kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
    init_new = jax.jit(lambda k: nnx.state(create(k), new_filter), **jit_kwargs)
    nnx.update(model, init_new(key))
    nnx.update(model.llm, base)
    if config.llm.get("adapter"):
        peft_io.load_peft_adapter(model.llm, config.llm.adapter)
    return model


def _place(x: jax.Array, sharding: jax.sharding.Sharding) -> jax.Array:
    """An array onto `sharding`; across processes each one slices its identical host copy."""
    if x.sharding == sharding:
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def param_counts(model: WaveLLM) -> dict[str, int]:
    """Parameter counts: base (pretrained LLM), lora, encoder, bridge."""
    def count(filter_):
        return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, filter_))))

    lora = nnx.All(nnx.Param, lambda path, _: path[-1] in ("lora_a", "lora_b"))
    return {"base": count(is_base_weight), "lora": count(lora),
            "encoder": count(nnx.All(nnx.Param, nnx.PathContains("encoder"))),
            "bridge": count(nnx.All(nnx.Param, nnx.PathContains("bridge")))}


def with_llm_config(llm_config: Phi3Config, config: Any) -> Phi3Config:
    """`llm_config` with the compute settings of `config.llm`."""
    return dataclasses.replace(llm_config, **llm_overrides(config))
