"""Fréchet distance between two sets of features (the FID formula, here in the judge's feature space).

    FD = || mu_a - mu_b ||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)

computed with symmetric eigendecompositions in float64 (no scipy)::

    >>> import numpy as np
    >>> a = np.random.default_rng(0).normal(size=(4000, 3))
    >>> round(frechet_distance(a, a + 1.0), 3)
    3.0
"""

from __future__ import annotations

import numpy as np


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD of the Gaussians fitted to features ``a: (N, D)`` and ``b: (M, D)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets (N, D) with the same D and N >= 2, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r = _sqrt_psd(s_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s_b @ r), 0, None)).sum()
    return float(np.square(mu_a - mu_b).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)
