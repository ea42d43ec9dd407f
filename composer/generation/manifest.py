"""``DIR/index.json``, the records of finished shards, and their verification.

``index.json`` describes a generated dataset::

    {"format": "composer-dataset/1", "complete": true,
     "plan": {...}, "seed": 0, "shard_size": 1024, "device": "cpu",
     "sampler": {"options": {...given...}, "recipes": [...resolved...], "composition_recipe": [...]},
     "versions": {"python": ..., "torch": ..., "numpy": ..., "ebm-composer": ..., plugins...},
     "num_samples": N, "num_shards": K, "arrays": {"x": {"dtype": "float32", "shape": [3, 32, 32]}, ...},
     "shards": [{"file": "shard-000000.npz", "count": 1024, "bytes": ..., "sha256": ...}, ...]}

It is first written with ``"complete": false`` and no shards (the identity of the run: format, plan,
seed, shard size, device type and sampler options and recipes; a rerun with a different identity is
refused). Each finished shard gets a record ``shard-NNNNNN.json`` (count, bytes, sha256), written after
the shard; when every shard is done, rank 0 writes the complete index and removes the records. A shard
is *done* when its file matches its record (or the complete index) in size and sha256.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from composer.atomic import atomic_write_text
from composer.errors import ComposerError
from composer.generation.shards import SHARD_NAME, file_sha256

FORMAT = "composer-dataset/1"
INDEX = "index.json"
#: the fields a resumed run must share with the index
IDENTITY = ("format", "plan", "seed", "shard_size", "device", "sampler")


class DatasetError(ComposerError):
    """A dataset folder that cannot be written, resumed or verified as asked."""


def versions() -> dict[str, str]:
    """Python, torch, numpy, and every installed distribution that provides composer plugins."""
    import numpy
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        name = dist.metadata["Name"]
        if name == "ebm-composer" or any(ep.group == "composer" for ep in dist.entry_points):
            out[name] = dist.version
    return out


def record_path(folder: Path, i: int) -> Path:
    return folder / SHARD_NAME.format(i).replace(".npz", ".json")


def read_index(folder: Path) -> dict[str, Any] | None:
    """The index of ``folder``, or ``None`` when it has none."""
    path = folder / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is unreadable ({exc}); move it away to start the dataset afresh") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a composer dataset index (format {FORMAT})")
    return index


def write_index(folder: Path, index: dict[str, Any]) -> None:
    atomic_write_text(folder / INDEX, json.dumps(index, indent=1) + "\n")


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` if needed; refuse a file, an unwritable folder, or one holding other things."""
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"output '{folder}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create output folder '{folder}': {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatasetError(f"output folder '{folder}' is not writable")
    if not (folder / INDEX).exists():
        others = [p.name for p in folder.iterdir() if not p.name.startswith(".composer-tmp-")]
        if others:
            raise DatasetError(f"output folder '{folder}' is not empty and holds no dataset ({INDEX}); "
                               f"choose a new or empty folder")


def check_identity(folder: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to resume ``found`` (an index) with a run whose identity ``wanted`` differs."""
    for key in IDENTITY:
        if found.get(key) != wanted.get(key):
            detail = _difference(key, found.get(key), wanted.get(key))
            raise DatasetError(f"'{folder}' holds a dataset made with a different {detail}; "
                               f"rerun with the same arguments to resume it, or choose another --out")


def _difference(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return _difference(f"{key}.{k}", old.get(k), new.get(k))
    if isinstance(old, (dict, list)) or isinstance(new, (dict, list)):
        return key
    return f"{key} ({old!r} there, {new!r} here)"


def read_record(folder: Path, i: int) -> dict[str, Any] | None:
    try:
        record = json.loads(record_path(folder, i).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(folder: Path, i: int, record: dict[str, Any]) -> None:
    atomic_write_text(record_path(folder, i), json.dumps(record) + "\n")


def problem(folder: Path, record: dict[str, Any] | None, count: int | None = None) -> str | None:
    """What is wrong with the shard described by ``record`` (``None``: it is intact)."""
    if record is None:
        return "not finished"
    path = folder / record["file"]
    if not path.is_file():
        return "missing"
    if count is not None and record.get("count") != count:
        return f"holds {record.get('count')} samples, not {count}"
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"{size} bytes, not {record['bytes']}"
    if file_sha256(path) != record["sha256"]:
        return "sha256 differs from the record"
    return None


def verify(folder: str | Path) -> dict[str, Any]:
    """Check every shard of a complete dataset against ``index.json`` (size and sha256).

    Returns:
        The index.

    Raises:
        DatasetError: no index, an incomplete dataset, or damaged shards (all named in one line).
    """
    folder = Path(folder)
    index = read_index(folder) if folder.is_dir() else None
    if index is None:
        raise DatasetError(f"'{folder}' holds no generated dataset ({INDEX} not found)")
    if not index.get("complete"):
        done = sum(problem(folder, read_record(folder, i)) is None for i in range(index["num_shards"]))
        raise DatasetError(f"'{folder}' is incomplete ({done} of {index['num_shards']} shards done); "
                           f"rerun the generate command to finish it")
    bad = [f"{s['file']} ({p})" for s in index["shards"] if (p := problem(folder, s)) is not None]
    if bad:
        raise DatasetError(f"'{folder}': {len(bad)} of {len(index['shards'])} shards damaged: {', '.join(bad)}; "
                           f"rerun the generate command to remake them")
    return index
