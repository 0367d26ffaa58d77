"""Reading small JSON config files with one-line errors that name the file."""

from __future__ import annotations

import json
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
