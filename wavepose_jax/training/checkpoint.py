"""Orbax checkpoints of a training run: trainable state, data position, config, base-model record.

Layout (one Orbax `CheckpointManager` step directory per saved step):

    WORKDIR/checkpoints/<step>/
        state/    trainable parameters + optimizer state + step (any pytree; sharded arrays)
        data/     the grain data iterator position, one JSON per process
        config/   the run's ConfigDict as JSON
        base/     the base-model record: path, init seed and fingerprint of the frozen weights

The frozen base weights (billions of parameters for Phi-3.5-mini) are never written. Instead
the step holds the base's record (`base_record.BaseModelRecord`: a fingerprint of its config
and tensor shapes -- or the init seed of a randomly initialised base -- and the SHA-256 of each
of its safetensors files, hashed while the loader read them), and `restore` refuses, with a
one-line `CheckpointMismatchError` naming the first file that differs, a checkpoint trained on
a different base: other shapes, or the same shapes with other weights (`check_base`). A
checkpoint written before the file hashes were recorded is restored with a warning that the
content was not verified.

Retention: the last `keep` steps plus the step with the lowest `val_loss` metric both survive
(`LatestN` or `BestN`). Saves are asynchronous: `save` returns once the arrays are copied off
the devices; `wait()` blocks until the files are committed.

Restoring onto another mesh or device count works: `restore` takes the abstract state and the
target shardings of the *new* mesh and Orbax reads each shard straight into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as std_logging
import json
import os
import shutil
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from grain import checkpoint as grain_checkpoint
from orbax.checkpoint import checkpoint_managers as ocp_managers

from wavepose_jax.base_record import BaseModelRecord
from wavepose_jax.files import read_json_object

VAL_METRIC = "val_loss"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is restored into (different base, missing step,
    other shapes), or no readable step is left."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (full disk, permissions ...); earlier steps are intact."""


_UNVERIFIED_WARNED: set[str] = set()  # checkpoints already warned about (once per process)


def check_base(saved: BaseModelRecord, current: BaseModelRecord, where: str) -> None:
    """Raises CheckpointMismatchError unless both records describe the same base weights: the
    same fingerprint (config and tensor shapes, or init seed) and, for a base loaded from
    files, the same SHA-256 for every safetensors file (the first file that differs is named).

    A saved record without file digests (a checkpoint written before they were recorded) is
    accepted with a one-line warning, once per checkpoint step, that the content was not
    verified.
    """
    if saved.fingerprint != current.fingerprint:
        raise CheckpointMismatchError(
            f"{where}: checkpoint was trained on base model {saved.describe()}, "
            f"but the loaded base model is {current.describe()}")
    if saved.path is None:  # a random base: its seed is part of the fingerprint
        return
    if saved.files is None:
        if where not in _UNVERIFIED_WARNED:
            _UNVERIFIED_WARNED.add(where)
            print(f"warning: {where}: the checkpoint records no hashes of its base model's "
                  f"files (written by an older version); the weights of {current.path} were "
                  "not verified", file=sys.stderr, flush=True)
        return
    if current.files is None:
        raise CheckpointMismatchError(
            f"{where}: the loaded base model {current.describe()} has no file hashes to compare "
            "with the checkpoint's")
    for name in sorted(saved.files.keys() | current.files.keys()):
        was, now = saved.files.get(name), current.files.get(name)
        if was == now:
            continue
        file = f"{current.path}/{name}"
        if now is None:
            problem = (f"base model {current.path} has no file {name}, which the base the "
                       f"checkpoint was trained on had (sha256 {was[:12]})")
        elif was is None:
            problem = (f"base model file {file} was not part of the base the checkpoint was "
                       f"trained on (its files: {', '.join(sorted(saved.files))})")
        else:
            problem = (f"base model file {file} differs from the one the checkpoint was "
                       f"trained on (sha256 {now[:12]}, trained on {was[:12]})")
        raise CheckpointMismatchError(f"{where}: {problem}")


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
        _SAVE_FAILURES.install()
        with _absl_quiet(read_only):  # Orbax warns that a read-only manager is read-only
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._saving: tuple[int, int] | None = None  # (step, bytes) of the latest save

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

    def _candidates(self, step: int | None) -> list[int]:
        """[step] when given (it must exist), else every step, newest first (none: raises)."""
        if step is not None:
            return [self._resolve(step)]
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            self._resolve(None)  # raises: no checkpoint
        return steps

    def read_record(self, step: int | None = None) -> tuple[int, dict[str, Any], BaseModelRecord]:
        """(step, config dict, base record) of a checkpoint, without touching its arrays.

        Lets a caller (evaluation, inference) rebuild the model the checkpoint was trained with.
        Without `step`, the latest step whose record can be read (an unreadable one is
        reported in one warning line).
        """
        steps = self._candidates(step)
        for i, candidate in enumerate(steps):
            try:
                out = self._manager.restore(candidate, args=ocp.args.Composite(
                    config=ocp.args.JsonRestore(), base=ocp.args.JsonRestore()))
                return candidate, dict(out["config"]), BaseModelRecord.from_dict(out["base"])
            except Exception as e:  # pylint: disable=broad-except  # a damaged record
                reason = f"{self.directory}/{candidate}: unreadable record ({_one_line(e)})"
                if i + 1 == len(steps):
                    raise CheckpointMismatchError(reason) from None
                print(f"warning: {reason}; falling back to step {steps[i + 1]}",
                      file=sys.stderr, flush=True)
        raise AssertionError("unreachable")

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
        self.check()  # an earlier asynchronous save that failed stops the run here
        items = dict(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(self._config),
            base=ocp.args.JsonSave(self._base.to_dict()),
        )
        if data_iterator is not None:
            items["data"] = grain_checkpoint.CheckpointSave(data_iterator)
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        self._saving = (step, _nbytes(state))
        try:
            return self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                                      force=force)
        except Exception as e:  # pylint: disable=broad-except
            raise self._save_error(e) from None

    def check(self) -> None:
        """Raises `CheckpointSaveError` if an asynchronous save has failed (cheap; call often).

        Orbax's finalizing thread consumes a failed save's error itself (and logs it with a
        traceback); `_SaveFailures` keeps that record off the console, and a save that is no
        longer in progress but left no committed step directory is reported here with it.
        """
        try:
            self._manager.check_for_errors()
        except Exception as e:  # pylint: disable=broad-except
            raise self._save_error(e) from None
        if self._saving is not None and not self._manager.is_saving_in_progress():
            step = self._saving[0]
            if not os.path.isdir(os.path.join(self.directory, str(step))):
                raise self._save_error(_SAVE_FAILURES.pop() or RuntimeError(
                    "the save did not complete"))

    def _save_error(self, error: BaseException) -> CheckpointSaveError:
        """One line: which save failed and why, the space there, and the last good step."""
        step, needed = self._saving or (None, 0)
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            free = None
        committed = [s for s in self._manager.all_steps() if s != step]
        space = "" if free is None else (f"; {_size(free)} free there, the checkpoint needs "
                                         f"about {_size(needed)}")
        last = (f"; the last good checkpoint is step {max(committed)}" if committed
                else "; no checkpoint was saved before")
        what = "a checkpoint" if step is None else f"step {step}"
        return CheckpointSaveError(f"{self.directory}: saving {what} failed "
                                   f"({_one_line(error)}){space}{last}")

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

        Without `step`, a latest step that cannot be read (truncated or flipped bytes, a
        garbled metadata file) is reported in one warning line and the previous step is
        tried, down to the oldest; a mismatch (other base model, other shapes) is never
        skipped over.

        Raises:
          CheckpointMismatchError: no such step, no readable step, the checkpoint's base model
            differs, or its arrays have other shapes than `abstract_state` (e.g. another
            lora.rank).
        """
        steps = self._candidates(step)
        for i, candidate in enumerate(steps):
            try:
                return self._restore_step(candidate, abstract_state, shardings, data_iterator,
                                          base, partial)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # pylint: disable=broad-except  # a damaged step
                reason = f"{self.directory}/{candidate}: unreadable ({_one_line(e)})"
                if i + 1 == len(steps):
                    later = "" if step is not None else "; no earlier step to fall back to"
                    raise CheckpointMismatchError(reason + later) from None
                print(f"warning: {reason}; falling back to step {steps[i + 1]}",
                      file=sys.stderr, flush=True)
        raise AssertionError("unreachable")

    def _restore_step(self, step: int, abstract_state: Any, shardings: Any, data_iterator: Any,
                      base: BaseModelRecord | None, partial: bool) -> Restored:
        out = self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore(), base=ocp.args.JsonRestore()))
        config, saved_base = dict(out["config"]), BaseModelRecord.from_dict(out["base"])
        current = base if base is not None else self._base
        if current is not None:
            check_base(saved_base, current, f"{self.directory}/{step}")
        target = _restore_target(abstract_state, shardings)
        self._check_shapes(step, target, partial)
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

    def _check_shapes(self, step: int, target: Any, partial: bool) -> None:
        """CheckpointMismatchError naming the first array whose saved shape differs."""
        # Read first so that a damaged metadata file is named in the error.
        read_json_object(Path(self.directory) / str(step) / "state" / "_METADATA")
        saved = ocp.PyTreeCheckpointHandler().metadata(
            epath.Path(self.directory) / str(step) / "state").tree
        saved = {_path_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(
            saved, is_leaf=lambda x: hasattr(x, "shape"))[0]}
        leaves = [(_path_name(p), leaf) for p, leaf in
                  jax.tree_util.tree_flatten_with_path(target)[0]]
        for name, leaf in sorted(leaves, key=lambda x: not x[0].startswith("params")):
            if name not in saved:
                if partial:
                    continue
                raise CheckpointMismatchError(
                    f"{self.directory}/{step}: has no '{name}'; the checkpoint was saved by "
                    "another model or trainer configuration")
            if saved[name] != tuple(leaf.shape):
                raise CheckpointMismatchError(
                    f"{self.directory}/{step}: '{name}' has shape {saved[name]}, the model "
                    f"expects {tuple(leaf.shape)} (trained with other lora / encoder / bridge "
                    "settings? the checkpoint's config is in its config/ item)")

    def _has_data_state(self, step: int) -> bool:
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return os.path.exists(os.path.join(self.directory, str(step), "data", name))

    def wait(self) -> None:
        """Blocks until every pending save is committed to disk; `CheckpointSaveError` if one
        failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # pylint: disable=broad-except
            raise self._save_error(e) from None
        self.check()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _SaveFailures(std_logging.Filter):
    """Takes Orbax's error records with a traceback (a failed asynchronous save, logged by its
    background threads) off the console below --verbosity=1 and keeps the error for
    `Checkpointer.check`, which reports it in one line."""

    def __init__(self):
        super().__init__()
        self._errors: list[BaseException] = []

    def install(self) -> None:
        logger = std_logging.getLogger("absl")
        if self not in logger.filters:
            logger.addFilter(self)

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.exc_info and "orbax" in record.pathname:
            self._errors.append(record.exc_info[1])
            return logging.get_verbosity() >= logging.DEBUG
        return True

    def pop(self) -> BaseException | None:
        """The first error recorded since the last call (the root cause, not its echoes)."""
        errors, self._errors = self._errors, []
        return errors[0] if errors else None


_SAVE_FAILURES = _SaveFailures()


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


def _path_name(path: tuple) -> str:
    """'opt_state/1/inner_states/adapter/...' for a key path (a Variable's `.value` dropped)."""
    parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    return "/".join(p for p in parts if p != "value")


def _nbytes(tree: Any) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree) if hasattr(x, "shape")))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _restore_target(abstract_state: Any, shardings: Any) -> Any:
    """Abstract state with the target sharding attached to every array leaf."""
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x, sharding=None):
        sharding = sharding or getattr(x, "sharding", None) or default
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    if shardings is None:
        return jax.tree.map(leaf, abstract_state)
    return jax.tree.map(leaf, abstract_state, shardings)
