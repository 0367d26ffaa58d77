"""Multi-process (multi-host) setup: `jax.distributed` and global batches from per-process data.

Every process runs the same program. `initialize` connects the processes (coordinator from
`config.distributed` or the environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID; or cluster auto-detection with `distributed.auto`). Afterwards `jax.devices()`
lists the devices of all processes, the mesh spans them, and each process loads only its
shard of the data (`batch_size / process_count` examples per step), which
`global_batch` assembles into one globally sharded array per batch entry.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from wavepose_jax import sharding as sharding_lib
from wavepose_jax.data.batch import Batch


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "")
    return int(raw) if raw else None


def initialize(config: Any) -> bool:
    """Starts `jax.distributed` when the run has several processes; returns whether it did.

    Settings: `distributed.num_processes > 1` takes the coordinator, count and index from the
    config; otherwise from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID when
    set. Must run before any other JAX call that touches devices.

    Raises:
      ValueError: an incomplete or inconsistent multi-process setting (names the field).
    """
    d = config.distributed
    if d.auto:
        jax.distributed.initialize()
        return True
    if int(d.num_processes) > 1:
        address, num, pid = d.coordinator_address, int(d.num_processes), int(d.process_id)
    else:
        address = os.environ.get("JAX_COORDINATOR_ADDRESS", "")
        num, pid = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
        if not address and num in (None, 1):
            return False
    if not address:
        raise ValueError("config field 'distributed.coordinator_address': required for "
                         f"{num} processes")
    if num is None or pid is None:
        raise ValueError("config field 'distributed.num_processes': JAX_NUM_PROCESSES and "
                         f"JAX_PROCESS_ID must be set with coordinator {address}")
    if not 0 <= pid < num:
        raise ValueError(f"config field 'distributed.process_id': {pid} not in [0, {num})")
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    return True


def global_batch(local: Batch, mesh: Mesh) -> Batch:
    """This process's rows -> global arrays sharded over the mesh's data-parallel axes.

    Process p's rows become rows [p * b, (p + 1) * b) of the global batch (b = local rows), in
    the process order of the mesh's devices.
    """
    sharding = sharding_lib.batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)
