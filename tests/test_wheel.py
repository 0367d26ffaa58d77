"""The wheel works outside a checkout: commands installed, configs and the tiny base inside.

Builds the wheel, installs it (without dependencies) into a fresh virtual environment that
borrows the test environment's third-party packages, and from an empty directory trains the
tiny config for two steps and runs inference on one clip with the installed commands.
"""

import json
import os
import pathlib
import site
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow  # whole commands in several processes

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin directory of a fresh venv with the wheel installed, the wheel's path)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel, = tmp.glob("wavepose_jax-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    lib, = (venv / "lib").glob("python3*/site-packages")
    # Third-party packages from this environment; wavepose_jax only from the wheel (the
    # checkout's editable hook lives in a .pth file that a plain path entry does not run).
    (lib / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True,
                   timeout=600)
    return venv / "bin", wheel


def test_wheel_holds_configs_base_and_commands(installed):
    bin_dir, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("wavepose_jax/configs/tiny.py", "wavepose_jax/configs/base.py",
                   "wavepose_jax/assets/tiny-phi3/model.safetensors",
                   "wavepose_jax/assets/tiny-phi3/tokenizer.json",
                   "wavepose_jax/assets/tiny-phi3/generation_config.json",
                   "wavepose_jax/templates/report.html.j2"):
        assert needed in names, needed
    for command in ("wavepose-train", "wavepose-infer", "wavepose-eval", "wavepose-export",
                    "wavepose-clips"):
        assert (bin_dir / command).is_file(), command


def test_installed_commands_train_and_infer_from_an_empty_directory(installed, tmp_path):
    bin_dir, _ = installed
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ""}

    def run(*args, check=True):
        proc = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=work, env=env,
                              capture_output=True, text=True, timeout=900)
        if check:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    where = subprocess.run([str(bin_dir / "python"), "-c",
                            "import wavepose_jax; print(wavepose_jax.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(bin_dir.parent) in where and str(ROOT) not in where  # the wheel, not the checkout

    assert "--config" in run("wavepose-train", "--help").stdout
    run("wavepose-train", "--config", "tiny", "--workdir", "run", "--config.train.steps=2",
        "--config.train.log_every=1", "--config.train.eval_every=0",
        "--config.train.num_eval_samples=0", "--config.data.synthetic_n=12",
        "--config.train.batch_size=4", "--config.eval.synthetic_n=0", "--config.eval.ood_n=0")
    assert (work / "run" / "checkpoints" / "2").is_dir()
    run("wavepose-clips", "synthetic", "--out", "clips", "--n", "1", "--seed", "3",
        "--exercises", "squat")
    clip, = (work / "clips").glob("*.json")
    out = run("wavepose-infer", "--input", str(clip), "--ckpt", "run", "--json",
              "--max_new_tokens", "4", "--report", "report.html").stdout
    result = json.loads(out.splitlines()[-1])
    assert result["exercise"] == "squat" and isinstance(result["feedback"], str)
    assert "Rep by rep" in (work / "report.html").read_text()  # the template ships too
