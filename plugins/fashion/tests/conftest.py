"""Fixtures: a small fake Fashion-MNIST folder written with the plugin's own IDX writer."""

from __future__ import annotations

import numpy as np
import pytest
from composer_fashion.idx import write_idx


def write_fake(root, n_train: int = 40, n_test: int = 20, seed: int = 0, compress: bool = True) -> dict:
    """Four IDX files under ``root`` (gzip by default); returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", x, compress=compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", y, compress=compress)
        arrays[prefix] = (x, y)
    return arrays


@pytest.fixture
def fake_dir(tmp_path, monkeypatch):
    """A fake data folder, selected through ``COMPOSER_FASHION_DIR``."""
    root = tmp_path / "fashion"
    root.mkdir()
    arrays = write_fake(root)
    monkeypatch.setenv("COMPOSER_FASHION_DIR", str(root))
    return root, arrays
