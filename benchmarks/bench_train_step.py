"""Train-step speed: the project's jitted step (JAX) vs the same model in PyTorch, and both
against this CPU's measured matmul ceiling.

What runs (CPU, float32, one process, the same batch on both sides):

* JAX: exactly what `train.py` runs. `configs/base.py` (encoder 8 x 256, bridge 2 layers,
  8 soft tokens, LoRA r=32 / alpha=64 / dropout 0.05 on qkv_proj, o_proj, gate_up_proj,
  down_proj, AdamW in two groups with clipping, wave-dynamics loss weight 0.1, encoder and
  bridge dropout 0.1) with `llm.dtype = llm.param_dtype = float32`, the mesh of
  `sharding.make_mesh(config.mesh)`, `run.new_model` -> `training.state.create_train_state`
  -> `training.step.jit_train_step`, the batch a `data.batch.Batch` placed by
  `training.distributed.global_batch`.
* PyTorch: an encoder and a bridge written below with the same shapes and computation
  (mirroring `models/encoder.py` and `models/bridge.py`), transformers' `Phi3ForCausalLM`
  (its default attention), peft LoRA on the same four projections with the same rank, alpha
  and dropout, the same masked CE on target tokens plus the same wave-dynamics loss, global
  norm clipping and `torch.optim.AdamW` on the same trainable set and groups.
* The base: a Phi-3-shaped random model (hidden 512, 8 layers, 8 heads, intermediate 1536,
  vocab 32064) built by transformers, saved and loaded by the project's loader, so both sides
  hold the same base weights; the encoder, bridge and LoRA A weights are copied from JAX to
  torch. Before timing, the deterministic loss of both sides on the batch is compared
  (it must agree to 1e-4 relative), which checks that they compute the same model.
* The batch: 4 clips of 300 frames (210..300 real) and 256 text tokens (prompt ~150, target,
  then some padding), so the language model reads 8 + 256 = 264 positions per row.

Measured: the step time of each side (median of --repeats steps after --warmup steps, the two
sides' steps interleaved so both see the same background load), and the achieved FLOP/s
against the ceiling: the faster of a 4096 x 4096 fp32 matmul timed in JAX and in torch, in this
process.

FLOP convention (stated in the output): 2 FLOPs per multiply-add of every matmul the step
needs. Forward: every layer on every position; the LM head on the target positions only (the
loss reads no other logit; the JAX step computes only those, transformers computes all 264); attention scores and values in full (not halved for causality; both implementations
compute the full masked matrix). Backward: the input gradient of every matmul on the path to a
trainable weight (all of the language model: gradients must reach the soft tokens), and the
weight gradient of trainable weights only (encoder, bridge, LoRA; the frozen base needs none).
So the frozen base costs 4 FLOPs per weight per token, trainable weights 6. The PaLM-style
model FLOPs of `training/metrics.py` (6 N for every weight) and XLA's own count of the compiled
step are printed beside it for reference.

Usage:
  python benchmarks/bench_train_step.py [--repeats 5] [--write-readme]
  python benchmarks/bench_train_step.py --tiny           # seconds-long smoke run of the script
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import benchlib

README = Path(__file__).with_name("README.md")
MARK_START, MARK_END = "<!-- train-step-results -->", "<!-- /train-step-results -->"


# XLA CPU settings of this benchmark (set before jax is imported; see the README section).
XLA_CPU_FLAGS: tuple[str, ...] = ()


def _set_xla_flags() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in XLA_CPU_FLAGS if f.split("=")[0] not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    benchlib.quiet_openmp()


# ------------------------------------------------------------------------------------------------
# Shapes, batch and FLOPs


@dataclasses.dataclass(frozen=True)
class Shape:
    batch: int = 4
    frames: int = 300
    tokens: int = 256
    llm: dict = dataclasses.field(default_factory=lambda: dict(benchlib.PHI3_CPU_SHAPE))


def make_batch(shape: Shape, seed: int = 0):
    """A `Batch` in the training format: varied frame counts, prompt and target lengths."""
    from wavepose_jax.data.batch import Batch, target_positions
    from wavepose_jax.data.faults import FAULTS

    rng = np.random.default_rng(seed)
    b, t, length = shape.batch, shape.frames, shape.tokens
    vocab = shape.llm["vocab_size"]
    tokens = rng.integers(3, vocab, (b, length)).astype(np.int32)
    token_mask = np.zeros((b, length), bool)
    loss_mask = np.zeros((b, length), bool)
    frame_mask = np.zeros((b, t), bool)
    prompt_len = np.zeros(b, np.int32)
    for i in range(b):
        total = length - (i * length) // 16  # 256, 240, 224, 208 real tokens
        prompt = (length * 9) // 16 + (i % 3) * (length // 32)  # ~150 prompt tokens
        token_mask[i, :total] = True
        loss_mask[i, prompt:total] = True
        frame_mask[i, :t - (i * t) // 10] = True  # 300, 270, 240, 210 real frames
        prompt_len[i] = prompt
    tokens[~token_mask] = 0
    return Batch(
        waves=rng.normal(size=(b, t, 7)).astype(np.float32), frame_mask=frame_mask,
        phase=rng.uniform(0, 2 * np.pi, (b, t)).astype(np.float32), phase_mask=frame_mask.copy(),
        faults=np.zeros((b, len(FAULTS)), np.float32),
        fault_mask=np.zeros((b, len(FAULTS)), bool), tokens=tokens, token_mask=token_mask,
        loss_mask=loss_mask, prompt_len=prompt_len, example_weight=np.ones(b, np.float32),
        target_pos=target_positions(loss_mask))


def step_flops(config, llm_cfg: dict, shape: Shape, targets: int) -> dict[str, float]:
    """Matmul FLOPs of one train step under the convention of the module docstring
    (`targets`: the batch's target tokens, where the LM head runs)."""
    enc, br, lora = config.encoder, config.bridge, config.lora
    b, t, length = shape.batch, shape.frames, shape.tokens
    q = br.num_queries
    seq = q + length  # language-model positions per row
    d, inter, vocab = llm_cfg["hidden_size"], llm_cfg["intermediate_size"], llm_cfg["vocab_size"]
    layers, heads, kv = (llm_cfg["num_hidden_layers"], llm_cfg["num_attention_heads"],
                         llm_cfg["num_key_value_heads"])
    hd = d // heads
    ntok = b * seq
    shapes = [(d, (heads + 2 * kv) * hd), (heads * hd, d), (d, 2 * inter), (inter, d)]
    frozen_w = layers * sum(i * o for i, o in shapes)
    lora_w = layers * sum(lora.rank * (i + o) for i, o in shapes)
    out = {
        "llm_frozen": 4.0 * ntok * frozen_w,  # forward + input gradient
        "llm_head": 4.0 * targets * d * vocab,
        "llm_lora": 6.0 * ntok * lora_w,  # forward + input and weight gradients
        "llm_attention": 12.0 * layers * ntok * seq * heads * hd,
    }
    nf, e, s = b * t, enc.d_model, enc.state_dim
    enc_w = (enc.num_signals if hasattr(enc, "num_signals") else 7) * e * enc.conv_kernel
    enc_w += enc.num_layers * (4 * e * e + 2 * e * enc.mlp_ratio * e) + e * e + e * s + s * 9
    out["encoder"] = 6.0 * nf * enc_w + 12.0 * enc.num_layers * nf * t * e
    bd = br.d_model
    bridge = 6.0 * nf * (bd + br.state_dim) * bd  # fuse
    bridge += br.num_layers * (6.0 * nf * 2 * bd * bd  # key, value over frames
                               + 6.0 * b * q * (2 * bd * bd + 2 * bd * br.mlp_ratio * bd)
                               + 12.0 * b * q * t * bd)
    bridge += 6.0 * b * q * bd * d  # to_llm
    out["bridge"] = bridge
    out["total"] = sum(out.values())
    return out


# ------------------------------------------------------------------------------------------------
# The PyTorch model (mirrors models/encoder.py and models/bridge.py)


def torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    def sinusoidal(length, dim):
        pos = torch.arange(length, dtype=torch.float32)[:, None]
        inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        ang = pos * inv
        table = torch.zeros(length, dim)
        table[:, 0::2] = torch.sin(ang)
        table[:, 1::2] = torch.cos(ang[:, : dim // 2])
        return table

    def gelu(x):  # jax.nn.gelu's default is the tanh approximation
        return F.gelu(x, approximate="tanh")

    class MHA(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.h, self.k = heads, dim // heads
            self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

        def forward(self, xq, xkv, mask, return_weights=False):
            b, nq, _ = xq.shape
            nt = xkv.shape[1]
            q = self.query(xq).view(b, nq, self.h, self.k).transpose(1, 2)  # [B, H, Q, K]
            k = self.key(xkv).view(b, nt, self.h, self.k).transpose(1, 2)
            v = self.value(xkv).view(b, nt, self.h, self.k).transpose(1, 2)
            key_mask = mask[:, None, None, :]
            if return_weights:
                logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.k)
                logits = logits.masked_fill(~key_mask, torch.finfo(torch.float32).min)
                weights = torch.softmax(logits, -1) * key_mask
                ctx = weights @ v
            else:
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
                ctx = torch.where(mask.any(-1)[:, None, None, None], ctx, 0.0)
                weights = None
            out = self.out(ctx.transpose(1, 2).reshape(b, nq, self.h * self.k))
            return out, weights

    class FFN(nn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

        def forward(self, x):
            return self.down(gelu(self.up(x)))

    def ln(dim):
        return nn.LayerNorm(dim, eps=1e-6)  # flax's LayerNorm epsilon

    class EncoderLayer(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.attn_norm, self.mlp_norm = ln(c.d_model), ln(c.d_model)
            self.attn = MHA(c.d_model, c.num_heads)
            self.mlp = FFN(c.d_model, c.mlp_ratio * c.d_model)
            self.dropout = nn.Dropout(c.dropout)

        def forward(self, x, mask):
            h = self.attn_norm(x)
            x = x + self.dropout(self.attn(h, h, mask)[0])
            return x + self.dropout(self.mlp(self.mlp_norm(x)))

    class Encoder(nn.Module):
        def __init__(self, c, num_signals=7):
            super().__init__()
            if c.conv_kernel != 1:
                raise NotImplementedError("the torch mirror implements conv_kernel=1 (configs/base.py)")
            self.c = c
            self.input_proj = nn.Linear(num_signals, c.d_model)
            self.input_dropout = nn.Dropout(c.dropout)
            self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.num_layers))
            self.final_norm = ln(c.d_model)
            self.state_hidden = nn.Linear(c.d_model, c.d_model)
            self.state_out = nn.Linear(c.d_model, c.state_dim)
            self.aux_head = nn.Linear(c.state_dim, num_signals + 2)

        def forward(self, waves, mask):
            keep = mask[..., None].float()
            waves = torch.where(mask[..., None], waves * self.c.input_gain, 0.0)
            x = self.input_proj(waves) + sinusoidal(waves.shape[1], self.c.d_model)
            x = self.input_dropout(x)
            for layer in self.layers:
                x = layer(x, mask)
            phi = self.final_norm(x) * keep
            state = self.state_out(gelu(self.state_hidden(phi))) * keep
            return phi, state

    class BridgeLayer(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.query_norm, self.context_norm, self.mlp_norm = (ln(c.d_model) for _ in range(3))
            self.attn = MHA(c.d_model, c.num_heads)
            self.mlp = FFN(c.d_model, c.mlp_ratio * c.d_model)
            self.dropout = nn.Dropout(c.dropout)

        def forward(self, q, ctx, mask):
            attended, weights = self.attn(self.query_norm(q), self.context_norm(ctx), mask,
                                          return_weights=True)
            q = q + self.dropout(attended)
            return q + self.dropout(self.mlp(self.mlp_norm(q))), weights

    class Bridge(nn.Module):
        def __init__(self, c, llm_dim, embed_rms):
            super().__init__()
            self.c = c
            self.fuse = nn.Linear(c.d_model + c.state_dim, c.d_model)
            self.queries = nn.Parameter(torch.zeros(c.num_queries, c.d_model))
            self.layers = nn.ModuleList(BridgeLayer(c) for _ in range(c.num_layers))
            self.final_norm = ln(c.d_model)
            self.to_llm = nn.Linear(c.d_model, llm_dim)
            self.gate = nn.Parameter(torch.zeros(llm_dim))
            self.register_buffer("embed_rms", torch.tensor(float(embed_rms)))

        def forward(self, phi, state, mask):
            ctx = self.fuse(torch.cat([phi, state], -1)) + sinusoidal(phi.shape[1], self.c.d_model)
            q = self.queries.expand(phi.shape[0], -1, -1)
            attention = []
            for layer in self.layers:
                q, weights = layer(q, ctx, mask)
                attention.append(weights.mean(1))
            events = self.final_norm(q)
            tokens = self.to_llm(events)
            tokens = tokens * torch.rsqrt(tokens.square().mean(-1, keepdim=True) + 1e-6)
            return tokens * (self.embed_rms * (1.0 + torch.tanh(self.gate)))

    class WaveLLM(nn.Module):
        def __init__(self, encoder, bridge, llm):
            super().__init__()
            self.encoder, self.bridge, self.llm = encoder, bridge, llm

        def forward(self, waves, frame_mask, tokens, token_mask):
            phi, state = self.encoder(waves, frame_mask)
            soft = self.bridge(phi, state, frame_mask)
            b, s = soft.shape[:2]
            length = tokens.shape[1]
            text = self.llm.get_input_embeddings()(tokens)
            inputs = torch.cat([soft, text], 1)
            mask = torch.cat([torch.ones(b, s, dtype=torch.long), token_mask.long()], 1)
            positions = torch.arange(s + length)[None].expand(b, -1)
            logits = self.llm(inputs_embeds=inputs, attention_mask=mask,
                              position_ids=positions).logits
            return logits[:, s - 1:s - 1 + length], self.encoder.aux_head(state)

    return Encoder, Bridge, WaveLLM


def torch_objective(logits, dynamics, batch, aux_weight: float, fps: float):
    """Masked CE on target tokens / target count + aux_weight x wave-dynamics loss (the
    objective of training/loss.py for one micro-batch)."""
    import torch
    import torch.nn.functional as F

    b, length, vocab = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, vocab), batch["tokens"].reshape(-1),
                         reduction="none").view(b, length)
    weight = batch["target_weight"]
    ce_sum = (torch.where(weight > 0, ce, 0.0) * weight).sum()
    denom = weight.sum().clamp(min=1.0)
    obj = ce_sum / denom
    if aux_weight > 0:
        waves, mask = batch["waves"], batch["frames"]
        valid = mask[:, 1:] & mask[:, :-1]
        diff = (waves[:, 1:] - waves[:, :-1]) * fps
        velocity = F.pad(torch.where(valid[..., None], diff, 0.0), (0, 0, 1, 0))
        vmask = F.pad(valid, (1, 0))
        scale = torch.sqrt(velocity.square().sum((0, 1)) / vmask.sum().clamp(min=1)).clamp(min=1e-6)
        c = waves.shape[-1]
        vm = (mask & vmask)[..., None]
        vel = torch.where(vm, ((dynamics[..., :c] - velocity) / scale).square(), 0.0).sum()
        aux = vel / (vm.sum() * c).clamp(min=1)
        phase = torch.stack([torch.sin(batch["phase"]), torch.cos(batch["phase"])], -1)
        pm = (mask & batch["phase_mask"])[..., None]
        aux = aux + torch.where(pm, (dynamics[..., c:c + 2] - phase).square(), 0.0).sum() / (
            pm.sum() * 2).clamp(min=1)
        obj = obj + aux_weight * aux
    return obj, ce_sum, denom


def copy_linear(t_lin, j_lin):
    import torch

    with torch.no_grad():
        t_lin.weight.copy_(torch.from_numpy(np.array(j_lin.kernel[...]).T.copy()))
        t_lin.bias.copy_(torch.from_numpy(np.array(j_lin.bias[...])))


def copy_norm(t_ln, j_ln):
    import torch

    with torch.no_grad():
        t_ln.weight.copy_(torch.from_numpy(np.array(j_ln.scale[...])))
        t_ln.bias.copy_(torch.from_numpy(np.array(j_ln.bias[...])))


def copy_attn(t, j):
    for name in ("query", "key", "value", "out"):
        copy_linear(getattr(t, name), getattr(j, name))


def copy_motion(t_enc, t_br, model) -> None:
    """Encoder and bridge weights of the JAX model into the torch mirror."""
    import torch

    enc, br = model.encoder, model.bridge
    copy_linear(t_enc.input_proj, enc.input_proj)
    for tl, jl in zip(t_enc.layers, enc.layers):
        copy_norm(tl.attn_norm, jl.attn_norm)
        copy_norm(tl.mlp_norm, jl.mlp_norm)
        copy_attn(tl.attn, jl.attn)
        copy_linear(tl.mlp.up, jl.mlp.up)
        copy_linear(tl.mlp.down, jl.mlp.down)
    copy_norm(t_enc.final_norm, enc.final_norm)
    for name in ("state_hidden", "state_out", "aux_head"):
        copy_linear(getattr(t_enc, name), getattr(enc, name))
    copy_linear(t_br.fuse, br.fuse)
    for tl, jl in zip(t_br.layers, br.layers):
        for name in ("query_norm", "context_norm", "mlp_norm"):
            copy_norm(getattr(tl, name), getattr(jl, name))
        copy_attn(tl.attn, jl.attn)
        copy_linear(tl.mlp.up, jl.mlp.up)
        copy_linear(tl.mlp.down, jl.mlp.down)
    copy_norm(t_br.final_norm, br.final_norm)
    copy_linear(t_br.to_llm, br.to_llm)
    with torch.no_grad():
        t_br.queries.copy_(torch.from_numpy(np.array(br.queries[...])))
        t_br.gate.copy_(torch.from_numpy(np.array(br.gate[...])))
        t_br.embed_rms.copy_(torch.tensor(float(br.embed_rms[...])))


def copy_lora(peft_model, jax_llm) -> int:
    """LoRA A and B of every adapted JAX Linear into the peft model; returns how many."""
    import torch

    from wavepose_jax.models.lora import lora_modules

    torch_mods = dict(peft_model.base_model.model.named_modules())
    n = 0
    for path, lin in lora_modules(jax_llm, (r".*",)):
        if lin.lora_a is None:
            continue
        a, b = np.asarray(lin.lora_a[...]), np.asarray(lin.lora_b[...])
        if a.ndim == 3:  # a scanned stack: [L, in, r], one torch module per layer
            head, tail = path.split("/layers/", 1)
            pairs = [(f"{head}.layers.{i}.{tail}".replace("/", "."), a[i], b[i])
                     for i in range(a.shape[0])]
        else:
            pairs = [(path.replace("/", "."), a, b)]
        for name, la, lb in pairs:
            t = torch_mods[name]
            with torch.no_grad():
                t.lora_A["default"].weight.copy_(torch.from_numpy(la.T.copy()))
                t.lora_B["default"].weight.copy_(torch.from_numpy(lb.T.copy()))
            n += 1
    return n


# ------------------------------------------------------------------------------------------------
# Measurement helpers


# ------------------------------------------------------------------------------------------------
# The benchmark


def run(args) -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from wavepose_jax import run as run_lib
    from wavepose_jax import sharding as sharding_lib
    from wavepose_jax.configs import base as base_config
    from wavepose_jax.spec import RunSpec
    from wavepose_jax.training.loss import LossWeights
    from wavepose_jax.models import wavellm
    from wavepose_jax.training import distributed, metrics as metrics_lib
    from wavepose_jax.training import state as state_lib
    from wavepose_jax.training import step as step_lib

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    shape = Shape(llm=dict(benchlib.PHI3_TINY_SHAPE if args.tiny else benchlib.PHI3_CPU_SHAPE))
    if args.tiny:
        shape = dataclasses.replace(shape, batch=2, frames=40, tokens=32)

    config = base_config.get_config()
    config.llm.dtype = config.llm.param_dtype = "float32"
    if args.remat is not None:
        config.llm.remat = args.remat
    if args.stack is not None:
        config.llm.scan_layers = args.stack == "scanned"
    config.data.seq_len = shape.frames
    if args.tiny:
        config.encoder.update(d_model=32, num_layers=1, num_heads=4)
        config.lora.rank = 4
        config.lora.alpha = 8.0
    aux_weight = float(config.train.aux_loss_weight)
    fps = float(config.data.target_fps or 30.0)

    # The base: random transformers weights, loaded by the project's loader.
    torch.manual_seed(0)
    hf_llm = transformers.Phi3ForCausalLM(transformers.Phi3Config(**shape.llm))
    tmp = tempfile.TemporaryDirectory()
    hf_llm.save_pretrained(tmp.name)
    config.llm.path = tmp.name
    config = RunSpec.from_config(config)  # what train.py makes of the config

    # JAX: the objects train.py builds.
    mesh = sharding_lib.make_mesh(config.mesh.axes())
    model = run_lib.new_model(config, mesh)
    counts = {k: int(v) for k, v in wavellm.param_counts(model).items()}
    host_batch = make_batch(shape)
    batch = distributed.global_batch(host_batch, mesh)

    # PyTorch: the mirror, with the same weights.
    Encoder, Bridge, WaveLLMTorch = torch_modules()
    t_enc = Encoder(config.encoder)
    t_br = Bridge(config.bridge, shape.llm["hidden_size"], 1.0)
    copy_motion(t_enc, t_br, model)
    peft_llm = get_peft_model(hf_llm, LoraConfig(
        r=int(config.lora.rank), lora_alpha=float(config.lora.alpha),
        lora_dropout=float(config.lora.dropout), target_modules=benchlib.PEFT_TARGETS))
    n_lora = copy_lora(peft_llm, model.llm)
    t_model = WaveLLMTorch(t_enc, t_br, peft_llm)

    state = state_lib.create_train_state(model, config.train,
                                         LossWeights.of(config.train, config.data.target_fps), mesh)
    tb = {
        "waves": torch.from_numpy(np.asarray(host_batch.waves)),
        "frames": torch.from_numpy(np.asarray(host_batch.frame_mask)),
        "phase": torch.from_numpy(np.asarray(host_batch.phase)),
        "phase_mask": torch.from_numpy(np.asarray(host_batch.phase_mask)),
        "tokens": torch.from_numpy(np.asarray(host_batch.tokens)).long(),
        "token_mask": torch.from_numpy(np.asarray(host_batch.token_mask)),
        "target_weight": torch.from_numpy(np.asarray(host_batch.target_weight())),
    }

    # Parity: the deterministic objective of both sides on this batch.
    eval_terms = jax.device_get(step_lib.jit_eval_step(state, batch, mesh)(state, batch))
    j_obj = (float(eval_terms["ce_sum"]) / max(float(eval_terms["num_tokens"]), 1.0)
             + aux_weight * float(eval_terms["aux_loss"]))
    t_model.eval()
    with torch.no_grad():
        logits, dyn = t_model(tb["waves"], tb["frames"], tb["tokens"], tb["token_mask"])
        t_obj = float(torch_objective(logits, dyn, tb, aux_weight, fps)[0])
    parity = abs(j_obj - t_obj) / abs(t_obj)
    print(f"parity: deterministic objective JAX {j_obj:.6f}, PyTorch {t_obj:.6f} "
          f"(relative difference {parity:.1e}; {n_lora} LoRA layers)")
    if parity > 1e-4:
        raise SystemExit("the two models disagree: the comparison would not be fair")
    t_model.train()

    # PyTorch optimizer: AdamW groups like training/optim.py (decay on matrices only).
    trainable = [(n, p) for n, p in t_model.named_parameters() if p.requires_grad]
    tc = config.train
    groups = []
    for lr, is_enc in ((tc.lr_encoder, True), (tc.lr_bridge_lora, False)):
        for decay in (True, False):
            params = [p for n, p in trainable if n.startswith("encoder.") == is_enc
                      and (p.ndim >= 2) == decay]
            groups.append({"params": params, "lr": float(lr),
                           "weight_decay": float(tc.weight_decay) if decay else 0.0})
    opt = torch.optim.AdamW(groups, betas=(float(tc.adam_b1), float(tc.adam_b2)),
                            eps=float(tc.adam_eps))
    t_params = [p for _, p in trainable]
    n_torch_trainable = sum(p.numel() for p in t_params)
    n_jax_trainable = sum(int(x.size) for x in jax.tree.leaves(state.params))

    def torch_step():
        opt.zero_grad(set_to_none=True)
        logits, dyn = t_model(tb["waves"], tb["frames"], tb["tokens"], tb["token_mask"])
        obj, _, _ = torch_objective(logits, dyn, tb, aux_weight, fps)
        obj.backward()
        torch.nn.utils.clip_grad_norm_(t_params, float(tc.clip_norm))
        opt.step()
        return float(obj.detach())

    # JAX step: compile (timed separately), then the same calls train.py makes.
    step_fn = step_lib.jit_train_step(state, batch, mesh, grad_accum=int(tc.grad_accum))
    rng = jax.random.key(int(tc.seed))
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

    holder = {"state": state}

    def jax_step():
        holder["state"], metrics = step_fn(holder["state"], batch, rng)
        jax.block_until_ready((holder["state"], metrics))
        return float(metrics["loss"])

    times = benchlib.interleaved({"jax": jax_step, "torch": torch_step}, args.repeats,
                                 warmup=args.warmup)
    profile = None
    if args.profile:
        profile = {"jax": benchlib.jax_profile(jax_step, compiled.as_text()),
                   "torch": benchlib.torch_profile(torch_step)}
    ceiling = benchlib.matmul_ceiling(args.matmul_n, max(3, args.repeats))
    flops = step_flops(config, shape.llm, shape, int(np.sum(host_batch.loss_mask)))
    llm_cfg = model.llm.config
    palm = metrics_lib.model_flops_per_token(
        llm_cfg, counts["base"] + counts["lora"] + counts["encoder"] + counts["bridge"],
        seq_len=config.bridge.num_queries + shape.tokens) * shape.batch * (
        config.bridge.num_queries + shape.tokens)
    tmp.cleanup()
    return {
        "shape": dataclasses.asdict(shape), "threads": threads, "times": times,
        "compile_s": compile_s, "flops": flops, "xla_flops": xla_flops, "palm_flops": palm,
        "ceiling": ceiling, "matmul_n": args.matmul_n, "parity": parity, "params": counts,
        "trainable": {"jax": n_jax_trainable, "torch": n_torch_trainable},
        "machine": benchlib.machine(), "profile": profile,
        "llm": {"remat": bool(config.llm.remat), "scan_layers": bool(config.llm.scan_layers)},
    }


def report(res: dict, repeats: int) -> tuple[str, str, list[str]]:
    t_jax = statistics.median(res["times"]["jax"])
    t_torch = statistics.median(res["times"]["torch"])
    total = res["flops"]["total"]
    ceiling = max(res["ceiling"].values())
    ceiling_src = max(res["ceiling"], key=res["ceiling"].get)
    shape = res["shape"]
    rows = [
        ("step time (s)", f"{t_jax:.3f}", f"{t_torch:.3f}", f"{t_jax / t_torch:.2f}x time"),
        ("achieved GFLOP/s", f"{total / t_jax / 1e9:.1f}", f"{total / t_torch / 1e9:.1f}", "-"),
        ("fraction of the matmul ceiling", f"{100 * total / t_jax / ceiling:.0f}%",
         f"{100 * total / t_torch / ceiling:.0f}%", "-"),
    ]
    lines = ["| measure | JAX (project step) | PyTorch (transformers + peft) | JAX vs PyTorch |",
             "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    flops = res["flops"]
    parts = ", ".join(f"{k.replace('_', ' ')} {v / 1e9:.1f}" for k, v in flops.items()
                      if k != "total")
    m = res["machine"]
    machine = (f"{m['cpu']} ({m['isa']}), {m['cores']} cores, {res['threads']} torch threads, 1 JAX "
               f"CPU device; {benchlib.versions()}; load average {m['load'][0]:.1f} / "
               f"{m['load'][1]:.1f} / {m['load'][2]:.1f} (1 / 5 / 15 min) at the end; median of "
               f"{repeats} interleaved steps after warm-up")
    stack = "scanned" if res["llm"]["scan_layers"] else "unrolled"
    notes = [
        f"JAX step: {stack} decoder stack, remat {'on' if res['llm']['remat'] else 'off'} "
        "(`--stack`, `--[no-]remat`); PyTorch: no gradient checkpointing.",
        f"Batch {shape['batch']} x {shape['tokens']} tokens (+ 8 soft tokens), "
        f"{shape['frames']} frames; trainable parameters JAX {res['trainable']['jax']:,}, "
        f"PyTorch {res['trainable']['torch']:,}; deterministic objectives agree to "
        f"{res['parity']:.0e} relative.",
        f"FLOPs per step: {total / 1e9:.1f} G by the convention above ({parts}); XLA's count of "
        f"the compiled step {res['xla_flops'] / 1e9:.1f} G; PaLM-style model FLOPs "
        f"(6 N + 12 L D T, every weight) {res['palm_flops'] / 1e9:.1f} G.",
        f"Matmul ceiling ({res['matmul_n']} x {res['matmul_n']} fp32, this process): JAX {res['ceiling']['jax'] / 1e9:.1f} "
        f"GFLOP/s, torch {res['ceiling']['torch'] / 1e9:.1f} GFLOP/s; the faster "
        f"({ceiling_src}) is the ceiling.",
        f"JAX compile time of the step: {res['compile_s']:.1f} s (not in the step time).",
    ]
    return machine, "\n".join(lines), notes


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--matmul-n", type=int, default=4096)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: checks the script runs")
    parser.add_argument("--remat", action=argparse.BooleanOptionalAction, default=None,
                        help="llm.remat of the JAX step (default: configs/base.py's)")
    parser.add_argument("--stack", choices=("scanned", "unrolled"), default=None,
                        help="llm.scan_layers of the JAX step (default: configs/base.py's)")
    parser.add_argument("--profile", action="store_true",
                        help="also trace two steps of each side and print where the time goes")
    parser.add_argument("--write-readme", action="store_true",
                        help="replace the train-step table in benchmarks/README.md")
    args = parser.parse_args()
    if args.tiny:
        args.matmul_n = min(args.matmul_n, 512)
    _set_xla_flags()
    res = run(args)
    machine, table, notes = report(res, args.repeats)
    print(f"Machine: {machine}.\n")
    print(table)
    print()
    for note in notes:
        print(f"* {note}")
    print("\nraw step times (s): " + "; ".join(
        f"{k} " + ", ".join(f"{t:.3f}" for t in v) for k, v in res["times"].items()))
    if res["profile"]:
        for side, title in (("jax", "JAX op (HLO instruction kind)"),
                            ("torch", "PyTorch op (self time)")):
            print("\n" + benchlib.markdown(title, res["profile"][side]))
    if args.write_readme:
        if args.tiny:
            raise SystemExit("--write-readme needs the full shapes (drop --tiny)")
        text = README.read_text()
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        body = "\n".join([f"Machine: {machine}.", "", table, "", *[f"* {n}" for n in notes]])
        if res["profile"]:
            body += "\n\nWhere one step's time goes (two traced steps after the timed ones):\n"
            body += "\n\n".join(benchlib.markdown(title, res["profile"][side]) for side, title in
                                 (("jax", "JAX op (HLO instruction kind)"),
                                  ("torch", "PyTorch op (self time)")))
        README.write_text(f"{head}{MARK_START}\n{body}\n{MARK_END}{tail}")


if __name__ == "__main__":
    main()
