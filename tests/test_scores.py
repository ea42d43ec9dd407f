"""Per-sample scores and AUROC (``composer.scores``) against exact answers."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.scores import auroc, score


def test_auroc_exact_values():
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 1.0
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5  # ties count one half
    # Mann-Whitney by brute force on random data with ties
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 5, (40,), generator=g).double(), torch.randint(1, 6, (30,), generator=g).double()
    brute = ((b[:, None] > a[None]).double() + 0.5 * (b[:, None] == a[None]).double()).mean().item()
    assert auroc(a, b) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(composer.ComposerError):
        auroc(torch.tensor([]), torch.tensor([1.0]))


def test_scores_of_an_analytic_energy():
    e = composer.as_energy(lambda x: 0.5 * x.square().sum(-1), event_shape=(3,))
    x = torch.randn(7, 3)
    torch.testing.assert_close(score(e, x, "energy", batch=3), 0.5 * x.square().sum(-1))
    torch.testing.assert_close(score(e, x, "grad-norm", batch=4), x.norm(dim=1))
    with pytest.raises(composer.ComposerError, match="noise-conditional"):
        score(e, x, "levels")
    with pytest.raises(composer.ComposerError, match="unknown score"):
        score(e, x, "likelihood")


def test_levels_sums_sigma_squared_energies():
    class Noisy(composer.Energy):
        noise_conditional = True

        def forward(self, x, sigma=None):
            return x.square().sum(-1) / (2 * torch.as_tensor(sigma) ** 2)

    e = Noisy(event_shape=(2,))
    x = torch.randn(5, 2)
    torch.testing.assert_close(score(e, x, "levels", sigmas=[0.1, 1.0, 3.0]), 1.5 * x.square().sum(-1))
