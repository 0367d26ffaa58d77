"""Random-weight Hugging Face bases with the exact shapes of a real one, made without a download.

    python -m wavepose_jax.random_base --shape phi-3.5-mini --out /tmp/phi35-random [--seed 0]
                                       [--shard_size 2GB] [--overwrite]

writes a directory that `hf.load_pretrained`, `train.py --config.llm.path=OUT` and
transformers' `Phi3ForCausalLM.from_pretrained` read like the real model's:

  * config.json: the named model's own (`models/phi3_bases.py`; phi-3.5-mini is
    Phi-3.5-mini-instruct: hidden 3072, 32 layers, 32 heads, vocab 32064, LongRoPE with 48
    short/long factors, 3,821,079,552 parameters);
  * model-0000k-of-0000n.safetensors in bf16 (shards of at most `--shard_size`, default 2 GB)
    and model.safetensors.index.json;
  * the tokenizer of the CPU demo (wavepose_jax/assets/tiny-phi3: Phi-3's special tokens and
    chat template, 773 ids, all below the vocabulary size) and a generation_config.json whose
    stop ids are that tokenizer's <|end|>, <|assistant|>, <|endoftext|>.

It exists to try and measure the real recipe (memory, compile time, step time) before
downloading 7.6 GB; the text such a model writes is noise.

Weights are drawn N(0, initializer_range) (norm weights 1, as transformers initialises them),
each tensor from its own seed, and streamed into the shard files one tensor at a time: memory
stays at one tensor, whatever the model size.

The output directory must be new or empty (or `--overwrite`). An unknown `--shape`, a bad
flag or an unwritable directory is one line on stderr with exit status 2 (see
`wavepose_jax.cli`).
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import ml_dtypes
import numpy as np
from absl import flags

from wavepose_jax import cli, hf, hf_layout
from wavepose_jax.models.phi3 import Phi3Config
from wavepose_jax.models.phi3_bases import SHAPES, hf_config

TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "tiny-phi3"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
STOP_TOKENS = ("<|end|>", "<|assistant|>", "<|endoftext|>")


def _shard_plan(shapes: list[tuple[str, tuple[int, ...]]], limit: int) -> list[list]:
    """Tensors grouped into consecutive shards of at most `limit` bytes (bf16) each."""
    shards, current, size = [], [], 0
    for name, shape in shapes:
        nbytes = 2 * int(np.prod(shape))
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    return shards + ([current] if current else [])


def _random_tensor(name: str, shape: tuple[int, ...], std: float, seed: int,
                   index: int) -> np.ndarray:
    """bf16 N(0, std) (ones for norm weights) drawn from (seed, tensor index)."""
    if name.endswith("norm.weight"):
        return np.ones(shape, ml_dtypes.bfloat16)
    rng = np.random.default_rng([seed, index])
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= np.float32(std)
    return x.astype(ml_dtypes.bfloat16)


def _write_shard(path: Path, tensors: list, seed: int, first_index: int, std: float) -> int:
    """Streams one safetensors file: header, then each tensor's bytes as it is drawn."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for k, (name, shape) in enumerate(tensors):
            f.write(_random_tensor(name, shape, std, seed, first_index + k).tobytes())
    return offset


def write_random_base(out: str | Path, shape: str = "phi-3.5-mini", *, seed: int = 0,
                      shard_size: int | str = "2GB") -> Path:
    """Writes the random-weight base `shape` to `out` (see the module docstring)."""
    config_json = hf_config(shape)
    config = Phi3Config.from_hf(config_json)
    tensors = hf_layout.hf_tensor_shapes(config)
    shards = _shard_plan(tensors, hf._parse_size(shard_size))  # pylint: disable=protected-access
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weight_map, total, index = {}, 0, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        total += _write_shard(out / fname, shard, seed, index, config.initializer_range)
        index += len(shard)
        weight_map.update({name: fname for name, _ in shard})
    (out / hf.INDEX_FILE).write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (out / hf.CONFIG_FILE).write_text(json.dumps(config_json, indent=2))
    for name in TOKENIZER_FILES:
        if (TOKENIZER_DIR / name).is_file():
            shutil.copy(TOKENIZER_DIR / name, out / name)
    tokenizer = hf.load_tokenizer(out)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"{out}: tokenizer has {len(tokenizer)} ids, more than vocab_size "
                         f"{config.vocab_size}")
    stop = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": stop,
         "pad_token_id": tokenizer.pad_token_id}, indent=2))
    return out


COMMAND = cli.Command("python -m wavepose_jax.random_base", __doc__)
_F = COMMAND.flags
flags.DEFINE_string("shape", "phi-3.5-mini", f"the model whose shapes to copy: one of "
                    f"{', '.join(sorted(SHAPES))}", flag_values=_F)
flags.DEFINE_string("out", None, "output directory (new or empty)", flag_values=_F,
                    required=True)
flags.DEFINE_integer("seed", 0, "random seed of the weights", flag_values=_F)
flags.DEFINE_string("shard_size", "2GB", "largest safetensors file, e.g. 2GB, 500MB",
                    flag_values=_F)
flags.DEFINE_boolean("overwrite", False, "write into an output directory that is not empty",
                     flag_values=_F)


def _check_out(path: str, overwrite: bool) -> None:
    """Refuses an output path that is a file, or a non-empty directory unless `overwrite`."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise cli.UsageError(f"--out: {path}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise cli.UsageError(f"--out: {path}: directory is not empty (pass --overwrite to write "
                             "into it)")


def _run(args, _) -> int:
    if args.shape not in SHAPES:
        raise cli.UsageError(f"--shape: unknown shape {args.shape!r}; expected one of "
                             f"{', '.join(sorted(SHAPES))}")
    try:
        shard_size = hf._parse_size(args.shard_size)  # pylint: disable=protected-access
    except ValueError:
        shard_size = 0
    if shard_size <= 0:
        raise cli.UsageError(f"--shard_size: expected a positive size such as 2GB or 500MB, "
                             f"got {args.shard_size!r}")
    _check_out(args.out, args.overwrite)
    t0 = time.time()
    try:
        out = write_random_base(args.out, args.shape, seed=args.seed, shard_size=shard_size)
    except OSError as e:  # unwritable, disk full: the file and the reason
        raise OSError(f"{e.filename or args.out}: cannot write: "
                      f"{e.strerror or cli.one_line(e)}") from None
    config = Phi3Config.from_hf(hf_config(args.shape))
    n = sum(int(np.prod(s)) for _, s in hf_layout.hf_tensor_shapes(config))
    print(f"wrote {out}: {args.shape}, {n:,} parameters (bf16) in {time.time() - t0:.0f}s")
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see `wavepose_jax.cli`)."""
    return COMMAND.main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
