"""Reading a generated dataset back: every shard's arrays, concatenated (what ``composer train`` reads).

``[data] path = "DIR"`` in a training recipe reads the folder written by ``composer generate``; ``labels =
"color"`` trains a concept family on the label ``color``, whose value names come from the plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from composer.generation.manifest import DatasetError, verify


def load_dataset(folder: str | Path, key: str = "x", labels: str | None = None) -> dict[str, Any]:
    """The arrays of the complete dataset in ``folder``, each shard checked against ``index.json``.

    Args:
        folder: a folder written by ``composer generate``.
        key: the array returned as ``x``.
        labels: a label name returned as ``y`` (int64), with its value names as ``values``.

    Returns:
        Every array of the shards concatenated in shard order (``x``: ``(N, *event_shape)``), plus ``y``
        and ``values`` when ``labels`` is given.

    Raises:
        DatasetError: an incomplete or damaged dataset, an unknown ``key`` or ``labels``.
    """
    folder = Path(folder)
    index = verify(folder)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in index["arrays"]}
    for shard in index["shards"]:
        with np.load(folder / shard["file"], allow_pickle=False) as f:
            for name in parts:
                parts[name].append(f[name])
    out: dict[str, Any] = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    if key not in out:
        raise DatasetError(f"'{folder}' has no array '{key}'; arrays: {', '.join(out)}")
    out["x"] = out[key]
    if labels is not None:
        vocab = index["plan"]["labels"]
        if labels not in vocab:
            raise DatasetError(f"'{folder}' has no label '{labels}'; labels: {', '.join(vocab) or 'none'}")
        out["y"] = out[labels]
        out["values"] = np.asarray(vocab[labels])
    return out
