"""Phi-3 speed: Flax (this package) vs transformers' PyTorch implementation.

CPU mode (default), a Phi-3-shaped model (hidden 512, 8 layers, 8 heads, intermediate 1536,
vocab 32064, random fp32 weights) built with transformers, saved and loaded with
``wavepose_jax.hf.load_pretrained``:
  * forward of a 4 x 256 batch (seconds), against the matmul ceiling;
  * greedy decoding of 128 new tokens at batch 1 and 8 (tokens/s), ``generate`` vs
    transformers' ``generate(do_sample=False)``; batch 1 against the read-bandwidth roofline.
Each measure: median of --repeats runs of each side, the two sides taking turns, after a
warm-up. ``--profile`` adds where the time goes, op by op, for the forward and batch-8 decoding.

GPU mode (``--gpu``), Phi-3.5-mini-shaped random bf16 weights (JAX only):
  * batch-1 greedy decode tokens/s vs the HBM roofline (bandwidth / weight bytes);
  * prefill tokens/s for one 2048-token sequence.

Usage:
  JAX_PLATFORMS=cpu python benchmarks/bench_phi3.py [--profile] [--write-readme]
  python benchmarks/bench_phi3.py --gpu [--hbm-gbps 3350]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavepose_jax import hf
from wavepose_jax.generate import _core_args, generate, generate_core
from wavepose_jax.models.phi3 import LongRopeScaling, Phi3Config, Phi3ForCausalLM

import benchlib

README = Path(__file__).with_name("README.md")
CPU_SHAPE = benchlib.PHI3_CPU_SHAPE


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(c: dict, batch: int, length: int) -> float:
    """Matmul FLOPs of a forward with logits at every position (2 per multiply-add; attention
    scores and values in full, as both sides compute the masked matrix)."""
    d, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = d // heads
    per_layer = d * (heads + 2 * kv) * hd + heads * hd * d + d * 2 * inter + inter * d
    weights = layers * per_layer + d * c["vocab_size"]
    return 2.0 * batch * length * weights + 4.0 * layers * batch * length ** 2 * d


def bench_cpu(repeats: int, prompt_len: int, profile: bool) -> dict:
    import torch
    import transformers

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    config = transformers.Phi3Config(**CPU_SHAPE)
    torch_model = transformers.Phi3ForCausalLM(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch_model.save_pretrained(tmp)
        model = hf.load_pretrained(tmp, dtype=jnp.float32)

    rows, profiles = [], {}
    ids = np.random.default_rng(0).integers(0, 32064, (4, 256)).astype(np.int32)
    graphdef, params = nnx.split(model)
    forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x).logits)
    jax_ids, torch_ids = jnp.asarray(ids), torch.as_tensor(ids, dtype=torch.long)

    def torch_forward():
        with torch.no_grad():
            torch_model(torch_ids)

    fns = {"jax": lambda: forward(params, jax_ids).block_until_ready(), "torch": torch_forward}
    times = {k: statistics.median(v) for k, v in benchlib.interleaved(fns, repeats).items()}
    flops = forward_flops(CPU_SHAPE, *ids.shape)
    rows.append(("forward 4x256 (s)", times["jax"], times["torch"],
                 f"{times['jax'] / times['torch']:.2f}x time"))
    if profile:
        text = forward.lower(params, jax_ids).compile().as_text()
        profiles["forward 4x256"] = (benchlib.jax_profile(fns["jax"], text),
                                     benchlib.torch_profile(torch_forward))

    new = 128
    decode, decode_torch = {}, {}
    for batch in (1, 8):
        prompts = np.random.default_rng(batch).integers(3, 32064, (batch, prompt_len)).astype(np.int32)
        torch_prompts = torch.as_tensor(prompts, dtype=torch.long)

        def torch_generate():
            with torch.no_grad():
                torch_model.generate(torch_prompts, max_new_tokens=new, min_new_tokens=new,
                                     do_sample=False, pad_token_id=0)

        fns = {"jax": lambda: generate(model, prompts, max_new_tokens=new).tokens.block_until_ready(),
               "torch": torch_generate}
        t = {k: statistics.median(v) for k, v in benchlib.interleaved(fns, repeats).items()}
        jax_tps, torch_tps = batch * new / t["jax"], batch * new / t["torch"]
        decode[batch], decode_torch[batch] = jax_tps, torch_tps
        rows.append((f"greedy decode 128 tokens, batch {batch} (tokens/s)", jax_tps, torch_tps,
                     f"{jax_tps / torch_tps:.2f}x tokens/s"))
        if profile and batch == 8:
            args, kw = _core_args(model, prompts, None, None, new, (), 0, 0.0, 1.0, None)
            text = generate_core.lower(*args, **kw).compile().as_text()
            profiles["greedy decode, batch 8"] = (benchlib.jax_profile(fns["jax"], text),
                                                  benchlib.torch_profile(torch_generate))

    # The physical limits: the matmul ceiling for the forward; for batch-1 decoding, the bytes
    # each token must read (every weight but the embedding table, plus the KV cache at the
    # average length) over the read bandwidth measured on a working set of that size (it may sit
    # in the last-level cache, which reads faster than DRAM; DRAM's rate is shown beside it).
    ceiling = benchlib.matmul_ceiling(4096, repeats)
    c = CPU_SHAPE
    embed = c["vocab_size"] * c["hidden_size"]
    kv_bytes = (2 * c["num_hidden_layers"] * (prompt_len + new / 2) * c["num_key_value_heads"]
                * (c["hidden_size"] // c["num_attention_heads"]) * 4)
    token_bytes = (hf.num_params(model) - embed) * 4 + kv_bytes
    bandwidth = benchlib.read_bandwidth(token_bytes / 2 ** 20)
    dram = benchlib.read_bandwidth(1024)
    roofline = bandwidth / token_bytes
    limits = {
        "forward_flops": flops, "ceiling": ceiling, "bandwidth": bandwidth, "dram": dram,
        "token_bytes": token_bytes, "roofline": roofline,
        "forward_share": flops / times["jax"] / max(ceiling.values()),
        "forward_share_torch": flops / times["torch"] / max(ceiling.values()),
        "decode_share": decode[1] / roofline,
        "decode_share_torch": decode_torch[1] / roofline,
    }
    return {"rows": rows, "profiles": profiles, "limits": limits}


def limits_text(lim: dict) -> list[str]:
    c = lim["ceiling"]
    return [
        f"Forward: {lim['forward_flops'] / 1e9:.1f} GFLOP (logits at every position); matmul "
        f"ceiling {max(c.values()) / 1e9:.0f} GFLOP/s (4096^3 fp32: JAX {c['jax'] / 1e9:.0f}, "
        f"torch {c['torch'] / 1e9:.0f}); JAX reaches {100 * lim['forward_share']:.0f}% of it, "
        f"PyTorch {100 * lim['forward_share_torch']:.0f}%.",
        f"Batch-1 decoding reads {lim['token_bytes'] / 1e6:.0f} MB per token (every weight but "
        f"the embedding table, fp32, plus the KV cache at the average length); read again and "
        f"again, a working set of that size reads at {lim['bandwidth'] / 1e9:.1f} GB/s here "
        f"(XLA sum; 1 GiB, beyond the last-level cache: {lim['dram'] / 1e9:.1f} GB/s), so the "
        f"roofline is {lim['roofline']:.0f} tokens/s; JAX reaches "
        f"{100 * lim['decode_share']:.0f}% of it, PyTorch {100 * lim['decode_share_torch']:.0f}%.",
    ]


def phi35_mini_config() -> Phi3Config:
    return Phi3Config(
        vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rope_scaling=LongRopeScaling(short_factor=(1.0,) * 48, long_factor=(1.0,) * 48),
        dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, attention_impl="cudnn")


def bench_gpu(repeats: int, hbm_gbps: float) -> list[tuple[str, float, float, str]]:
    config = phi35_mini_config()
    model = nnx.jit(lambda: Phi3ForCausalLM(config, rngs=nnx.Rngs(0)))()
    weight_bytes = hf.num_params(model) * 2
    roofline = hbm_gbps * 1e9 / weight_bytes  # batch-1 tokens/s if weights are read once per token
    prompts = np.random.default_rng(0).integers(3, 32064, (1, 128)).astype(np.int32)
    new = 256
    t = _median_time(lambda: generate(model, prompts, max_new_tokens=new).tokens.block_until_ready(), repeats)
    tps = new / t
    rows = [("batch-1 decode (tokens/s, incl. 128-token prefill)", tps, roofline,
             f"{100 * tps / roofline:.0f}% of roofline")]
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 32064, (1, 2048)).astype(np.int32))
    prefill = nnx.jit(lambda m, x: m(x, with_logits=False).hidden)
    t = _median_time(lambda: prefill(model, ids).block_until_ready(), repeats)
    rows.append(("prefill 1x2048 (tokens/s)", 2048 / t, float("nan"), "-"))
    return rows


def table(rows, headers) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, a, b, ratio in rows:
        lines.append(f"| {name} | {a:.4g} | {b:.4g} | {ratio} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="Phi-3.5-mini-shaped bf16 run on an accelerator")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--hbm-gbps", type=float, default=3350.0, help="memory bandwidth (H100 SXM: 3350)")
    parser.add_argument("--profile", action="store_true",
                        help="also trace the forward and the batch-8 decode, op by op, on each side")
    parser.add_argument("--write-readme", action="store_true", help="replace the results table in README.md")
    args = parser.parse_args()
    benchlib.quiet_openmp()  # before torch is imported

    if args.gpu:
        rows = bench_gpu(args.repeats, args.hbm_gbps)
        print(f"device: {jax.devices()[0].device_kind}")
        print(table(rows, ["measure", "JAX", "HBM roofline", "ratio"]))
        return

    res = bench_cpu(args.repeats, args.prompt_len, args.profile)
    m = benchlib.machine()
    machine = (f"{m['cpu']} ({m['isa']}), {m['cores']} cores, 1 JAX CPU device, as many torch "
               f"threads; {benchlib.versions()}; load average {m['load'][0]:.1f} / "
               f"{m['load'][1]:.1f} / {m['load'][2]:.1f} (1 / 5 / 15 min) at the end; median of "
               f"{args.repeats} interleaved runs after a warm-up")
    result = table(res["rows"], ["measure", "JAX", "PyTorch (transformers)", "JAX vs PyTorch"])
    result += "\n\n" + "\n".join(f"* {line}" for line in limits_text(res["limits"]))
    for name, (jax_rows, torch_rows) in res["profiles"].items():
        result += (f"\n\nWhere the time goes, {name}:\n\n"
                   + benchlib.markdown("JAX op (HLO instruction kind)", jax_rows) + "\n\n"
                   + benchlib.markdown("PyTorch op (self time)", torch_rows))
    print(machine)
    print(result)
    if args.write_readme:
        text = README.read_text()
        start, end = "<!-- cpu-results -->", "<!-- /cpu-results -->"
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        README.write_text(f"{head}{start}\nMachine: {machine}.\n\n{result}\n{end}{tail}")


if __name__ == "__main__":
    main()
