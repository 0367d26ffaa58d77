"""Loading models: a base for a new run, and a trained run restored from its checkpoint.

    base = load_base(spec.llm, mesh)           # the base weights with the run's dtypes
                                               # (.model) and their files' SHA-256 (.digests)
    model = new_model(spec, mesh, base.model)  # + fresh encoder, bridge, LoRA (+ PEFT adapter)
    record = base_record_of(model.llm, path=..., files=base.digests)  # what a checkpoint keeps
    run = restore(workdir)                     # Run(model, tokenizer, spec, step, record)

`restore` reads the checkpoint once: its settings (`spec.RunSpec`) and base-model record,
then the base named by the record (or the `base` given instead, when the weights moved),
refused when it does not match the record -- its fingerprint (config and tensor shapes) or
the SHA-256 of any of its safetensors files, hashed while they load -- then the trained
parameters (encoder, bridge, LoRA) onto it.

This module is the only one that puts files and models together: models never import it
(see docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from wavepose_jax import hf, peft_io
from wavepose_jax.base_record import BaseModelRecord, base_record_of
from wavepose_jax.models import wavellm
from wavepose_jax.models.lora import trainable_filter
from wavepose_jax.models.phi3 import Phi3ForCausalLM
from wavepose_jax.spec import LLMSpec, RunSpec
from wavepose_jax.training import checkpoint as ckpt_lib

# How to make the run a command was pointed at when it has no checkpoints (the CPU demo's).
TRAIN_COMMAND = "python train.py --config configs/tiny.py --workdir {workdir}"


def load_base(llm: LLMSpec, mesh: jax.sharding.Mesh | None = None,
              path: str | None = None) -> hf.LoadedWeights:
    """The base language model of a run (`.model`) and the SHA-256 of its weight files
    (`.digests`, for its `base_record_of`): `path` (default `llm.path`) with the compute
    settings of `llm`, each tensor placed onto its sharding when `mesh` is given."""
    return hf.load_weights(path or llm.path, mesh=mesh, **llm.compute())


def new_model(spec: RunSpec, mesh: jax.sharding.Mesh | None = None,
              llm: Phi3ForCausalLM | None = None) -> wavellm.WaveLLM:
    """A model to train: the base (`load_base` unless `llm` is given), fresh encoder, bridge and
    LoRA deltas, then the PEFT adapter of `llm.adapter` when one is named."""
    llm = load_base(spec.llm, mesh).model if llm is None else llm
    model = wavellm.build_wavellm(spec.model, llm, mesh)
    if spec.llm.adapter:
        peft_io.load_peft_adapter(model.llm, spec.llm.adapter)
    return model


@dataclasses.dataclass
class Run:
    """A trained run restored from its checkpoint."""

    model: wavellm.WaveLLM
    tokenizer: Any  # None only when restored with need_tokenizer=False from a base without one
    spec: RunSpec
    step: int
    record: BaseModelRecord  # the base model the run was trained on (path as loaded)
    workdir: str
    stop_ids: tuple[int, ...]  # generation ends on these (the base's generation config)


def restore(workdir: str | os.PathLike, step: int | None = None, base: str | None = None, *,
            need_tokenizer: bool = True) -> Run:
    """The model of a training run at `step` (default: the latest checkpoint).

    Args:
      workdir: the run directory (holding `checkpoints/`).
      step: checkpoint step; None for the latest.
      base: base model directory or hub id to load instead of the one the checkpoint records
        (the weights moved); it must still match the recorded fingerprint and file hashes.
      need_tokenizer: a base without tokenizer files is an error (else `Run.tokenizer` is None).

    Raises:
      FileNotFoundError: `workdir` has no checkpoints directory; the message, the same for
        every command (infer, evaluate, export), says how to make one (`TRAIN_COMMAND`).
      CheckpointMismatchError: no checkpoint, or the base model differs from the recorded one
        (other shapes, or a safetensors file whose content changed: the file is named).
      hf.WeightsError: the base model or its tokenizer cannot be loaded (e.g. a truncated
        safetensors file, named).
    """
    workdir = os.fspath(workdir)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(
            f"{workdir}: no checkpoint (no {os.path.join(workdir, 'checkpoints')} directory); "
            f"create one with `{TRAIN_COMMAND.format(workdir=workdir)}`")
    requested = step
    with ckpt_lib.Checkpointer(workdir, read_only=True) as ckpt:
        step, config_dict, record = ckpt.read_record(step)
        where = f"{ckpt.directory}/{step}"
        if base is not None:
            record = dataclasses.replace(record, path=str(base))
        if record.path is None:
            raise ckpt_lib.CheckpointMismatchError(
                f"{where}: base model was randomly initialised; it has no weights or tokenizer "
                "to load")
        try:
            spec = RunSpec.from_config(config_dict)
        except ValueError as e:
            raise ckpt_lib.CheckpointMismatchError(f"{where}: its settings: {e}") from None
        loaded = load_base(spec.llm, path=record.path)
        llm = loaded.model
        # The file hashes were computed while the base loaded: recording them costs nothing.
        current = base_record_of(llm, path=record.path, files=loaded.digests)
        ckpt_lib.check_base(record, current, where)
        tokenizer = hf.load_tokenizer(record.path, required=need_tokenizer)
        stop_ids = hf.stop_ids(record.path, tokenizer)
        model = wavellm.build_wavellm(spec.model, llm)
        # Trainable parameters are stored in float32 (training/state.py).
        params = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                x.shape, jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype),
            nnx.state(model, trainable_filter(spec.train.trainable)))
        # Without `step`, an unreadable latest step falls back to the one before (warned).
        restored = ckpt.restore(requested, abstract_state={"params": params}, base=current,
                                partial=True)
    nnx.update(model, restored.state["params"])
    return Run(model=model, tokenizer=tokenizer, spec=spec, step=restored.step,
               record=current, workdir=workdir, stop_ids=stop_ids)
