"""The sharded train step: 8 host devices and 2 jax.distributed processes equal 1 device.

Each configuration runs in its own Python process (the device count and the distributed
runtime are fixed when JAX starts): this file is also the worker script,

    python tests/test_sharded.py mesh OUT.npz                  # 1 device, then 8 devices
    python tests/test_sharded.py dist OUT.npz PID NPROC PORT   # one of NPROC processes

Every run takes 3 steps of the production path (build_wavellm / create_train_state on the
mesh, jit_train_step with explicit shardings and donation, batches assembled with
make_array_from_process_local_data) on the same tiny model and batch, auxiliary loss on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # whole commands in several processes

STEPS = 3


def _run(mesh_axes: dict, devices, local_rows: slice) -> dict[str, np.ndarray]:
    """Losses and final trainable parameters of STEPS steps on a mesh."""
    import jax
    from flax import nnx

    from wavepose_jax import sharding as sharding_lib
    from wavepose_jax.run import new_model
    from wavepose_jax.testing import make_batch, small_spec, tiny_llm, train_state
    from wavepose_jax.training import distributed
    from wavepose_jax.training import step as step_lib

    config = small_spec(aux_loss_weight=0.1)
    mesh = sharding_lib.make_mesh(mesh_axes, devices=devices)
    model = new_model(config, mesh, llm=tiny_llm())
    state = train_state(model, config, mesh)
    full = make_batch(batch=4)
    batch = distributed.global_batch(jax.tree.map(lambda v: v[local_rows], full), mesh)
    step_fn = step_lib.jit_train_step(state, batch, mesh)
    losses, aux = [], []
    for _ in range(STEPS):
        state, metrics = step_fn(state, batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
        aux.append(float(metrics["aux_loss"]))
    out = {"losses": np.asarray(losses), "aux": np.asarray(aux)}
    for path, v in nnx.to_flat_state(state.params):
        out["/".join(map(str, path))] = np.asarray(v[...].addressable_data(0))  # replicated
    qkv = state.frozen["llm"]["model"]["layers"][0]["self_attn"]["qkv_proj"]["kernel"][...]
    out["qkv_spec"] = np.asarray(str(getattr(qkv.sharding, "spec", "one device")))
    out["qkv_shard_shape"] = np.asarray(qkv.addressable_shards[0].data.shape)
    return out


def worker(argv: list[str]) -> None:
    mode, out = argv[0], argv[1]
    if mode == "mesh":
        import jax

        one = _run({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1], slice(None))
        eight = _run({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices(), slice(None))
        results = {**{f"one/{k}": v for k, v in one.items()},
                   **{f"eight/{k}": v for k, v in eight.items()}}
    else:
        import jax

        from wavepose_jax.training import distributed

        pid, nproc, port = int(argv[2]), int(argv[3]), int(argv[4])
        assert distributed.initialize(distributed.DistributedSpec(
            coordinator_address=f"localhost:{port}", num_processes=nproc, process_id=pid,
            auto=False))
        rows = 4 // nproc
        results = _run({"data": 1, "fsdp": jax.device_count(), "tensor": 1}, jax.devices(),
                       slice(pid * rows, (pid + 1) * rows))
        results["process_count"] = np.asarray(jax.process_count())
        results["device_count"] = np.asarray(jax.device_count())
    np.savez(out, **results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], device_count: int) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={device_count}")
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs the 8-device worker and the two distributed processes concurrently."""
    tmp = tmp_path_factory.mktemp("sharded")
    port = _free_port()
    procs = {"mesh": _spawn(["mesh", str(tmp / "mesh.npz")], 8)}
    for pid in range(2):
        procs[f"dist{pid}"] = _spawn(["dist", str(tmp / f"dist{pid}.npz"), str(pid), "2",
                                      str(port)], 1)
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name} worker failed:\n{output[-4000:]}"
    return {name: dict(np.load(tmp / f"{name}.npz")) for name in procs}


def _params(result: dict, prefix: str = "") -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in result.items()
            if k.startswith(prefix) and k[len(prefix):].split("/")[0] in ("encoder", "bridge", "llm")}


def test_eight_devices_equal_one(runs):
    r = runs["mesh"]
    # The base weights really are split: qkv kernel [32, 64] over fsdp x tensor (2 x 2).
    assert "fsdp" in str(r["eight/qkv_spec"]) and "tensor" in str(r["eight/qkv_spec"])
    assert tuple(r["eight/qkv_shard_shape"]) == (16, 32)
    assert tuple(r["one/qkv_shard_shape"]) == (32, 64)
    np.testing.assert_allclose(r["eight/losses"], r["one/losses"], rtol=1e-5)
    np.testing.assert_allclose(r["eight/aux"], r["one/aux"], rtol=1e-5)
    assert r["one/losses"][-1] < r["one/losses"][0]
    one, eight = _params(r, "one/"), _params(r, "eight/")
    assert one.keys() == eight.keys() and len(one) > 50
    for name in one:
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_two_processes_equal_one(runs):
    ref = _params(runs["mesh"], "one/")
    for pid in range(2):
        r = runs[f"dist{pid}"]
        assert int(r["process_count"]) == 2 and int(r["device_count"]) == 2
        assert tuple(r["qkv_shard_shape"]) == (16, 64)  # base split across the processes
        np.testing.assert_allclose(r["losses"], runs["mesh"]["one/losses"], rtol=1e-5)
        params = _params(r)
        assert params.keys() == ref.keys()
        for name in ref:
            np.testing.assert_allclose(params[name], ref[name], rtol=1e-5, atol=1e-5,
                                       err_msg=name)


if __name__ == "__main__":
    worker(sys.argv[1:])


def test_distributed_settings(monkeypatch):
    """Without a cluster the run is one process; explicit jobs are checked field by field."""
    from wavepose_jax.training import distributed

    def config(**fields):
        d = dict(coordinator_address="", num_processes=1, process_id=0, auto=True)
        return distributed.DistributedSpec(**{**d, **fields})

    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.initialize(config()) is False  # auto: no cluster here
    assert distributed.initialize(config(auto=False)) is False
    with pytest.raises(ValueError, match="'distributed.process_id': 2 not in"):
        distributed.initialize(config(num_processes=2, process_id=2, coordinator_address="h:1"))
    with pytest.raises(ValueError, match="'distributed.coordinator_address': required for 2"):
        distributed.initialize(config(num_processes=2))
    # A coordinator but no process count or cluster: one line naming the fields. Checked in a
    # fresh process, where JAX has not started yet (as at the top of train.py).
    code = ("from wavepose_jax.training import distributed\n"
            "c = distributed.DistributedSpec(coordinator_address='', "
            "num_processes=1, process_id=0, auto=True)\n"
            "try:\n    distributed.initialize(c)\nexcept ValueError as e:\n    print(e)\n")
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert "no cluster environment gives the process count" in proc.stdout, proc.stderr[-2000:]
    assert "'distributed.num_processes'" in proc.stdout
