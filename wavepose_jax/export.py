"""Exports a trained run to Hugging Face formats.

    python -m wavepose_jax.export --ckpt WORKDIR [--step S] [--peft OUT] [--merged OUT2]

restores the run in WORKDIR (its base model, checked against the checkpoint's fingerprint, plus
the trained encoder, bridge and LoRA; see `run.restore`) and writes either or both of:

* `--peft OUT`: a PEFT LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`) that
  `peft.PeftModel.from_pretrained` loads onto transformers' `Phi3ForCausalLM` of the base named
  in `base_model_name_or_path`, plus the motion encoder and bridge (`motion.safetensors`,
  `motion_config.json`); see `peft_io`.
* `--merged OUT2`: the base with the LoRA deltas folded in (W + alpha/r * A @ B) as a
  Hugging Face model directory (config.json, safetensors, and the base's tokenizer when it
  has one), loadable by transformers and by `hf.load_pretrained`.

A PEFT adapter trained elsewhere goes the other way with `peft_io.load_peft_adapter`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wavepose_jax import hf, peft_io
from wavepose_jax import run as run_lib
from wavepose_jax.training.checkpoint import CheckpointMismatchError


def base_location(path: str) -> str:
    """The base model path for `base_model_name_or_path`: absolute when local, else the hub id."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.is_dir() else path


def export(workdir: str, *, peft_dir: str | None = None, merged_dir: str | None = None,
           step: int | None = None) -> int:
    """Writes the requested exports of the run in `workdir`; returns the exported step."""
    run = run_lib.restore(workdir, step, need_tokenizer=False)
    model = run.model
    base = base_location(run.record.path)
    if peft_dir is not None:
        peft_io.save_peft_adapter(model.llm, peft_dir, base_model_name_or_path=base,
                                  lora_dropout=float(run.config.lora.dropout))
        peft_io.save_motion(model.encoder, model.bridge, peft_dir)
    if merged_dir is not None:
        hf.save_pretrained(hf.merge_lora(model.llm), merged_dir, tokenizer=run.tokenizer)
    return run.step


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="training run directory (WORKDIR)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    parser.add_argument("--peft", help="write a PEFT LoRA adapter + motion weights here")
    parser.add_argument("--merged", help="write the base with LoRA merged in here (HF format)")
    args = parser.parse_args(argv)
    if args.peft is None and args.merged is None:
        parser.error("nothing to export: give --peft and/or --merged")
    try:
        step = export(args.ckpt, peft_dir=args.peft, merged_dir=args.merged, step=args.step)
    except (CheckpointMismatchError, hf.WeightsError, FileNotFoundError, OSError,
            ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for kind, out in (("PEFT adapter", args.peft), ("merged model", args.merged)):
        if out is not None:
            print(f"step {step}: {kind} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
