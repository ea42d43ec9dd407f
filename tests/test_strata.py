"""Stratified sampling of a declared mixture (``composer.sampling.strata``) against exact answers.

The 1-D prior is ``E(x) = -log(exp(-E_left) + exp(-E_right))`` with ``E_left = (x + 5)^2 / 2`` and
``E_right = (x - 5)^2 / (2 * 0.5^2)``: its own component masses are 2 : 1 (the right one is narrower), while it
declares the mixture 1 : 1 over the family ``side``. Stratified, exactly the declared share of chains samples
each component; a chain crosses from one to the other with probability below 1e-6 (5 standard deviations).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import composer
from composer import CompositionError, ConditionalEnergy, Strata, as_energy
from composer.sampling.strata import allocate, strata_of


def side_energies(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2)``: ``E_left``, ``E_right``."""
    x = x[:, 0]
    return torch.stack([0.5 * (x + 5.0) ** 2, 0.5 * ((x - 5.0) / 0.5) ** 2], dim=1)


class SidePosterior(nn.Module):
    """``-log p(side | x)`` of the mixture, so that prior + it = ``E_side`` exactly."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        e = side_energies(x)
        return e.gather(1, cond.view(-1, 1).expand(x.shape[0], 1)).squeeze(1) + torch.logsumexp(-e, dim=1)


class Flat(nn.Module):
    """A posterior that knows nothing: ``-log p = log 2`` (another family, blind to the side)."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), 0.6931471805599453, dtype=x.dtype)


@pytest.fixture()
def world():
    prior = as_energy(lambda x: -torch.logsumexp(-side_energies(x), dim=1), event_shape=(1,), label="prior")
    side_net = SidePosterior()

    def make(value: str) -> ConditionalEnergy:
        e = ConditionalEnergy(side_net, torch.tensor(["left", "right"].index(value)), (1,), label=f"side={value}",
                              base=prior)
        e.family, e.value = "side", value
        return e

    prior.strata = Strata("side", {"left": 1.0, "right": 1.0}, make)
    other = ConditionalEnergy(Flat(), torch.tensor(0), (1,), label="other=a", base=prior)
    other.family, other.value = "other", "a"
    return prior, make, other


OPTIONS = {"steps": 400, "step_size": 0.02, "sampler": "langevin", "init": "gaussian", "recipe": False}


def test_allocate_is_largest_remainder_and_sums_to_n():
    assert allocate(10, [1, 1, 1, 1]) == [3, 3, 2, 2]
    assert allocate(7, [0.5, 0.25, 0.25]) == [3, 2, 2]  # 3.5, 1.75, 1.75: the larger remainders win
    assert allocate(3, [1, 1, 1, 1]) == [1, 1, 1, 0]
    for n in range(0, 40):
        assert sum(allocate(n, [0.2, 0.3, 0.5])) == n


def test_the_prior_alone_gets_the_declared_shares(world):
    prior, _, _ = world
    r = composer.sample(prior, n=101, seed=3, **OPTIONS)
    x = r.x[:, 0]
    assert int((x < 0).sum()) == 51 and int((x > 0).sum()) == 50  # allocate(101, [.5, .5]) = [51, 50]
    # each stratum samples its own component: N(-5, 1) and N(5, 0.5^2); 4 standard errors
    assert abs(float(x[x < 0].mean()) + 5.0) < 4 / 51**0.5
    assert abs(float(x[x > 0].mean()) - 5.0) < 4 * 0.5 / 50**0.5
    assert 0.7 < float(x[x < 0].std()) < 1.3 and 0.35 < float(x[x > 0].std()) < 0.65
    # one random order, not stratum after stratum; the same seed gives the same samples
    assert 0 < int((x[:51] < 0).sum()) < 51
    torch.testing.assert_close(composer.sample(prior, n=101, seed=3, **OPTIONS).x, r.x)
    assert r.energy.shape == (101,) and r.steps_run.shape == (101,) and r.seed == 3
    assert set(r.trace) >= {"energy_mean", "energy_min", "energy_max", "grad_norm"}
    assert r.trace["energy_mean"].shape == (400,)
    assert float(r.trace["energy_min"][-1]) <= float(r.trace["energy_mean"][-1]) <= float(r.trace["energy_max"][-1])


def test_a_composition_that_leaves_the_family_free_is_stratified(world):
    prior, make, other = world
    assert strata_of(other) == (prior.strata,)
    x = composer.sample(other, n=40, seed=0, **OPTIONS).x[:, 0]
    assert int((x < 0).sum()) == 20 and int((x > 0).sum()) == 20
    # naming the family (or negating a value of it) turns stratification off
    assert strata_of(make("left")) == ()
    assert strata_of(composer.product(other, composer.Negation(make("left")))) == ()
    assert strata_of(as_energy(lambda x: x.square().sum(-1), event_shape=(1,))) == ()
    other.families = ("side", "other")  # a term conditioned on several families names each of them
    assert strata_of(other) == ()


def test_off_switch_and_given_chains_keep_one_run(world):
    prior, _, _ = world
    start = torch.full((30, 1), -5.0)
    x = composer.sample(prior, init=start, **{k: v for k, v in OPTIONS.items() if k != "init"}, seed=0).x[:, 0]
    assert bool((x < 0).all())  # given chains are not re-dealt to strata
    one = composer.sample(prior, n=30, seed=1, stratify=False, **OPTIONS)
    plain = as_energy(lambda x: -torch.logsumexp(-side_energies(x), dim=1), event_shape=(1,))  # no strata
    torch.testing.assert_close(one.x, composer.sample(plain, n=30, seed=1, **OPTIONS).x, rtol=0, atol=0)
    assert composer.sample(prior, n=30, seed=1, **OPTIONS).x.ne(one.x).any()


def test_bad_strata_are_refused(world):
    _, make, _ = world
    with pytest.raises(CompositionError, match="positive"):
        Strata("side", {"left": 0.0, "right": 1.0}, make)
    with pytest.raises(CompositionError, match="no values"):
        Strata("side", {}, make)
