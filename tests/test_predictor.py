"""Predictor-corrector annealing (``sample(..., sigmas=..., predictor=...)``) on an exact Gaussian.

The data are ``N(mu, s^2)`` in 4 dimensions, so the noised energy at level ``sigma`` is exactly
``|x - mu|^2 / (2 (s^2 + sigma^2))``. From ``sigma = 20`` to ``0.01`` in 30 levels with one Langevin step
each, the chains should end as ``N(mu, s^2 + 0.01^2)``. Tolerances: 8000 chains x 4 dimensions give a
standard error of ~0.003 on the mean and ~0.6% on the std; the bounds are ~5 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

import composer
from composer import CompositionError

MU, S = 1.0, 0.5
LADDER = [20.0 * (0.01 / 20.0) ** (i / 29) for i in range(30)]


def noised_gaussian() -> composer.Energy:
    def energy(x: torch.Tensor, sigma=None) -> torch.Tensor:
        var = S**2 + (0.0 if sigma is None else sigma) ** 2
        return 0.5 * ((x - MU) ** 2).sum(-1) / var

    return composer.as_energy(energy, event_shape=(4,), noise_conditional=True)


def run(predictor):
    init = torch.randn(8000, 4, generator=torch.Generator().manual_seed(1)) * 20.0 + MU
    return composer.sample(noised_gaussian(), init=init, steps=len(LADDER), sigmas=LADDER, step_size=0.1 * 0.01**2,
                           predictor=predictor, seed=0, clamp=False).x


def test_predictor_corrector_reaches_the_data_distribution():
    x = run("ddim")
    assert x.mean().item() == pytest.approx(MU, abs=0.015)
    assert x.std().item() == pytest.approx(math.sqrt(S**2 + 0.01**2), rel=0.03)


def test_plain_annealing_lags_with_one_step_per_level():
    """Without a predictor the same budget leaves the chains too wide: what the predictor is for."""
    x = run(None)
    assert x.std().item() > 1.1 * S


def test_predictor_needs_a_ladder_and_a_known_name():
    with pytest.raises(CompositionError, match="give sigmas"):
        composer.sample(noised_gaussian(), n=4, steps=3, predictor="ddim")
    with pytest.raises(CompositionError, match="predictor must be"):
        composer.sample(noised_gaussian(), n=4, steps=3, sigmas=[1.0, 0.1], predictor="euler")
