"""One-GPU check of the real recipe's speed and memory (run by `benchmarks/gpu_check.sh`).

On a random Phi-3.5-mini-shaped base (3072 hidden, 32 layers, 32 heads, intermediate 8192,
vocab 32064, LongRoPE with 48 short/long factors, bf16 weights drawn in device memory; no
download, no files), measures and writes one JSON file:

* train: the project's LoRA train step (`configs/base.py`: encoder + bridge + LoRA r=32 on the
  four fused projections, AdamW; `llm.remat` on unless --no-remat) at batch 4 x 1024 text
  tokens (+ 8 soft tokens, 300 frames), built exactly as `train.py` builds it
  (`wavellm.build_wavellm` -> `create_train_state` -> `jit_train_step`): compile time, step time
  (median of --repeats after warm-up), tokens/s, MFU against the device's peak dense bf16
  FLOP/s (`training/metrics.py`), and the device's peak memory
  (`jax.devices()[0].memory_stats()["peak_bytes_in_use"]`) measured before anything else runs;
* decode: batch-1 greedy decoding with the project's `generate.prefill` + `decode_chunk`
  (the path `infer.py` streams through), the decode loop alone timed, tokens/s against the
  HBM roofline `bandwidth / bytes read per token` (every language-model weight except the input
  embedding table, LoRA deltas included, plus the real keys and values in the cache);
* prefill: `generate.prefill` of one 2048-token prompt, tokens/s;
* ceilings, measured on the device first: the copy bandwidth of a 2 GiB array (bytes read
  plus written, jitted `x + 0`) and the rate of an 8192^3 bf16 matrix product on random data
  (median of 10 after warm-up). The decode roofline and a second MFU (`mfu_measured`) use
  them; the datasheet figures are reported beside them.

MFU is reported two ways: `mfu` with the model FLOPs that `train.py` logs (PaLM convention,
6 N + 12 L D T per token, every weight counted as trained) and `mfu_needed` with the FLOPs a
LoRA step needs (4 per frozen weight and token: forward and input gradient; 6 per trainable
weight), the convention of `benchmarks/bench_train_step.py`. Targets: MFU >= 45%, decode >= 80%
of the roofline, peak memory <= 16 GB at 4 x 1024 with remat.

`--tiny` runs every stage on tiny shapes (any backend, CPU included) to check the script.

Usage:
  python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json [--hbm-gbps 3350]
  python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

# HBM bandwidth (GB/s) by a lowercase substring of `jax.Device.device_kind`; first match wins.
HBM_GBPS_BY_DEVICE_KIND: tuple[tuple[str, float], ...] = (
    ("gh200", 4000.0),
    ("h200", 4800.0),
    ("h100 pcie", 2000.0),
    ("h100", 3350.0),
    ("b200", 8000.0),
    ("a100-sxm4-80gb", 2039.0),
    ("a100 80gb pcie", 1935.0),
    ("a100", 1555.0),
    ("l40s", 864.0),
    ("l4", 300.0),
    ("a10g", 600.0),
    ("v100", 900.0),
)

TARGETS = {"mfu": 0.45, "decode_fraction_of_roofline": 0.80, "peak_memory_gb": 16.0}


def hbm_gbps(device_kind: str) -> float | None:
    kind = device_kind.lower()
    return next((gbps for key, gbps in HBM_GBPS_BY_DEVICE_KIND if key in kind), None)


def phi35_mini_hf_config(tiny: bool) -> dict:
    """Phi-3.5-mini-instruct's config.json sizes (tiny: the same layout, small)."""
    rng = np.random.default_rng(0)
    hidden, heads = (64, 4) if tiny else (3072, 32)
    n = hidden // heads // 2
    short = (1.0 + 0.1 * rng.random(n)).round(4).tolist()
    long = (np.linspace(1.0, 8.0, n) * (1.0 + 0.2 * rng.random(n))).round(4).tolist()
    return {
        "model_type": "phi3", "architectures": ["Phi3ForCausalLM"],
        "vocab_size": 512 if tiny else 32064, "hidden_size": hidden,
        "intermediate_size": 128 if tiny else 8192, "num_hidden_layers": 2 if tiny else 32,
        "num_attention_heads": heads, "num_key_value_heads": heads, "hidden_act": "silu",
        "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long},
        "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000,
        "sliding_window": 262144, "tie_word_embeddings": False,
    }


def make_batch(b: int, frames: int, length: int, vocab: int, seed: int = 0):
    """A training `Batch`: prompt ~ 60% of the row, then the target, a little padding."""
    from wavepose_jax.data.batch import Batch, target_positions
    from wavepose_jax.data.faults import FAULTS

    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, vocab - 1, (b, length)).astype(np.int32)
    token_mask = np.zeros((b, length), bool)
    loss_mask = np.zeros((b, length), bool)
    frame_mask = np.zeros((b, frames), bool)
    prompt_len = np.zeros(b, np.int32)
    for i in range(b):
        total = length - (i * length) // 16
        prompt = (length * 9) // 16
        token_mask[i, :total] = True
        loss_mask[i, prompt:total] = True
        frame_mask[i, :frames - (i * frames) // 10] = True
        prompt_len[i] = prompt
    tokens[~token_mask] = 0
    f = len(FAULTS)
    return Batch(waves=rng.normal(size=(b, frames, 7)).astype(np.float32), frame_mask=frame_mask,
                 phase=rng.uniform(0, 6.28, (b, frames)).astype(np.float32),
                 phase_mask=frame_mask.copy(), faults=np.zeros((b, f), np.float32),
                 fault_mask=np.zeros((b, f), bool), tokens=tokens, token_mask=token_mask,
                 loss_mask=loss_mask, prompt_len=prompt_len, example_weight=np.ones(b, np.float32),
        target_pos=target_positions(loss_mask))


def _median_time(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _peak_bytes(device) -> int | None:
    stats = device.memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def _nbytes(tree) -> int:
    import jax

    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


class Report:
    """The JSON being built; written after every stage so a failure keeps what finished."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)

    def stage(self, name: str, fn) -> None:
        start = time.perf_counter()
        try:
            self.data[name] = fn()
        except Exception as e:  # keep going: the other stages still measure something
            self.data[name] = {"error": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
        self.data[name]["stage_wall_s"] = round(time.perf_counter() - start, 2)
        print(f"[gpu_check] {name}: {json.dumps(self.data[name])}", flush=True)
        self.write()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (checks the script)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=1024, help="text tokens per row")
    parser.add_argument("--no-remat", action="store_true", help="train without llm.remat")
    parser.add_argument("--attention", default=None, choices=["xla", "cudnn"],
                        help="llm.attention_impl (default: configs/base.py's, XLA picks)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--hbm-gbps", type=float, default=None,
                        help="memory bandwidth (default: from the device kind)")
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.tokens, args.repeats = 2, 32, 2
        args.decode_tokens, args.prompt_tokens, args.prefill_tokens = 8, 16, 64

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from wavepose_jax import generate as gen
    from wavepose_jax import sharding as sharding_lib
    from wavepose_jax.configs import base as base_config
    from wavepose_jax.spec import RunSpec
    from wavepose_jax.training.loss import LossWeights
    from wavepose_jax.models import wavellm
    from wavepose_jax.models.phi3 import Phi3Config, Phi3ForCausalLM
    from wavepose_jax.training import distributed
    from wavepose_jax.training import metrics as metrics_lib
    from wavepose_jax.training import state as state_lib
    from wavepose_jax.training import step as step_lib

    t0 = time.perf_counter()
    device = jax.devices()[0]
    peak = metrics_lib.peak_flops_per_device(device.device_kind)
    gbps = args.hbm_gbps or hbm_gbps(device.device_kind)
    report = Report(Path(args.out), {
        "device": {"kind": device.device_kind, "platform": device.platform,
                   "count": jax.device_count(), "peak_bf16_flops": peak, "hbm_gbps": gbps},
        "versions": {"jax": jax.__version__, "jaxlib": __import__("jaxlib").__version__,
                     "flax": __import__("flax").__version__, "python": platform.python_version()},
        "tiny": args.tiny, "targets": TARGETS,
    })
    report.write()
    if device.platform != "gpu" and not args.tiny:
        print(f"[gpu_check] no GPU (first device: {device.device_kind}); use --tiny on CPU",
              file=sys.stderr)
        return 2

    config = base_config.get_config()
    config.llm.remat = not args.no_remat
    config.llm.attention_impl = args.attention
    config.data.seq_len = 300
    config.train.batch_size = args.batch
    if args.tiny:
        config.llm.dtype = config.llm.param_dtype = "float32"
        config.encoder.update(d_model=32, num_layers=1, num_heads=4)
        config.lora.update(rank=4, alpha=8.0)
    config = RunSpec.from_config(config)  # what train.py makes of the config
    llm_config = Phi3Config.from_hf(phi35_mini_hf_config(args.tiny), **config.llm.compute())
    mesh = sharding_lib.make_mesh(config.mesh.axes())
    box: dict = {}

    def build():
        start = time.perf_counter()
        llm = nnx.jit(lambda: Phi3ForCausalLM(llm_config, rngs=nnx.Rngs(0)))()
        model = wavellm.build_wavellm(config.model, llm, mesh)
        counts = wavellm.param_counts(model)
        box["state"] = state_lib.create_train_state(
            model, config.train, LossWeights.of(config.train, config.data.target_fps), mesh)
        jax.block_until_ready(box["state"])
        box["counts"] = counts
        return {"params": counts, "base_bytes": _nbytes(nnx.state(llm, nnx.Param)),
                "init_s": round(time.perf_counter() - start, 2),
                "memory_after_init_bytes": _peak_bytes(device)}

    def train():
        state = box.pop("state")
        soft = int(config.bridge.num_queries)
        batch = distributed.global_batch(
            make_batch(args.batch, int(config.data.seq_len), args.tokens, llm_config.vocab_size),
            mesh)
        step_fn = step_lib.jit_train_step(state, batch, mesh)
        rng = jax.random.key(0)
        start = time.perf_counter()
        compiled = step_fn.lower(state, batch, rng).compile()
        compile_s = time.perf_counter() - start
        holder = {"state": state}

        def one():
            holder["state"], metrics = compiled(holder["state"], batch, rng)
            jax.block_until_ready((holder["state"], metrics))

        t, times = _median_time(one, args.repeats, warmup=2)
        box["state"] = holder["state"]
        counts = box["counts"]
        seq = soft + args.tokens
        tokens_per_s = args.batch * seq / t
        palm = metrics_lib.model_flops_per_token(llm_config, counts["base"] + counts["lora"], seq)
        # Needed FLOPs: frozen base weights 4 per token (no weight gradient), LoRA + the
        # embedding lookup excluded, attention as in the PaLM count; encoder/bridge omitted
        # (their tokens are frames, < 1% here).
        frozen_matmul = counts["base"] - llm_config.vocab_size * llm_config.hidden_size
        attn = 12.0 * llm_config.num_hidden_layers * llm_config.num_attention_heads \
            * llm_config.head_dim * seq
        needed = 4.0 * frozen_matmul + 6.0 * counts["lora"] + attn
        return {
            "batch": args.batch, "text_tokens": args.tokens, "soft_tokens": soft,
            "remat": bool(config.llm.remat), "attention_impl": config.llm.attention_impl,
            "compile_s": round(compile_s, 2), "step_s": t, "step_times_s": times,
            "tokens_per_s": tokens_per_s,
            "model_flops_per_token": palm, "needed_flops_per_token": needed,
            "mfu": None if peak is None else tokens_per_s * palm / peak,
            "mfu_needed": None if peak is None else tokens_per_s * needed / peak,
            "mfu_measured": (None if not box.get("flops")
                             else tokens_per_s * needed / box["flops"]),
            "peak_memory_bytes": _peak_bytes(device),
            "peak_memory_gb": (None if _peak_bytes(device) is None
                               else _peak_bytes(device) / 1e9),
        }

    def decode():
        llm = box["state"].model().llm  # the trained model as infer.py decodes it (LoRA on)
        prompt = np.random.default_rng(1).integers(3, llm_config.vocab_size - 1,
                                                    (1, args.prompt_tokens)).astype(np.int32)
        n = args.decode_tokens
        holder = {}

        def fresh():
            holder["s"], _ = gen.prefill(llm, prompt, max_new_tokens=n + 1)
            jax.block_until_ready(holder["s"])

        def run_decode():
            state, tokens = gen.decode_chunk(llm, holder["s"], n)
            jax.block_until_ready(tokens)

        fresh()
        start = time.perf_counter()
        run_decode()  # compile + first run
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            fresh()
            start = time.perf_counter()
            run_decode()
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        weights = nnx.state(llm, nnx.Param)
        embed = llm.model.embed_tokens.embedding[...]
        weight_bytes = _nbytes(weights) - embed.size * embed.dtype.itemsize
        c = llm_config
        mean_context = args.prompt_tokens + n / 2
        kv_bytes = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * \
            jnp.dtype(c.dtype).itemsize * mean_context
        tps = n / t
        roofline = None if gbps is None else gbps * 1e9 / (weight_bytes + kv_bytes)
        return {"prompt_tokens": args.prompt_tokens, "new_tokens": n, "decode_s": t,
                "decode_times_s": times, "compile_s": round(compile_s, 2), "tokens_per_s": tps,
                "bytes_per_token": weight_bytes + kv_bytes, "roofline_tokens_per_s": roofline,
                "fraction_of_roofline": None if roofline is None else tps / roofline}

    def prefill():
        llm = box["state"].model().llm
        ids = np.random.default_rng(2).integers(3, llm_config.vocab_size - 1,
                                                 (1, args.prefill_tokens)).astype(np.int32)

        def one():
            jax.block_until_ready(gen.prefill(llm, ids, max_new_tokens=1))

        start = time.perf_counter()
        one()
        compile_s = time.perf_counter() - start
        t, times = _median_time(one, args.repeats, warmup=0)
        return {"tokens": args.prefill_tokens, "prefill_s": t, "prefill_times_s": times,
                "compile_s": round(compile_s, 2), "tokens_per_s": args.prefill_tokens / t}

    def ceilings():
        n = (1 << 30) if not args.tiny else (1 << 20)  # bf16 elements: 2 GiB (2 MiB tiny)
        x = jax.random.normal(jax.random.key(3), (n,), jnp.bfloat16)
        copy = jax.jit(lambda a: a + jnp.bfloat16(0))
        t, _ = _median_time(lambda: jax.block_until_ready(copy(x)), 10, warmup=2)
        size = 8192 if not args.tiny else 256
        a = jax.random.normal(jax.random.key(4), (size, size), jnp.bfloat16)
        b = jax.random.normal(jax.random.key(5), (size, size), jnp.bfloat16)
        mm = jax.jit(lambda p, q: p @ q)
        tm, _ = _median_time(lambda: jax.block_until_ready(mm(a, b)), 10, warmup=3)
        box["gbps"], box["flops"] = 2 * n * 2 / t / 1e9, 2 * size ** 3 / tm
        return {"copy_gbps": box["gbps"], "bf16_matmul_flops": box["flops"],
                "datasheet_gbps": gbps, "datasheet_bf16_flops": peak}

    report.stage("ceilings", ceilings)
    if not args.hbm_gbps and box.get("gbps"):
        gbps = box["gbps"]  # the roofline of the bandwidth measured on this device
    report.stage("build", build)
    if "state" in box:
        report.stage("train", train)
    if "state" in box:
        report.stage("decode", decode)
        report.stage("prefill", prefill)
    tr, de = report.data.get("train", {}), report.data.get("decode", {})
    report.data["targets_met"] = {
        "mfu": None if tr.get("mfu") is None else tr["mfu"] >= TARGETS["mfu"],
        "decode": (None if de.get("fraction_of_roofline") is None
                   else de["fraction_of_roofline"] >= TARGETS["decode_fraction_of_roofline"]),
        "memory": (None if tr.get("peak_memory_gb") is None
                   else tr["peak_memory_gb"] <= TARGETS["peak_memory_gb"]),
    }
    report.data["total_wall_s"] = round(time.perf_counter() - t0, 2)
    report.write()
    failed = [k for k in ("build", "train", "decode", "prefill")
              if "error" in report.data.get(k, {"error": "not run"})]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
