"""Data splits of the shapes world and their generation.

Three (shape, color) pairs never occur in training: ``HELDOUT_PAIRS``. Splits:

- ``train``: attributes uniform over the 72 combinations whose (shape, color) pair is not held out
  (every single value still appears);
- ``heldout``: uniform over the 24 combinations with a held-out pair;
- ``all``: uniform over all 96 combinations.

``generate(n, split, seed)`` is deterministic in ``(n, split, seed)`` and prefix-stable:
``generate(m, s, k)`` is the first ``m`` rows of ``generate(n, s, k)`` for ``m <= n``, so a larger
dataset extends a smaller one.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from composer_shapes.world import ATTRIBUTES, IMAGE_SHAPE, ShapesError, render_batch

HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (("triangle", "red"), ("circle", "green"), ("square", "blue"))
SPLITS: tuple[str, ...] = ("train", "heldout", "all")

_N_UNIFORMS = 5  # combination, radius, x, y, brightness


def is_heldout(shape: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Whether each (shape, color) index pair is held out: (N,) bool."""
    shape, color = np.asarray(shape), np.asarray(color)
    out = np.zeros(np.broadcast(shape, color).shape, dtype=bool)
    for s, c in HELDOUT_PAIRS:
        out |= (shape == ATTRIBUTES["shape"].index(s)) & (color == ATTRIBUTES["color"].index(c))
    return out


def check_split(split: str) -> str:
    """``split`` if it names a split; ``ShapesError`` (a ``composer.ComposerError``) otherwise."""
    if split not in SPLITS:
        raise ShapesError(f"unknown split '{split}' of dataset 'shapes'; splits: {', '.join(SPLITS)}")
    return split


def combinations(split: str = "all") -> np.ndarray:
    """Every attribute combination allowed in ``split``: (K, 4) int64 (shape, color, size, position)."""
    check_split(split)
    grid = np.array(list(itertools.product(*(range(len(v)) for v in ATTRIBUTES.values()))), dtype=np.int64)
    held = is_heldout(grid[:, 0], grid[:, 1])
    if split == "train":
        return grid[~held]
    if split == "heldout":
        return grid[held]
    return grid


def generate(n: int, split: str = "train", seed: int = 0) -> dict[str, np.ndarray]:
    """Render ``n`` images of ``split``.

    Args:
        n: number of images (>= 0).
        split: ``"train"``, ``"heldout"`` or ``"all"``.
        seed: random seed; the same ``(split, seed)`` gives the same images.

    Returns:
        ``x``: (n, 3, 32, 32) float32 in [0, 1]; ``shape``, ``color``, ``size``, ``position``:
        (n,) int64 value indices into ``ATTRIBUTES``.

    Example:
        >>> d = generate(8, "heldout", seed=3)
        >>> d["x"].shape, bool(is_heldout(d["shape"], d["color"]).all())
        ((8, 3, 32, 32), True)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ShapesError(f"number of images must be a non-negative integer, got {n!r}")
    combos = combinations(split)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split)]))
    u = rng.random((int(n), _N_UNIFORMS))  # row i depends only on (split, seed, i): prefix-stable
    pick = combos[np.minimum((u[:, 0] * len(combos)).astype(np.int64), len(combos) - 1)]
    out: dict[str, np.ndarray] = {}
    if n == 0:
        out["x"] = np.zeros((0, *IMAGE_SHAPE), dtype=np.float32)
    else:
        out["x"] = render_batch(pick[:, 0], pick[:, 1], pick[:, 2], pick[:, 3], u[:, 1:])
    for i, attribute in enumerate(ATTRIBUTES):
        out[attribute] = np.ascontiguousarray(pick[:, i])
    return out


def meta() -> dict[str, Any]:
    """JSON-serialisable description of the dataset: value names, held-out pairs, splits, image shape."""
    return {
        "dataset": "shapes",
        "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
        "heldout_pairs": [list(p) for p in HELDOUT_PAIRS],
        "splits": list(SPLITS),
        "image_shape": list(IMAGE_SHAPE),
        "value_range": [0.0, 1.0],
    }


def load(n: int = 10000, seed: int = 0, split: str = "train") -> dict[str, Any]:
    """The shapes world: ``n`` images of ``split`` (train|heldout|all) with attribute labels.

    Returns the arrays of ``generate`` plus ``"meta"`` (see ``meta``). This is the loader
    registered as dataset ``shapes``.
    """
    check_split(split)
    data: dict[str, Any] = generate(n, split, seed)
    data["meta"] = meta() | {"split": split, "seed": int(seed), "n": int(n)}
    return data
