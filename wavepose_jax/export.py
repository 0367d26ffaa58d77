"""Exports a trained run to Hugging Face formats.

    python -m wavepose_jax.export --ckpt WORKDIR [--step S] [--peft OUT] [--merged OUT2]
                                  [--base DIR] [--overwrite]
    wavepose-export ...          (the same, installed)

restores the run in WORKDIR (its base model, checked against the checkpoint's fingerprint, plus
the trained encoder, bridge and LoRA; see `run.restore`) and writes either or both of:

* `--peft OUT`: a PEFT LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`) that
  `peft.PeftModel.from_pretrained` loads onto transformers' `Phi3ForCausalLM` of the base named
  in `base_model_name_or_path`, plus the motion encoder and bridge (`motion.safetensors`,
  `motion_config.json`); see `peft_io`.
* `--merged OUT2`: the base with the LoRA deltas folded in (W + alpha/r * A @ B) as a
  Hugging Face model directory (config.json, safetensors, generation_config.json with every
  stop token, and the base's tokenizer when it has one), loadable by transformers and by
  `hf.load_pretrained`; transformers' `generate()` stops where this project's decoder stops.

An output directory must be new or empty (or `--overwrite`), and never the base's own.

A PEFT adapter trained elsewhere goes the other way with `peft_io.load_peft_adapter`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from wavepose_jax import cli, hf, peft_io
from wavepose_jax import run as run_lib


def base_location(path: str) -> str:
    """The base model for `base_model_name_or_path`: an absolute directory when local (package
    bases included), else the hub id."""
    local = Path(path).expanduser()
    if path.startswith(hf.PACKAGE_PREFIX) or local.is_dir():
        return str(hf.resolve(path).resolve())
    return path.partition("@")[0]


def check_export_dir(path: str | os.PathLike, *, overwrite: bool,
                     base: str | None = None) -> None:
    """Refuses an output directory that would lose data: the base model's own directory (or one
    inside it), a path that is a file, or a non-empty directory unless `overwrite`."""
    out = Path(path).expanduser().resolve()
    if base is not None and Path(base).expanduser().is_dir():
        base_dir = Path(base).expanduser().resolve()
        if out == base_dir or base_dir in out.parents:
            raise ValueError(f"{path}: is the base model's directory {base_dir}; export "
                             "elsewhere (writing there would overwrite the base)")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{path}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{path}: directory is not empty (pass --overwrite to write "
                              "into it)")


def export(workdir: str, *, peft_dir: str | None = None, merged_dir: str | None = None,
           step: int | None = None, base: str | None = None, overwrite: bool = True) -> int:
    """Writes the requested exports of the run in `workdir`; returns the exported step.

    `base` replaces the base model the checkpoint records (it must match its fingerprint).
    Output directories are checked by `check_export_dir` (never the base's own directory).
    """
    run = run_lib.restore(workdir, step, base, need_tokenizer=False)
    model = run.model
    location = base_location(run.record.path)
    for out in (peft_dir, merged_dir):
        if out is not None:
            check_export_dir(out, overwrite=overwrite, base=location)
    if peft_dir is not None:
        peft_io.save_peft_adapter(model.llm, peft_dir, base_model_name_or_path=location,
                                  lora_dropout=run.spec.lora.dropout)
        peft_io.save_motion(model.encoder, model.bridge, peft_dir)
    if merged_dir is not None:
        hf.save_pretrained(hf.merge_lora(model.llm), merged_dir, tokenizer=run.tokenizer,
                           generation_config=hf.generation_config_for(location, run.stop_ids))
    return run.step


COMMAND = cli.Command("python -m wavepose_jax.export", __doc__)
_F = COMMAND.flags
flags.DEFINE_string("ckpt", None, "training run directory (WORKDIR)", flag_values=_F,
                    required=True)
flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)", flag_values=_F)
flags.DEFINE_string("peft", None, "write a PEFT LoRA adapter + motion weights to this directory",
                    flag_values=_F)
flags.DEFINE_string("merged", None, "write the base with LoRA merged in (Hugging Face format) to "
                    "this directory", flag_values=_F)
flags.DEFINE_string("base", None, "base model directory or hub id to use instead of the one the "
                    "checkpoint records (it must match the checkpoint's fingerprint)",
                    flag_values=_F)
flags.DEFINE_boolean("overwrite", False, "write into output directories that are not empty",
                     flag_values=_F)


def _run(args, _) -> int:
    if args.peft is None and args.merged is None:
        raise cli.UsageError("nothing to export: give --peft and/or --merged")
    for out in (args.peft, args.merged):
        if out is not None:
            check_export_dir(out, overwrite=args.overwrite)
    step = export(args.ckpt, peft_dir=args.peft, merged_dir=args.merged, step=args.step,
                  base=args.base)
    for kind, out in (("PEFT adapter", args.peft), ("merged model", args.merged)):
        if out is not None:
            print(f"step {step}: {kind} written to {out}")
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see `wavepose_jax.cli`)."""
    return COMMAND.main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
