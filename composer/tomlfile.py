"""Reading TOML files (composition files, generation plans, training recipes) with one set of messages."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from composer.errors import ComposerError


def read_toml(path: str | os.PathLike[str], what: str, error: type[ComposerError] = ComposerError) -> dict[str, Any]:
    """The parsed TOML file ``path``; every failure is one ``error`` naming the file.

    Args:
        path: the file.
        what: what the file is, for messages ("composition file", "plan", "TOML recipe").
        error: the ``ComposerError`` subclass to raise.
    """
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as toml
        except ImportError:
            raise error(f"reading a {what} on Python 3.10 needs 'tomli': pip install tomli") from None
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (a {what} is UTF-8 TOML)") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from None
