"""LLM-only LoRA train step: the Flax Phi-3 with the project's LoRA against transformers + peft.

Both sides: a Phi-3-shaped random base (hidden 512, 8 layers, 8 heads, intermediate 1536, vocab
32064, fp32) built by transformers and loaded by the project's loader, LoRA rank 32 / alpha 64 on
qkv_proj, o_proj, gate_up_proj and down_proj (dropout 0 on both sides, so the two steps compute
the same numbers), a 4 x 256 token batch, next-token cross-entropy on the last 128 positions with
logits at every position, and AdamW (lr 1e-4) on the adapters only. The first losses of both
sides are compared before timing. Measured in one process, the two sides taking turns, median of
--repeats steps after a warm-up.

Usage:
  python benchmarks/bench_lora_step.py [--repeats 5] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import numpy as np

import benchlib

def run(args) -> dict:
    benchlib.quiet_openmp()
    import jax
    import jax.numpy as jnp
    import optax
    import torch
    import transformers
    from flax import nnx
    from peft import LoraConfig, get_peft_model

    from wavepose_jax import hf
    from wavepose_jax.models import lora

    shape = benchlib.PHI3_TINY_SHAPE if args.tiny else benchlib.PHI3_CPU_SHAPE
    batch, length, rank = (2, 32, 4) if args.tiny else (4, 256, 32)
    torch.set_num_threads(benchlib.machine()["cores"])
    torch.manual_seed(0)
    hf_llm = transformers.Phi3ForCausalLM(transformers.Phi3Config(**shape))
    with tempfile.TemporaryDirectory() as tmp:
        hf_llm.save_pretrained(tmp)
        model = hf.load_pretrained(tmp, dtype=jnp.float32)
    lora.apply_lora(model, lora.LoraConfig(rank=rank, alpha=2.0 * rank, dropout=0.0),
                    nnx.Rngs(params=1, dropout=2))  # lora.DEFAULT_TARGETS: the four projections
    peft_llm = get_peft_model(hf_llm, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                 target_modules=benchlib.PEFT_TARGETS))
    ids = np.random.default_rng(0).integers(3, shape["vocab_size"], (batch, length)).astype(np.int32)
    weight = np.zeros((batch, length - 1), np.float32)
    weight[:, length // 2 - 1:] = 1.0  # next-token loss on the last half

    # JAX: value_and_grad over the adapters, AdamW, the state donated.
    graphdef, adapters, frozen = nnx.split(model, lambda path, _: lora.is_lora_path(path), ...)
    opt = optax.adamw(1e-4)
    opt_state = opt.init(adapters)
    j_ids, j_weight = jnp.asarray(ids), jnp.asarray(weight)

    def loss_fn(adapters, frozen):
        logits = nnx.merge(graphdef, adapters, frozen)(j_ids).logits
        ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], j_ids[:, 1:])
        return jnp.sum(ce * j_weight) / jnp.sum(j_weight)

    def train_step(adapters, opt_state, frozen):
        loss, grads = jax.value_and_grad(loss_fn)(adapters, frozen)
        updates, opt_state = opt.update(grads, opt_state, adapters)
        return optax.apply_updates(adapters, updates), opt_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1))
    holder = {"a": adapters, "o": opt_state}

    def jax_step():
        holder["a"], holder["o"], loss = step(holder["a"], holder["o"], frozen)
        return float(loss)

    # PyTorch: peft + torch AdamW on the adapters.
    t_ids, t_weight = torch.as_tensor(ids, dtype=torch.long), torch.from_numpy(weight)
    params = [p for p in peft_llm.parameters() if p.requires_grad]
    t_opt = torch.optim.AdamW(params, lr=1e-4)

    def torch_step():
        t_opt.zero_grad(set_to_none=True)
        logits = peft_llm(t_ids).logits[:, :-1]
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               t_ids[:, 1:].reshape(-1), reduction="none")
        loss = (ce.view(batch, length - 1) * t_weight).sum() / t_weight.sum()
        loss.backward()
        t_opt.step()
        return float(loss.detach())

    first = {"jax": jax_step(), "torch": torch_step()}  # B = 0: both are the base's loss
    agree = abs(first["jax"] - first["torch"]) / abs(first["torch"])
    if agree > 1e-4:
        raise SystemExit(f"the two sides disagree: losses {first} - the comparison would not be fair")
    times = benchlib.interleaved({"jax": jax_step, "torch": torch_step}, args.repeats)
    return {"times": times, "agree": agree, "shape": (batch, length, rank),
            "trainable": (sum(int(x.size) for x in jax.tree.leaves(adapters)),
                          sum(p.numel() for p in params))}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: checks the script runs")
    args = parser.parse_args()
    res = run(args)
    m = benchlib.machine()
    t = {k: statistics.median(v) for k, v in res["times"].items()}
    b, n, r = res["shape"]
    print(f"Machine: {m['cpu']} ({m['isa']}), {m['cores']} cores; {benchlib.versions()}; load "
          f"average {m['load'][0]:.1f}; median of {args.repeats} interleaved steps after warm-up.")
    print(f"LoRA step, batch {b} x {n}, rank {r}, trainable JAX {res['trainable'][0]:,} / "
          f"PyTorch {res['trainable'][1]:,}; first losses agree to {res['agree']:.0e} relative")
    print("| measure | JAX | PyTorch (transformers + peft) | JAX vs PyTorch |\n|---|---|---|---|")
    print(f"| step time (s) | {t['jax']:.3f} | {t['torch']:.3f} | {t['jax'] / t['torch']:.2f}x time |")
    print("raw step times (s): " + "; ".join(
        f"{k} " + ", ".join(f"{x:.3f}" for x in v) for k, v in res["times"].items()))


if __name__ == "__main__":
    main()
