"""Ahead-of-time compile of the real train step from shapes alone: its memory and compile time.

    python -m wavepose_jax.training.aot --config configs/base.py [--tokens 1024] [--json OUT]
        [--config.train.batch_size=4 --config.llm.remat=True --config.llm.scan_layers=False]

`--config` takes a config file or the name of a packaged config (`base`, `tiny`), with any
field overridden by `--config.<group>.<field>=value`, as `train.py` takes them.

builds the train state `train.py` builds (training/state.py: the frozen base, encoder, bridge,
LoRA, AdamW moments) and one batch of `train.batch_size` rows, `--tokens` text tokens each
(default: the largest of `data.buckets`; the language model reads `bridge.num_queries` soft
tokens more) and `data.seq_len` frames, all as `jax.ShapeDtypeStruct`s with the shardings of a
run on the current devices. It then lowers and compiles `training/step.jit_train_step` (the
jitted, donating step train.py runs) and prints XLA's memory analysis of the program:

    argument   inputs: train state + batch + rng key
    output     outputs: the new state + metrics
    alias      output bytes written into donated input buffers (the state is donated)
    temp       scratch while the step runs: activations, gradients, widened weights
    peak       argument + output - alias + temp: memory the step needs on one device

No weight is read or allocated: the base's shapes come from `llm.path`'s config.json (a local
or package directory, or the Hugging Face cache), or, for a hub id whose config.json
`models/phi3_bases.py` holds (microsoft/Phi-3.5-mini-instruct), from there without a download.
A bad config, path or flag is one line on stderr with exit status 2 (see `wavepose_jax.cli`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import flags

from wavepose_jax import cli
from wavepose_jax import sharding as sharding_lib
from wavepose_jax.data.batch import Batch, token_bucket
from wavepose_jax.data.faults import FAULTS
from wavepose_jax.models import phi3_bases
from wavepose_jax.models.phi3 import Phi3Config
from wavepose_jax.spec import DataSpec, RunSpec
from wavepose_jax.training import state as state_lib
from wavepose_jax.training import step as step_lib
from wavepose_jax.training.loss import LossWeights


@dataclasses.dataclass(frozen=True)
class AotReport:
    """Memory and compile time of one compiled train step (bytes and seconds)."""

    batch_size: int
    tokens: int  # text tokens per row (the LLM reads the soft tokens besides)
    argument: int
    output: int
    alias: int
    temp: int
    lower_s: float
    compile_s: float
    device: str

    @property
    def peak(self) -> int:
        """Bytes the step needs on one device: inputs, outputs not aliased to them, scratch."""
        return self.argument + self.output - self.alias + self.temp

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "peak": self.peak}

    def format(self) -> str:
        gib = 1024 ** 3
        return "\n".join([
            f"train step, batch {self.batch_size} x {self.tokens} tokens on {self.device}",
            *(f"{name:>9}: {value / gib:8.3f} GiB" for name, value in (
                ("argument", self.argument), ("output", self.output), ("alias", self.alias),
                ("temp", self.temp), ("peak", self.peak))),
            f"{'lower':>9}: {self.lower_s:8.1f} s",
            f"{'compile':>9}: {self.compile_s:8.1f} s"])


_PACKAGE_PREFIX = "wavepose_jax:"  # a directory inside the package (as hf.resolve reads it)


def base_config(path: str) -> Phi3Config:
    """The base architecture of `path` (a run's `llm.path`) from its config.json alone: a local
    directory, a package directory `wavepose_jax:<path>`, a hub id in the local Hugging Face
    cache, or a hub id whose config.json `models/phi3_bases.py` holds. Never downloads.

    Raises:
      ValueError: naming `llm.path` when none of these has the config.
    """
    path = str(path)
    if path.startswith(_PACKAGE_PREFIX):
        directory = Path(__file__).resolve().parents[1] / path[len(_PACKAGE_PREFIX):]
    else:
        directory = Path(path).expanduser()
    hf_config = None
    if (directory / "config.json").is_file():
        hf_config = json.loads((directory / "config.json").read_text())
    else:
        try:
            from huggingface_hub import try_to_load_from_cache  # pylint: disable=import-outside-toplevel

            repo_id, _, revision = path.partition("@")
            cached = try_to_load_from_cache(repo_id, "config.json", revision=revision or None)
            if isinstance(cached, str):
                hf_config = json.loads(Path(cached).read_text())
        except (ImportError, ValueError, OSError):  # not a hub id, or no usable cache
            pass
        hf_config = hf_config or phi3_bases.hub_config(path)
    if hf_config is None:
        raise ValueError(f"config field 'llm.path': {path}: no config.json there, in the Hugging "
                         f"Face cache or among the known bases {sorted(phi3_bases.HUB_IDS)}")
    try:
        return Phi3Config.from_hf(hf_config)
    except (ValueError, TypeError) as e:
        raise ValueError(f"config field 'llm.path': {path}: config.json: {e}") from None


def abstract_batch(data: DataSpec, batch_size: int, tokens: int,
                   mesh: jax.sharding.Mesh) -> Batch:
    """A training batch (data/batch.py) of ShapeDtypeStructs, split over the data axes; the
    target slots are those of the longest target the data allows (`data.max_target_tokens`
    and its <|end|>), at most `tokens`."""
    sharding = sharding_lib.batch_sharding(mesh)
    slots = min(tokens, token_bucket(data.max_target_tokens + 1, data.buckets)
                if data.max_target_tokens + 1 <= max(data.buckets) else tokens)
    frames, faults = data.seq_len, len(FAULTS)
    channels = data.num_channels  # the signals + rep/fault channels

    def leaf(shape, dtype):
        return jax.ShapeDtypeStruct((batch_size, *shape), dtype, sharding=sharding)

    return Batch(
        waves=leaf((frames, channels), jnp.float32), frame_mask=leaf((frames,), bool),
        phase=leaf((frames,), jnp.float32), phase_mask=leaf((frames,), bool),
        faults=leaf((faults,), jnp.float32), fault_mask=leaf((faults,), bool),
        tokens=leaf((tokens,), jnp.int32), token_mask=leaf((tokens,), bool),
        loss_mask=leaf((tokens,), bool), prompt_len=leaf((), jnp.int32),
        example_weight=leaf((), jnp.float32), target_pos=leaf((slots,), jnp.int32))


def compile_train_step(spec: RunSpec, llm_config: Phi3Config, tokens: int | None = None,
                       mesh: jax.sharding.Mesh | None = None,
                       state: state_lib.TrainState | None = None):
    """Lowers and compiles the train step of a run from shapes; returns (report, compiled).

    Args:
      spec: the run's settings (`train.batch_size`, `train.grad_accum`, `llm.*`,
        `data.seq_len`, ...).
      llm_config: the base architecture (its compute settings are the spec's).
      tokens: text tokens per row (default: the largest of `data.buckets`).
      mesh: device mesh (default: `spec.mesh` over the current devices, as train.py makes it).
      state: a train state (arrays or ShapeDtypeStructs) to compile for, e.g. to run the
        compiled step on it; default `state.abstract_train_state` (nothing allocated).
    """
    mesh = mesh or sharding_lib.make_mesh(spec.mesh.axes())
    tokens = int(tokens or max(spec.data.buckets))
    batch_size = spec.train.batch_size
    if state is None:
        llm_config = dataclasses.replace(llm_config, **spec.llm.compute())
        state = state_lib.abstract_train_state(
            spec.model, spec.train, LossWeights.of(spec.train, spec.data.target_fps),
            llm_config, mesh)
    else:
        state = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    batch = abstract_batch(spec.data, batch_size, tokens, mesh)
    key = jax.eval_shape(lambda: jax.random.key(0))
    rng = jax.ShapeDtypeStruct(key.shape, key.dtype,
                               sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    step = step_lib.jit_train_step(state, batch, mesh, grad_accum=spec.train.grad_accum)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch, rng)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    memory = compiled.memory_analysis()
    device = jax.devices()[0]
    report = AotReport(
        batch_size=batch_size, tokens=tokens, argument=int(memory.argument_size_in_bytes),
        output=int(memory.output_size_in_bytes), alias=int(memory.alias_size_in_bytes),
        temp=int(memory.temp_size_in_bytes), lower_s=t1 - t0, compile_s=t2 - t1,
        device=f"{len(mesh.devices.flat)} x {device.platform} ({device.device_kind})")
    return report, compiled


# ------------------------------------------------------------------------------------------------
# Command line

COMMAND = cli.Command("python -m wavepose_jax.training.aot", __doc__)
_F = COMMAND.flags
cli.define_config_flag(_F)
flags.DEFINE_integer("tokens", None, "text tokens per row (default: the largest of "
                     "data.buckets)", lower_bound=1, flag_values=_F)
flags.DEFINE_string("json", None, "also write the report to this JSON file", flag_values=_F)


def _run(args, _) -> int:
    cli.config_file(args, example="base")
    spec = RunSpec.from_config(args.config)  # loads the file; an error in it is one line too
    llm_config = base_config(spec.llm.path)
    report, _ = compile_train_step(spec, llm_config, args.tokens)
    llm = spec.llm
    print(f"base: {llm.path} | llm.dtype {llm.dtype} | remat {llm.remat} | "
          f"scan_layers {llm.scan_layers}")
    print(report.format(), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"llm_path": llm.path, "remat": llm.remat, "scan_layers": llm.scan_layers,
                       **report.to_dict()}, f, indent=2)
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see `wavepose_jax.cli`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return COMMAND.main(_run, cli.config_argv(argv))


if __name__ == "__main__":
    sys.exit(main())
