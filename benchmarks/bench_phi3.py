"""Phi-3 speed: Flax (this package) vs transformers' PyTorch implementation.

CPU mode (default), a Phi-3-shaped model (hidden 512, 8 layers, 8 heads, intermediate 1536,
vocab 32064, random fp32 weights) built with transformers, saved and loaded with
``wavepose_jax.hf.load_pretrained``:
  * forward of a 4 x 256 batch (seconds, median of --repeats runs after warm-up);
  * greedy decoding of 128 new tokens at batch 1 and 8 (tokens/s), ``generate`` vs
    transformers' ``generate(do_sample=False)``.

GPU mode (``--gpu``), Phi-3.5-mini-shaped random bf16 weights (JAX only):
  * batch-1 greedy decode tokens/s vs the HBM roofline (bandwidth / weight bytes);
  * prefill tokens/s for one 2048-token sequence.

Usage:
  JAX_PLATFORMS=cpu python benchmarks/bench_phi3.py [--write-readme]
  python benchmarks/bench_phi3.py --gpu [--hbm-gbps 3350]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavepose_jax import hf
from wavepose_jax.generate import generate
from wavepose_jax.models.phi3 import LongRopeScaling, Phi3Config, Phi3ForCausalLM

README = Path(__file__).with_name("README.md")
CPU_SHAPE = dict(vocab_size=32064, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                 num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
                 original_max_position_embeddings=4096, pad_token_id=0, eos_token_id=None)


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def bench_cpu(repeats: int, prompt_len: int) -> list[tuple[str, float, float, str]]:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Phi3Config(**CPU_SHAPE)
    torch_model = transformers.Phi3ForCausalLM(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch_model.save_pretrained(tmp)
        model = hf.load_pretrained(tmp, dtype=jnp.float32)

    rows = []
    ids = np.random.default_rng(0).integers(0, 32064, (4, 256)).astype(np.int32)
    forward = nnx.jit(lambda m, x: m(x).logits)
    jax_ids = jnp.asarray(ids)
    t_jax = _median_time(lambda: forward(model, jax_ids).block_until_ready(), repeats)
    torch_ids = torch.as_tensor(ids, dtype=torch.long)

    def torch_forward():
        with torch.no_grad():
            torch_model(torch_ids)

    t_torch = _median_time(torch_forward, repeats)
    rows.append(("forward 4x256 (s)", t_jax, t_torch, f"{t_jax / t_torch:.2f}x time"))

    for batch in (1, 8):
        prompts = np.random.default_rng(batch).integers(3, 32064, (batch, prompt_len)).astype(np.int32)
        new = 128
        t_jax = _median_time(lambda: generate(model, prompts, max_new_tokens=new).tokens.block_until_ready(),
                             repeats)
        torch_prompts = torch.as_tensor(prompts, dtype=torch.long)

        def torch_generate():
            with torch.no_grad():
                torch_model.generate(torch_prompts, max_new_tokens=new, min_new_tokens=new,
                                     do_sample=False, pad_token_id=0)

        t_torch = _median_time(torch_generate, repeats)
        jax_tps, torch_tps = batch * new / t_jax, batch * new / t_torch
        rows.append((f"greedy decode 128 tokens, batch {batch} (tokens/s)", jax_tps, torch_tps,
                     f"{jax_tps / torch_tps:.1f}x tokens/s"))
    return rows


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
    parser.add_argument("--write-readme", action="store_true", help="replace the results table in README.md")
    args = parser.parse_args()

    if args.gpu:
        rows = bench_gpu(args.repeats, args.hbm_gbps)
        print(f"device: {jax.devices()[0].device_kind}")
        print(table(rows, ["measure", "JAX", "HBM roofline", "ratio"]))
        return

    import torch
    import transformers

    rows = bench_cpu(args.repeats, args.prompt_len)
    cpu = _cpu_name()
    machine = (f"{cpu}, {jax.local_device_count()} JAX CPU device, {torch.get_num_threads()} torch threads "
               f"({len(__import__('os').sched_getaffinity(0))} cores available); "
               f"jax {jax.__version__}, flax {__import__('flax').__version__}, torch {torch.__version__}, "
               f"transformers {transformers.__version__}; median of {args.repeats} after warm-up")
    result = table(rows, ["measure", "JAX", "PyTorch (transformers)", "JAX vs PyTorch"])
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
