"""Orbax checkpoints of a training run: trainable state, data position, config, base-model record.

Layout (one Orbax `CheckpointManager` step directory per saved step):

    WORKDIR/checkpoints/<step>/
        state/    trainable parameters + optimizer state + step (any pytree; sharded arrays)
        data/     the grain data iterator position, one JSON per process
        config/   the run's ConfigDict as JSON
        base/     the base-model record: path, init seed and fingerprint of the frozen weights

The frozen base weights (billions of parameters for Phi-3.5-mini) are never written. Instead
the record stores a fingerprint -- a SHA-256 over the base config fields that shape the
weights plus every base tensor's name, shape and dtype (and the init seed of a randomly
initialised base) -- and `restore` refuses, with a one-line `CheckpointMismatchError`, a
checkpoint trained on a different base.

Retention: the last `keep` steps plus the step with the lowest `val_loss` metric both survive
(`LatestN` or `BestN`). Saves are asynchronous: `save` returns once the arrays are copied off
the devices; `wait()` blocks until the files are committed.

Restoring onto another mesh or device count works: `restore` takes the abstract state and the
target shardings of the *new* mesh and Orbax reads each shard straight into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from grain import checkpoint as grain_checkpoint
from orbax.checkpoint import checkpoint_managers as ocp_managers

from wavepose_jax.models.lora import is_lora_path

# Fields of an HF config.json that do not change the base weights (dtypes, runtime switches,
# dropout rates, bookkeeping); every other field enters the fingerprint.
_IGNORED_CONFIG_KEYS = frozenset({
    "_name_or_path", "name_or_path", "architectures", "auto_map", "transformers_version",
    "torch_dtype", "dtype", "param_dtype", "remat", "attention_impl", "attn_implementation",
    "_attn_implementation", "use_cache", "attention_dropout", "embd_pdrop", "resid_pdrop",
    "initializer_range", "model_type",
})

VAL_METRIC = "val_loss"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is restored into (different base, missing step)."""


def tensor_signature(tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """Sorted (name, shape, dtype) of every array leaf of `tree`, adapter tensors excluded.

    `tree` may hold concrete arrays or `jax.ShapeDtypeStruct`s (e.g. `nnx.eval_shape` output),
    so the signature of a multi-billion-parameter model costs nothing to compute.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    signature = []
    for path, leaf in leaves:
        if is_lora_path(path) or not hasattr(leaf, "shape"):
            continue
        name = jax.tree_util.keystr(path)
        signature.append((name, tuple(int(d) for d in leaf.shape), str(np.dtype(leaf.dtype))))
    return sorted(signature)


def base_fingerprint(hf_config: Mapping[str, Any], signature: Iterable[tuple]) -> str:
    """SHA-256 of the weight-shaping config fields and the tensor signature."""
    config = {k: v for k, v in sorted(hf_config.items()) if k not in _IGNORED_CONFIG_KEYS}
    payload = json.dumps({"config": config, "tensors": [list(t) for t in signature]},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class BaseModelRecord:
    """What a checkpoint needs to find and verify its frozen base model.

    Attributes:
      path: HF directory or hub id of the base weights; None for a randomly initialised base.
      init_seed: seed of a randomly initialised base (None when loaded from `path`).
      fingerprint: `base_fingerprint` of the base config and tensors.
      num_params: number of base parameters (informational).
    """

    path: str | None
    init_seed: int | None
    fingerprint: str
    num_params: int

    @classmethod
    def from_model(cls, base_state: Any, hf_config: Mapping[str, Any], *, path: str | None,
                   init_seed: int | None = None) -> BaseModelRecord:
        """Record of a base model given its (abstract or concrete) parameter state."""
        signature = tensor_signature(base_state)
        config = dict(hf_config)
        if path is None:
            config["__init_seed__"] = init_seed
        return cls(path=None if path is None else str(path),
                   init_seed=None if path is not None else init_seed,
                   fingerprint=base_fingerprint(config, signature),
                   num_params=int(sum(int(np.prod(s)) for _, s, _ in signature)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BaseModelRecord:
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    def describe(self) -> str:
        origin = self.path if self.path is not None else f"random init (seed {self.init_seed})"
        return f"{origin} [fingerprint {self.fingerprint[:12]}]"


def base_record_of(llm: Any, *, path: str | None, init_seed: int | None = None
                   ) -> BaseModelRecord:
    """Record of a Flax Phi-3 language model (`models.phi3.Phi3ForCausalLM`, LoRA or not).

    The record describes the weights, not their layout: a scanned (stacked) decoder stack is
    fingerprinted as its unrolled twin of the same config and dtypes (the same tensors, one
    per layer), so both forms of one base share a fingerprint.
    """
    from flax import nnx  # pylint: disable=import-outside-toplevel

    if getattr(llm.config, "scan_layers", False):
        twin = dataclasses.replace(llm.config, scan_layers=False)
        abstract = nnx.state(nnx.eval_shape(lambda: type(llm)(twin, rngs=nnx.Rngs(0))), nnx.Param)
    else:
        abstract = jax.eval_shape(lambda: nnx.state(llm, nnx.Param))
    return BaseModelRecord.from_model(abstract, llm.config.to_hf(), path=path,
                                      init_seed=init_seed)


def check_base(saved: BaseModelRecord, current: BaseModelRecord, where: str) -> None:
    """Raises CheckpointMismatchError unless both records describe the same base weights."""
    if saved.fingerprint != current.fingerprint:
        raise CheckpointMismatchError(
            f"{where}: checkpoint was trained on base model {saved.describe()}, "
            f"but the loaded base model is {current.describe()}")


@dataclasses.dataclass
class Restored:
    """The result of `Checkpointer.restore`."""

    step: int
    state: Any                      # the pytree passed to `save`, on the target shardings
    config: dict[str, Any]          # the run config as a plain dict
    base: BaseModelRecord
    metrics: dict[str, Any] | None  # metrics saved with the step (e.g. val_loss)
    data_restored: bool             # whether the data iterator position was restored


def _val_loss(metrics: Mapping[str, float]) -> float:
    return float(metrics.get(VAL_METRIC, float("inf")))


def _config_to_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_json_best_effort"):  # ml_collections.ConfigDict
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(dict(config), default=str))


class Checkpointer:
    """Saves and restores training checkpoints under `WORKDIR/checkpoints` (see module doc)."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 3, *, config: Any = None,
                 base: BaseModelRecord | None = None, async_save: bool = True,
                 read_only: bool = False):
        """Opens (and unless `read_only`, creates) the checkpoint directory.

        Args:
          workdir: run directory; checkpoints go to `workdir/checkpoints`.
          keep: number of most recent checkpoints kept (the best by val_loss is kept too).
          config: run config saved with every checkpoint (ConfigDict or mapping).
          base: record of the frozen base model saved with every checkpoint.
          async_save: write checkpoints in a background thread.
          read_only: open existing checkpoints for restoring only (evaluation, inference).
        """
        self.directory = os.path.abspath(os.path.join(os.fspath(workdir), "checkpoints"))
        if read_only and not os.path.isdir(self.directory):
            raise CheckpointMismatchError(f"{self.directory}: no checkpoint directory")
        self._config = _config_to_dict(config)
        self._base = base
        policy = ocp_managers.AnyPreservationPolicy([
            ocp_managers.LatestN(n=keep),
            ocp_managers.BestN(get_metric_fn=_val_loss, reverse=True, n=1,
                               keep_checkpoints_without_metrics=False),
        ])
        # `best_fn` makes the manager write each step's metrics next to it, so the best step
        # is still known after a restart; `preservation_policy` decides what is deleted.
        options = ocp.CheckpointManagerOptions(
            best_fn=_val_loss, best_mode="min",
            preservation_policy=policy, enable_async_checkpointing=async_save,
            read_only=read_only, create=not read_only,
            save_interval_steps=0 if read_only else 1)
        with _absl_quiet(read_only):  # Orbax warns that a read-only manager is read-only
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    # -- queries ---------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def metrics(self, step: int) -> dict[str, Any] | None:
        return self._manager.metrics(step)

    def best_step(self) -> int | None:
        """Step with the lowest saved val_loss, or None if no step has one."""
        scored = [(m[VAL_METRIC], s) for s in self.all_steps()
                  if (m := self.metrics(s)) and VAL_METRIC in m]
        return min(scored)[1] if scored else None

    def _resolve(self, step: int | None) -> int:
        resolved = self.latest_step() if step is None else step
        if resolved is None or resolved not in self._manager.all_steps():
            what = "no checkpoint" if resolved is None else f"no checkpoint for step {resolved}"
            raise CheckpointMismatchError(f"{self.directory}: {what}")
        return resolved

    def read_record(self, step: int | None = None) -> tuple[int, dict[str, Any], BaseModelRecord]:
        """(step, config dict, base record) of a checkpoint, without touching its arrays.

        Lets a caller (evaluation, inference) rebuild the model the checkpoint was trained with.
        """
        step = self._resolve(step)
        out = self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore(), base=ocp.args.JsonRestore()))
        return step, dict(out["config"]), BaseModelRecord.from_dict(out["base"])

    # -- save / restore --------------------------------------------------------------------------

    def save(self, step: int, state: Any, *, data_iterator: Any = None,
             metrics: Mapping[str, float] | None = None, force: bool = False) -> bool:
        """Starts an (async) save of `state` at `step`; returns whether a save was started.

        Args:
          step: training step (the directory name).
          state: pytree of the trainable parameters, optimizer state and step counter. Never
            pass the frozen base weights.
          data_iterator: grain `DataLoader` iterator whose position is saved (optional).
          metrics: scalars stored with the step; `val_loss` ranks the best checkpoint.
          force: save even if the manager's save policy would skip this step.
        """
        if self._base is None:
            raise ValueError("Checkpointer needs a base model record to save")
        items = dict(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(self._config),
            base=ocp.args.JsonSave(self._base.to_dict()),
        )
        if data_iterator is not None:
            items["data"] = grain_checkpoint.CheckpointSave(data_iterator)
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        return self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                                  force=force)

    def restore(self, step: int | None = None, *, abstract_state: Any, shardings: Any = None,
                data_iterator: Any = None, base: BaseModelRecord | None = None,
                partial: bool = False) -> Restored:
        """Restores a step (default: the latest) onto the given shardings.

        Args:
          step: step to restore; None for the latest.
          abstract_state: pytree with the structure, shapes and dtypes of the saved state
            (arrays or `jax.ShapeDtypeStruct`s; their `.sharding` is used when `shardings`
            is None).
          shardings: pytree of `jax.sharding.Sharding` matching `abstract_state`, e.g. from
            the current mesh; may differ from the mesh the checkpoint was saved on.
          data_iterator: grain `DataLoader` iterator to move to the saved position.
          base: record of the base model in use; the checkpoint's must match (defaults to
            the record given to the constructor).
          partial: restore only the subtrees present in `abstract_state` (e.g. just
            `{"params": ...}` of a saved `{"params", "opt_state", "step"}` for inference).

        Raises:
          CheckpointMismatchError: no such step, or the checkpoint's base model differs.
        """
        step, config, saved_base = self.read_record(step)
        current = base if base is not None else self._base
        if current is not None:
            check_base(saved_base, current, f"{self.directory}/{step}")
        target = _restore_target(abstract_state, shardings)
        if partial:
            restore_args = ocp.checkpoint_utils.construct_restore_args(target)
            items = dict(state=ocp.args.PyTreeRestore(target, restore_args=restore_args,
                                                      partial_restore=True))
        else:
            items = dict(state=ocp.args.StandardRestore(target))
        data_restored = False
        if data_iterator is not None:
            if self._has_data_state(step):
                items["data"] = grain_checkpoint.CheckpointRestore(data_iterator)
                data_restored = True
            else:
                print(f"{self.directory}/{step}: no data iterator state for "
                      f"{jax.process_count()} process(es); data restarts from the beginning",
                      file=sys.stderr)
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        return Restored(step=step, state=out["state"], config=config, base=saved_base,
                        metrics=self.metrics(step), data_restored=data_restored)

    def _has_data_state(self, step: int) -> bool:
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return os.path.exists(os.path.join(self.directory, str(step), "data", name))

    def wait(self) -> None:
        """Blocks until every pending save is committed to disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _absl_quiet(quiet: bool):
    """absl logging at errors only while the block runs (when `quiet`), then as it was."""
    if not quiet:
        yield
        return
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _restore_target(abstract_state: Any, shardings: Any) -> Any:
    """Abstract state with the target sharding attached to every array leaf."""
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x, sharding=None):
        sharding = sharding or getattr(x, "sharding", None) or default
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    if shardings is None:
        return jax.tree.map(leaf, abstract_state)
    return jax.tree.map(leaf, abstract_state, shardings)
