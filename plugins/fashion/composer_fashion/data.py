"""The Fashion-MNIST dataset from its four IDX files (Debian: ``apt-get install dataset-fashion-mnist``).

Where the files are, first match wins: the ``root`` argument of ``load``, the environment variable
``COMPOSER_FASHION_DIR``, the Debian location ``/usr/share/datasets/fashion-mnist``. Each split is a pair
``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``. Images are ``uint8 (N, 1, 28, 28)`` (the engine's
trainer maps 8-bit data to ``[0, 1]``), labels ``int64 (N,)`` indexing ``CLASSES``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from composer import ComposerError
from composer_fashion.idx import read_idx

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV = "COMPOSER_FASHION_DIR"
CLASSES: tuple[str, ...] = ("tshirt", "trouser", "pullover", "dress", "coat",
                            "sandal", "shirt", "sneaker", "bag", "boot")
"""The ten values of ``fashion.class``, in the order of the dataset's labels 0-9."""
SPLITS = {"train": "train", "test": "t10k"}
IMAGE_SHAPE = (1, 28, 28)
INSTALL_HINT = "install them with: apt-get install dataset-fashion-mnist (or set COMPOSER_FASHION_DIR)"


class FashionDataError(ComposerError):
    """Missing or invalid Fashion-MNIST files, or bad loader options."""


def data_dir(root: str | Path | None = None) -> Path:
    """The folder of the IDX files: ``root``, else ``$COMPOSER_FASHION_DIR``, else the Debian location."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV)
    return Path(env) if env else DEFAULT_DIR


def _file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FashionDataError(f"Fashion-MNIST file {stem}.gz not found in {root}; {INSTALL_HINT}")


def available(root: str | Path | None = None) -> bool:
    """Whether all four files are present (tests that need the real data skip otherwise)."""
    try:
        for prefix in SPLITS.values():
            _file(data_dir(root), f"{prefix}-images-idx3-ubyte")
            _file(data_dir(root), f"{prefix}-labels-idx1-ubyte")
    except FashionDataError:
        return False
    return True


@lru_cache(maxsize=4)
def _read(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = SPLITS[split]
    images = read_idx(_file(Path(root), f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_file(Path(root), f"{prefix}-labels-idx1-ubyte"))
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise FashionDataError(f"{root}: {split} images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise FashionDataError(f"{root}: {split} labels must be uint8 ({images.shape[0]},), got "
                               f"{labels.dtype} {labels.shape}")
    if labels.size and int(labels.max()) >= len(CLASSES):
        raise FashionDataError(f"{root}: {split} labels must lie in 0..9, found {int(labels.max())}")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load(split: str = "train", n: int | None = None, root: str | None = None, labels: bool = True,
         mutate: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Fashion-MNIST ``split`` (``train``: 60,000 images, ``test``: 10,000), the loader of dataset ``fashion``.

    Args:
        split: ``"train"`` or ``"test"``.
        n: keep the first ``n`` images (``None``: all).
        root: folder of the IDX files (default: ``$COMPOSER_FASHION_DIR``, else the Debian location).
        labels: include ``y`` and ``values`` (``False``: images only, what an unconditional expert trains on).
        mutate: replace each pixel, with this probability, by a uniform random value (the perturbed inputs a
            *background* model trains on, Ren et al. 2019: it learns the pixel statistics but not the garments).
        seed: seed of ``mutate``'s perturbation (the same seed gives the same images).

    Returns:
        ``x``: uint8 ``(N, 1, 28, 28)``; ``y``: int64 ``(N,)`` and ``values``: the class names (``CLASSES``)
        when ``labels``;
        ``meta``: split, folder and counts.

    Raises:
        FashionDataError: unknown split, bad ``n``, missing or invalid files (the message says how to install).
    """
    if split not in SPLITS:
        raise FashionDataError(f"unknown split '{split}' of dataset 'fashion'; splits: {', '.join(SPLITS)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
        raise FashionDataError(f"n must be a non-negative integer or None, got {n!r}")
    if isinstance(mutate, bool) or not isinstance(mutate, (int, float)) or not 0.0 <= mutate <= 1.0:
        raise FashionDataError(f"mutate must be a probability in [0, 1], got {mutate!r}")
    folder = data_dir(root)
    images, labels_ = _read(str(folder.resolve()), split)
    images, labels_ = images[:n], labels_[:n]
    out: dict[str, Any] = {"x": np.array(images[:, None], copy=True)}
    if mutate > 0:
        rng = np.random.default_rng(int(seed))
        where = rng.random(out["x"].shape) < mutate
        out["x"][where] = rng.integers(0, 256, int(where.sum()), dtype=np.uint8)
    if labels:
        out |= {"y": labels_.astype(np.int64), "values": np.asarray(CLASSES)}
    out["meta"] = {"dataset": "fashion", "split": split, "root": str(folder), "n": int(images.shape[0]),
                   "classes": list(CLASSES), "mutate": float(mutate), "seed": int(seed)}
    return out


def as_float(x: np.ndarray) -> np.ndarray:
    """``uint8`` images -> float32 in ``[0, 1]`` (floats pass through as float32)."""
    x = np.asarray(x)
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)
