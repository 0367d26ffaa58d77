"""WaveLLM: the composed model, motion encoder -> bridge -> soft tokens -> Phi-3 (+ LoRA).

The language model reads one sequence per clip (batch format: data/batch.py):

    [ soft tokens (S = bridge.num_queries) | tokens (prompt + target + <|end|>, right-padded) ]
    positions 0 .. S + L - 1,   attention mask [ones(S) | token_mask]

The forward pass returns `Outputs`: the logits aligned with the tokens (the logit predicting
tokens[:, t] sits at sequence position S + t - 1, so every target token, including the first
one after the prompt, is predicted from everything before it), the encoder's dynamics readout
and the bridge's fault logits. The losses over them live in training/loss.py.

Parameter paths: `encoder/...`, `bridge/...`, `llm/...` (Hugging Face names below `llm`, LoRA
deltas as `.../qkv_proj/lora_a`).

Models never load files: `build_wavellm` takes an already loaded language model
(`wavepose_jax.run` loads weights, adapters and checkpoints).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from wavepose_jax import sharding as sharding_lib
from wavepose_jax.models.bridge import BridgeConfig, WaveBridge, embedding_rms
from wavepose_jax.models.encoder import EncoderConfig, WavePoseEncoder
from wavepose_jax.models.lora import LoraConfig, apply_lora, is_lora_path
from wavepose_jax.models.phi3 import Phi3Config, Phi3ForCausalLM


class Outputs(NamedTuple):
    """What one forward pass of `WaveLLM` returns (the losses in training/loss.py read it)."""

    logits: jax.Array  # [B, L, V] f32: logits[:, t] predicts tokens[:, t] (or [B, K, V]: the
    #                   token at target_pos[:, k], when the call was given target positions)
    dynamics: jax.Array  # [B, T, C + 2] f32: encoder readout of dynamic_state (velocity, phase)
    fault_logits: jax.Array | None  # [B, F] f32 from the bridge's fault head, or None without one


class WaveLLM(nnx.Module):
    """Encoder + bridge + language model: motion -> soft tokens -> next-token logits."""

    def __init__(self, encoder: WavePoseEncoder, bridge: WaveBridge, llm: Phi3ForCausalLM):
        self.encoder = encoder
        self.bridge = bridge
        self.llm = llm

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

    def __call__(self, waves: jax.Array, frame_mask: jax.Array, tokens: jax.Array,
                 token_mask: jax.Array, target_pos: jax.Array | None = None, *,
                 deterministic: bool = True) -> Outputs:
        """One teacher-forced pass over [soft tokens | tokens].

        Args:
          waves: [B, T, 7] normalised signals; frame_mask: [B, T] (True = real frame).
          tokens: [B, L] prompt + target ids, right-padded; token_mask: [B, L] (True = real).
          target_pos: [B, K] positions in `tokens` to predict (`Batch.target_pos`): the logits
            are computed there only, [B, K, V]; None: at every position, [B, L, V].
          deterministic: False turns dropout on (encoder, bridge, LoRA).
        """
        frame_mask = jnp.asarray(frame_mask).astype(bool)
        phi, state = self.encoder(waves, frame_mask, deterministic=deterministic)
        events, _ = self.bridge.events(phi, state, frame_mask,
                                       deterministic=deterministic)  # [B, S, d_bridge]
        soft = self.bridge.project(events)  # [B, S, D]

        b, s = soft.shape[:2]
        length = tokens.shape[1]
        text = self.llm.embed(tokens)  # [B, L, D]
        inputs = jnp.concatenate([soft.astype(text.dtype), text], axis=1)  # [B, S + L, D]
        attention_mask = jnp.concatenate(
            [jnp.ones((b, s), bool), jnp.asarray(token_mask).astype(bool)], axis=1)  # [B, S + L]
        positions = jnp.broadcast_to(jnp.arange(s + length, dtype=jnp.int32), (b, s + length))
        llm = nnx.view(self.llm, deterministic=deterministic, raise_if_not_found=False)
        hidden = llm(inputs_embeds=inputs, attention_mask=attention_mask, positions=positions,
                     with_logits=False).hidden  # [B, S + L, D]
        # The hidden state predicting tokens[:, t] sits at sequence position S + t - 1.
        hidden = hidden[:, s - 1:s - 1 + length]  # [B, L, D]
        if target_pos is not None:
            hidden = jnp.take_along_axis(hidden, jnp.asarray(target_pos)[..., None],
                                         axis=1)  # [B, K, D]
        logits = llm.logits(hidden)  # [B, K or L, V] f32
        fault_logits = (None if self.bridge.fault_head is None
                        else self.bridge.fault_logits(events))
        return Outputs(logits=logits, dynamics=self.encoder.dynamics(state),
                       fault_logits=fault_logits)


# ------------------------------------------------------------------------------------------------
# Construction


@dataclasses.dataclass(frozen=True)
class WaveLLMSpec:
    """What a WaveLLM is built from besides its base: encoder, bridge and LoRA hyper-parameters
    and the seed of the new parameters (`spec.RunSpec.model` makes it from a run's settings;
    the bridge's `llm_dim` is taken from the base when the model is built)."""

    encoder: EncoderConfig
    bridge: BridgeConfig
    lora: LoraConfig
    seed: int


def create_wavellm(spec: WaveLLMSpec, llm_config: Phi3Config, embed_rms: float,
                   rngs: nnx.Rngs) -> WaveLLM:
    """A freshly initialised WaveLLM (random base) with LoRA attached; used under jit / eval_shape."""
    llm = Phi3ForCausalLM(llm_config, rngs=rngs)
    apply_lora(llm, spec.lora, rngs)
    encoder = WavePoseEncoder(spec.encoder, rngs=rngs)
    bridge = WaveBridge(dataclasses.replace(spec.bridge, llm_dim=llm_config.hidden_size),
                        embed_rms=embed_rms, rngs=rngs)
    return WaveLLM(encoder, bridge, llm)


def is_base_weight(path: tuple, variable: Any) -> bool:
    """Parameters of the pretrained language model itself (not LoRA, not encoder or bridge)."""
    return (len(path) > 0 and path[0] == "llm" and isinstance(variable, nnx.Param)
            and not is_lora_path(path))


def build_wavellm(spec: WaveLLMSpec, llm: Phi3ForCausalLM,
                  mesh: jax.sharding.Mesh | None = None) -> WaveLLM:
    """The trainable model: a loaded base + fresh encoder, bridge and LoRA deltas.

    Args:
      spec: encoder, bridge and LoRA hyper-parameters and the seed of the new parameters.
      llm: the already loaded base language model (`run.load_base`, or a random model in tests).
      mesh: when given, base weights are placed by the sharding rules and the new parameters
        are initialised straight onto their shardings by a jitted init (no host copy).

    The bridge's output scale is the RMS of the loaded embedding table. The new parameters
    are drawn from `spec.seed`; the base weights are used as loaded (not copied).
    """
    embed_rms = embedding_rms(llm.model.embed_tokens.embedding[...])

    def create(key):
        params_key, dropout_key = jax.random.split(key)
        return create_wavellm(spec, llm.config, embed_rms,
                              nnx.Rngs(params=params_key, dropout=dropout_key))

    key = jax.random.key(spec.seed)
    model = nnx.eval_shape(lambda: create(key))  # abstract; nothing allocated
    new_filter = nnx.Not(is_base_weight)
    base = nnx.state(llm, nnx.Param)
    out_shardings = None
    if mesh is not None:
        abstract_new = nnx.state(model, new_filter)
        out_shardings = sharding_lib.param_shardings(abstract_new, mesh)
        base = jax.tree.map(sharding_lib.place, base, sharding_lib.param_shardings(base, mesh))

    # The random base drawn inside `create` is dead code: XLA removes it, only new leaves run.
    jit_kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
    init_new = jax.jit(lambda k: nnx.state(create(k), new_filter), **jit_kwargs)
    nnx.update(model, init_new(key))
    nnx.update(model.llm, base)
    return model


def param_counts(model: WaveLLM) -> dict[str, int]:
    """Parameter counts: base (pretrained LLM), lora, encoder, bridge."""
    def count(filter_):
        return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, filter_))))

    lora = nnx.All(nnx.Param, lambda path, _: is_lora_path(path))
    return {"base": count(is_base_weight), "lora": count(lora),
            "encoder": count(nnx.All(nnx.Param, nnx.PathContains("encoder"))),
            "bridge": count(nnx.All(nnx.Param, nnx.PathContains("bridge")))}
