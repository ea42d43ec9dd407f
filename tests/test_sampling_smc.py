"""SMC and parallel tempering against exact answers: normalising constants, mode weights, swap rates.

Tolerances: SMC's log Z estimates at n = 2000 have a standard deviation of about 0.02-0.035 nats on these
targets (measured over seeds, see benchmarks/exactness.py), so 0.1 nats is three standard deviations; a mode's
share of n samples has a standard deviation of about 1.7 binomial ones (weight degeneracy at the early
levels), ~0.017 at n = 2000 and p = 0.25, so 0.05 is three. The seeds are fixed: the tests are
deterministic, and a biased estimator (a wrong weight, a wrong sign) misses by far more.
"""

from __future__ import annotations

import math

import pytest
import torch

import composer
from composer.errors import CompositionError
from composer.sampling.population import Reference, ess_fraction, systematic_resample
from composer.sampling.recipe import explain_options, resolve_options
from composer.sampling.smc import islands_for, next_beta


def gauss(mean, std, dim=1):
    mean = torch.as_tensor(mean, dtype=torch.float32)
    return composer.as_energy(lambda x: 0.5 * ((x - mean) / std).pow(2).sum(-1), event_shape=(dim,))


def test_systematic_resampling_copies_floor_or_ceil_of_m_w():
    w = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.0, 0.0, 1.0, 0.0]])
    log_w = torch.log(w)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = systematic_resample(log_w, gen)
        counts = torch.stack([torch.bincount(row, minlength=4) for row in idx]).float()
        expected = 4 * w
        assert ((counts - expected).abs() < 1.0).all()
    assert torch.allclose(ess_fraction(torch.zeros(2, 5)), torch.ones(2))
    assert ess_fraction(log_w)[1] == pytest.approx(0.25)


def test_next_beta_keeps_the_conditional_ess():
    u = torch.linspace(0, 50, 400).view(2, 200)
    log_w = torch.zeros(2, 200)
    b = next_beta(0.0, u, log_w, 0.9)
    w = torch.exp(-b * (u - u.min(1, keepdim=True).values))
    cess = ((w.sum(1) ** 2) / (200 * w.pow(2).sum(1))).mean()
    assert 0 < b < 1 and float(cess) == pytest.approx(0.9, abs=1e-4)
    assert next_beta(0.5, torch.zeros(2, 200), log_w, 0.9) == 1.0  # flat weights: straight to the target


def test_islands():
    assert islands_for(4000) == 8 and islands_for(64) == 2 and islands_for(31) == 1
    with pytest.raises(CompositionError, match="islands must divide"):
        islands_for(100, 3)


def test_log_z_of_a_product_of_gaussians():
    # N(0, 1) x N(2, 0.5^2) in 2-D: precision 5, mean 1.6; Z = exp(-1.6) * (2 pi / 5) (per dimension squared)
    a, b = gauss([0.0, 0.0], 1.0, 2), gauss([2.0, 0.0], 0.5, 2)
    exact = -1.6 + math.log(2 * math.pi / 5)
    r = composer.sample(a & b, n=2000, sampler="smc", steps=5, seed=0)
    assert r.log_z == pytest.approx(exact, abs=0.1)
    assert 0 < r.log_z_se < 0.1
    assert r.x.mean(0).tolist() == pytest.approx([1.6, 0.0], abs=0.05)
    assert r.x.var(0).tolist() == pytest.approx([0.2, 0.2], abs=0.03)
    levels = len(r.trace["beta"])
    assert r.trace["beta"][-1] == 1.0 and r.trace["ess"].shape == (levels,) and (r.trace["ess"] <= 1).all()


def test_mixture_weights_and_log_z_of_a_normalised_mixture():
    mix = composer.parse("toy.mixture(means=[[-2], [2]], std=0.4, weights=[1, 3])")  # exp(-E) integrates to 1
    r = composer.sample(mix, n=2000, seed=1)  # the recipe picks smc: toy.mixture is multi-modal
    assert r.sampler == "smc"
    assert float((r.x > 0).float().mean()) == pytest.approx(0.75, abs=0.05)
    assert r.log_z == pytest.approx(0.0, abs=0.1)


def test_uniform_reference_on_a_domain():
    flat = composer.as_energy(lambda x: 0.0 * x.sum(-1), event_shape=(2,), domain=(-1.0, 1.0))
    r = composer.sample(flat, n=256, sampler="smc", steps=3, seed=0)
    assert r.log_z == pytest.approx(math.log(4.0), abs=1e-5)  # every weight is 1: exact
    assert r.x.min() >= -1 and r.x.max() <= 1
    ref = Reference("uniform", (2,), torch.tensor(-1.0), torch.tensor(1.0))
    assert float(ref.energy(torch.zeros(1, 2))) == pytest.approx(math.log(4.0))


def test_smc_on_a_noise_ladder_gives_the_ratio_of_normalisers():
    # data N(0, 1) seen through noise sigma: E(x, sigma) = x^2 / (2 (1 + sigma^2)), Z = sqrt(2 pi (1 + sigma^2))
    e = composer.as_energy(lambda x, sigma=None: 0.5 * x.pow(2).sum(-1) / (1 + sigma**2), event_shape=(1,),
                           noise_conditional=True)
    sigmas = [3.0, 1.5, 0.7, 0.3, 0.1]
    init = lambda n, generator=None: math.sqrt(10.0) * torch.randn(n, 1, generator=generator)  # noqa: E731
    r = composer.sample(e, n=2000, sampler="smc", sigmas=sigmas, steps=5, step_size=0.5, init=init, seed=0)
    exact = 0.5 * math.log((1 + 0.1**2) / (1 + 3.0**2))
    assert r.log_z == pytest.approx(exact, abs=0.1)
    assert r.trace["sigma"].tolist() == pytest.approx(sigmas)
    assert float(r.x.var()) == pytest.approx(1.01, abs=0.1)


def test_parallel_tempering_crosses_between_modes():
    mix = composer.parse("toy.mixture(means=[[-2], [2]], std=0.3, weights=[1, 3])")
    r = composer.sample(mix, n=400, sampler="pt", steps=300, seed=0, kernel_options={"replicas": 6})
    assert float((r.x > 0).float().mean()) == pytest.approx(0.75, abs=0.08)  # binomial sd 0.022
    rates = r.trace["swap_rate"]
    assert rates.shape == (5,) and (rates > 0.2).all() and (rates <= 1).all()
    assert r.trace["betas"][0] == 1.0 and r.trace["acceptance"].shape == (300,)
    with pytest.raises(CompositionError, match="sampler 'pt' has no option"):
        composer.sample(mix, n=4, sampler="pt", steps=1, kernel_options={"replica": 3})


def test_the_recipe_picks_smc_for_mixtures_and_says_so():
    a, b = gauss([-2.0], 0.3), gauss([2.0], 1.0)
    opts, source = explain_options(a | b, True, {"sampler": None, "steps": None, "step_size": None})
    assert opts["sampler"] == "smc" and source["sampler"].startswith("auto: it has a mixture node")
    assert opts["steps"] == 20 and source["steps"] == "default of smc"
    assert resolve_options(a | b, True, {"sampler": "mala", "steps": None})["steps"] == 500  # the caller wins
    assert resolve_options(a & b, True, {"sampler": None})["sampler"] == "langevin"
    assert resolve_options(a | b, False, {"sampler": None})["sampler"] == "langevin"
    ladder = a | b
    ladder.sampling_recipe = {"sigmas": [1.0, 0.1], "sampler": "langevin"}  # a noise ladder keeps its sampler
    assert resolve_options(ladder, True, {"sampler": None})["sampler"] == "langevin"


def test_calibrated_mixture_gives_each_branch_its_weight():
    # unnormalised Gaussians: branch masses sqrt(2 pi) * 0.3 and sqrt(2 pi) * 1.0, shares 23% / 77%
    a, b = gauss([-3.0], 0.3), gauss([3.0], 1.0)
    mix = a | b
    cal = composer.calibrate(mix, n=1000, seed=0)
    assert mix.log_weights == [0.0, 0.0]  # the original is unchanged
    exact = [math.log(math.sqrt(2 * math.pi) * s) for s in (0.3, 1.0)]
    assert cal.log_z == pytest.approx(exact, abs=0.1)
    r = composer.sample(cal, n=2000, seed=0)
    assert float((r.x < 0).float().mean()) == pytest.approx(0.5, abs=0.05)
    r = composer.sample(mix, n=2000, seed=0)
    assert float((r.x < 0).float().mean()) == pytest.approx(0.3 / 1.3, abs=0.05)


def test_samples_lie_in_the_domain_even_without_clamping():
    e = composer.as_energy(lambda x: 0.5 * ((x - 0.9) / 0.3).pow(2).sum(-1), event_shape=(3,), domain=(0.0, 1.0))
    r = composer.sample(e, n=200, steps=20, step_size=0.05, clamp=False, seed=0)
    assert r.x.min() >= 0 and r.x.max() <= 1


def test_population_samplers_refuse_a_mask():
    e = gauss([0.0, 0.0], 1.0, 2)
    for name in ("smc", "pt"):
        with pytest.raises(CompositionError, match=f"sampler '{name}' draws its particles from a reference"):
            composer.sample(e, init=torch.zeros(8, 2), mask=torch.tensor([True, False]), sampler=name, steps=1)
