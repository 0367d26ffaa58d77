"""Files in and out: small JSON files read with one-line errors that name the file, output
paths checked before any work starts, writes that are atomic (never half a file), and the clip
files of a directory."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def read_json_object(file: Path, error: type[Exception] = ValueError) -> dict:
    """The JSON object in ``file``; raises ``error`` naming the file when missing or malformed."""
    file = Path(file)
    if not file.is_file():
        raise error(f"{file}: missing")
    try:
        value = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{file}: invalid JSON ({e})") from None
    if not isinstance(value, dict):
        raise error(f"{file}: expected a JSON object")
    return value


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same directory + os.replace."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_output(path: str | os.PathLike) -> None:
    """Raises OSError naming `path` unless a file can be written there: its directory exists
    and is writable, and the path is not a directory. Commands call it before any work, so a
    bad output path never throws away finished work."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory; give a file path")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{path}: directory {directory} is not writable")


def list_clip_files(data_dir: str | os.PathLike) -> list[str]:
    """Sorted paths of the `*.json` files under `data_dir` (recursively)."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{data_dir}: data directory does not exist")
    found = []
    for root, _, files in os.walk(data_dir):
        found.extend(os.path.join(root, f) for f in files if f.endswith(".json"))
    return sorted(found)
