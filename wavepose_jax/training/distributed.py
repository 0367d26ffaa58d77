"""Multi-process (multi-host) setup: `jax.distributed` and global batches from per-process data.

Every process runs the same program. `initialize` connects the processes (coordinator from
the run's `distributed` group (`DistributedSpec`) or the environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID; or cluster auto-detection with `distributed.auto`). Afterwards `jax.devices()`
lists the devices of all processes, the mesh spans them, and each process loads only its
shard of the data (`batch_size / process_count` examples per step), which
`global_batch` assembles into one globally sharded array per batch entry.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from wavepose_jax import sharding as sharding_lib
from wavepose_jax.data.batch import Batch


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    """The `distributed` group of a run (meanings in configs/base.py)."""

    coordinator_address: str  # "host:port" of process 0 ("": JAX_COORDINATOR_ADDRESS)
    num_processes: int
    process_id: int
    auto: bool  # let jax.distributed detect a cluster


def initialize(d: DistributedSpec) -> bool:
    """Starts `jax.distributed` when the run spans several processes; returns whether it did.

    * Explicit: `distributed.num_processes > 1` (with `coordinator_address` and `process_id`,
      or the coordinator from JAX_COORDINATOR_ADDRESS) starts exactly that job.
    * Otherwise, with `distributed.auto` (the default), `jax.distributed.initialize()` detects
      a cluster it knows (SLURM, Open MPI, TPU pods, Kubernetes jobsets ...) and reads its
      process count and index; with no cluster the run is one process.

    Must run before any other JAX call that touches devices.

    Raises:
      ValueError: an incomplete or inconsistent multi-process setting (names the field).
    """
    num, pid = d.num_processes, d.process_id
    address = d.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num > 1:
        if not 0 <= pid < num:
            raise ValueError(f"config field 'distributed.process_id': {pid} not in [0, {num})")
        if address is None:
            raise ValueError("config field 'distributed.coordinator_address': required for "
                             f"{num} processes (host:port of process 0)")
        jax.distributed.initialize(coordinator_address=address, num_processes=num,
                                   process_id=pid)
        return True
    if num < 1:
        raise ValueError(f"config field 'distributed.num_processes': must be >= 1, got {num}")
    if not d.auto:
        return False
    if jax.distributed.is_initialized():
        return True  # the caller already connected the processes
    try:
        with warnings.catch_warnings():  # e.g. "Kubernetes detected, package missing"
            warnings.simplefilter("ignore")
            jax.distributed.initialize(coordinator_address=address)
    except RuntimeError as e:  # JAX already ran in this process (a notebook, a second run)
        if address is not None:
            raise ValueError(f"config field 'distributed.coordinator_address': {e}") from None
        logging.info("cluster detection skipped, JAX is already in use: one process")
        return False
    except ValueError as e:  # no known cluster: the process count and index are unknown
        if address is not None:
            raise ValueError("config field 'distributed.num_processes': coordinator "
                             f"{address} is set but no cluster environment gives the process "
                             "count and index; set distributed.num_processes and "
                             f"distributed.process_id ({e})") from None
        return False
    return True


def global_batch(local: Batch, mesh: Mesh) -> Batch:
    """This process's rows -> global arrays sharded over the mesh's data-parallel axes.

    Process p's rows become rows [p * b, (p + 1) * b) of the global batch (b = local rows), in
    the process order of the mesh's devices.
    """
    sharding = sharding_lib.batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)
