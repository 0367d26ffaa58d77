"""The ahead-of-time compile of the train step (training/aot.py) against a real run of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from wavepose_jax.configs import base as base_config
from wavepose_jax.models.phi3_bases import hub_config
from wavepose_jax.spec import RunSpec
from wavepose_jax.training import aot

# The run below: a Phi-3 with the real vocabulary (fp32 logits dominate the step's scratch),
# a scanned 2-layer stack, the tiny test encoder and bridge, batch 2 x 512 tokens.
_RUN = textwrap.dedent("""
    import dataclasses, gc, json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from wavepose_jax import sharding
    from wavepose_jax.models import wavellm
    from wavepose_jax.models.phi3 import Phi3Config
    from wavepose_jax.testing import small_spec
    from wavepose_jax.training import aot, state as state_lib
    from wavepose_jax.training.loss import LossWeights

    def status(key):  # bytes, from /proc/self/status
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

    spec = small_spec(batch_size=2).replace(
        llm=dict(dtype="float32", param_dtype="float32", scan_layers=True, remat=False))
    llm = Phi3Config(vocab_size=32064, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4)
    computing = dataclasses.replace(llm, **spec.llm.compute())
    mesh = sharding.make_mesh(spec.mesh.axes())
    weights = LossWeights.of(spec.train, spec.data.target_fps)
    model = nnx.jit(lambda: wavellm.create_wavellm(
        spec.model, computing, 1.0, nnx.Rngs(0)))()  # one compiled init
    state = state_lib.create_train_state(model, spec.train, weights, mesh)
    del model
    abstract = state_lib.abstract_train_state(spec.model, spec.train, weights, computing, mesh)
    same = [(a.shape, a.dtype, a.sharding.is_equivalent_to(b.sharding, a.ndim))
            == (b.shape, b.dtype, True)
            for a, b in zip(jax.tree.leaves(abstract), jax.tree.leaves(state))]
    report, compiled = aot.compile_train_step(spec, llm, 512, mesh, state=state)
    rng = np.random.default_rng(0)
    batch = jax.tree.map(
        lambda x: jnp.asarray(rng.integers(0, 100, x.shape, np.int32) if x.dtype == jnp.int32
                              else np.ones(x.shape, bool) if x.dtype == bool
                              else rng.standard_normal(x.shape).astype(np.float32)),
        aot.abstract_batch(spec.data, 2, 512, mesh))
    args = sum(x.nbytes for x in jax.tree.leaves((state, batch)))
    jax.block_until_ready((state, batch))
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
    before = status("VmRSS")
    jax.block_until_ready(compiled(state, batch, jax.random.key(0)))
    print(json.dumps({"same_state": all(same) and len(same) > 0, "argument": report.argument,
                      "actual_args": args, "predicted": report.peak - report.argument,
                      "measured": status("VmHWM") - before}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_prediction_matches_a_real_step():
    """The compiled step's memory analysis predicts a real run of it.

    * argument bytes == the bytes of the real train state and batch (within 1%), and the abstract
      state has the real state's shapes, dtypes and shardings;
    * the step's own memory (peak - arguments: scratch and outputs not written into donated
      inputs) is within -10% / +10% + 64 MiB of the process's measured peak RSS rise during one
      step. The fixed 64 MiB covers XLA:CPU's runtime (thread pools, stacks; ~40-60 MB measured
      here, whatever the step's size); glibc is told to map large buffers directly, so freed
      memory is not silently reused and the rise is what the step touched.
    """
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", _RUN], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["same_state"]
    assert abs(got["argument"] - got["actual_args"]) <= 0.01 * got["actual_args"], got
    assert got["predicted"] > 100 * 2**20, got  # large enough to measure
    assert 0.9 * got["predicted"] <= got["measured"] <= 1.1 * got["predicted"] + 64 * 2**20, got


def test_base_shapes_without_a_download(tmp_path):
    """configs/base.py names a hub id: its shapes come from the built-in config.json (3.8 B
    parameters); a directory's own config.json wins; an unknown name is a one-line error."""
    path = base_config.get_config().llm.path
    llm = aot.base_config(path)
    assert (llm.hidden_size, llm.num_hidden_layers, llm.vocab_size) == (3072, 32, 32064)
    assert llm.rope_scaling is not None and len(llm.rope_scaling.long_factor) == 48
    (tmp_path / "config.json").write_text(json.dumps({**hub_config(path),
                                                      "num_hidden_layers": 3}))
    assert aot.base_config(str(tmp_path)).num_hidden_layers == 3
    with pytest.raises(ValueError, match="config field 'llm.path'"):
        aot.base_config(str(tmp_path / "nowhere"))


def test_abstract_batch_and_report():
    data = RunSpec.from_config(base_config.get_config()).data
    mesh = jax.make_mesh((1,), ("data",))
    batch = aot.abstract_batch(data, 4, 1024, mesh)
    assert batch.tokens.shape == (4, 1024) and batch.waves.shape == (4, data.seq_len, 7)
    report = aot.AotReport(batch_size=4, tokens=1024, argument=10, output=8, alias=6, temp=5,
                           lower_s=1.0, compile_s=2.0, device="cpu")
    assert report.peak == 17 and "peak" in report.format() and report.to_dict()["peak"] == 17
