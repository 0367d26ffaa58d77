"""Every command of the package follows the one convention of `wavepose_jax/cli.py`.

The commands are found, not listed: every module of the package with an
`if __name__ == "__main__":` block is run as `python -m <module>` with `--help` (exit 0, its
description and flags, no traceback) and with an unknown flag (exit 2, one `error:` line).
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from wavepose_jax import clips, random_base
from wavepose_jax.models import phi3_bases

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wavepose_jax"
_MAIN = re.compile(r"^if __name__ == [\"']__main__[\"']\s*:", re.MULTILINE)


def _is_main_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
        isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"


def _summary(path: pathlib.Path) -> str:
    """The first line of a module's docstring: the first line of its command's --help."""
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"{path}: a command's module docstring is its help text"
    return doc.splitlines()[0]


def _commands() -> dict[str, str]:
    """`python -m` module -> the first line its --help prints: its own docstring's, or, when
    its `__main__` block hands over to another command of the package, that module's."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if not _MAIN.search(text):
            continue
        module = ".".join(("wavepose_jax", *path.relative_to(PACKAGE).with_suffix("").parts))
        handed = [f"{node.module}.{alias.name}"
                  for block in ast.parse(text).body if _is_main_block(block)
                  for node in ast.walk(block) if isinstance(node, ast.ImportFrom)
                  and node.module and node.module.startswith("wavepose_jax")
                  for alias in node.names]
        target = path
        for name in handed:
            candidate = ROOT.joinpath(*name.split(".")).with_suffix(".py")
            if candidate.is_file():
                target = candidate
        found[module] = _summary(target)
    return found


COMMANDS = _commands()


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """Every command line of this file, run at once (a few threads; each is mostly imports)."""
    out = tmp_path_factory.mktemp("random_base")
    lines = [(module, flag) for module in COMMANDS for flag in ("--help", "--no_such_flag")]
    lines.append(("wavepose_jax.random_base", "--shape", "nope", "--out", str(out)))
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(lines, pool.map(lambda line: _run(*line), lines)))


def test_the_commands_were_found():
    assert {"wavepose_jax.clips", "wavepose_jax.train", "wavepose_jax.export",
            "wavepose_jax.tiny", "wavepose_jax.random_base", "wavepose_jax.training.aot"
            } <= set(COMMANDS)
    # The generators' command line is `wavepose-clips synthetic|other`: data/ has no commands.
    assert not any(m.startswith("wavepose_jax.data.") for m in COMMANDS)


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_prints_the_description_and_flags(runs, module):
    proc = runs[(module, "--help")]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == COMMANDS[module]
    assert "\nflags:\n" in proc.stdout and "--verbosity" in proc.stdout


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_an_unknown_flag_is_one_error_line(runs, module):
    proc = runs[(module, "--no_such_flag")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    assert "no_such_flag" in lines[0]


def test_an_unknown_shape_names_the_flag_and_the_shapes(runs, tmp_path):
    proc = [p for line, p in runs.items() if "nope" in line][0]
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --shape:"), proc.stderr
    assert all(shape in lines[0] for shape in random_base.SHAPES)


def test_other_writes_benchmark_clips_that_check_reads(tmp_path, capsys):
    out = tmp_path / "other"
    assert clips.main(["other", "--out", str(out), "--n", "2"]) == 0
    assert len(list(out.glob("*.json"))) == 2
    assert clips.main(["check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("video_id=othergen-s0-") == 2
    assert clips.main(["other", "--out", str(out), "--n", "2", "--nokeypoints"]) == 2
    assert capsys.readouterr().err.startswith("error: other: --nokeypoints applies to synthetic")


def test_random_base_writes_a_new_directory_and_refuses_a_full_one(tmp_path, monkeypatch,
                                                                    capsys):
    small = {**phi3_bases.PHI35_MINI, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
             "vocab_size": 1024, "rope_scaling": None, "max_position_embeddings": 4096}
    monkeypatch.setitem(phi3_bases.SHAPES, "test-small", small)
    out = tmp_path / "base"
    args = ["--shape", "test-small", "--out", str(out), "--shard_size", "100KB"]
    assert random_base.main(args) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 64
    capsys.readouterr()
    assert random_base.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --out: {out}: directory is not empty")
    assert random_base.main([*args, "--overwrite"]) == 0
    assert random_base.main(["--shape", "test-small", "--out", str(tmp_path / "b"),
                             "--shard_size", "lots"]) == 2
    assert capsys.readouterr().err.startswith("error: --shard_size:")
