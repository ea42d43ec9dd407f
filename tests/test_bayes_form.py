"""Bayes-form concept values (``ConditionalEnergy(..., base=prior)``): a shared base counts once.

Every check compares the composed energy with the closed form written out by hand, in float64
(tolerance 1e-12: the same operations in a different order).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import composer
from composer import CompositionError, ConditionalEnergy, as_energy, mixture, product
from composer.algebra import split_base


class Logits(nn.Module):
    """``-log softmax(W x)[c]`` over 3 values; counts calls and rows; has ``energies_all``."""

    def __init__(self, all_values: bool = True):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
        self.calls, self.rows = 0, 0
        if not all_values:
            self.energies_all = None

    def table(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return -torch.log_softmax(x @ self.w.t(), dim=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.table(x).gather(1, cond.view(-1, 1)).squeeze(1)

    def energies_all(self, x: torch.Tensor) -> torch.Tensor:  # noqa: F811 - replaced by None above when off
        return self.table(x)


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return 0.5 * (x**2).sum(-1)


@pytest.fixture()
def world():
    prior_fn = Counting()
    prior = as_energy(prior_fn, event_shape=(2,), label="prior")
    net = Logits()
    values = {n: ConditionalEnergy(net, torch.tensor(i), (2,), label=n, base=prior) for i, n in enumerate("abc")}
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        lik = -torch.log_softmax(x @ net.w.t(), dim=1)
    return prior, prior_fn, net, values, x, 0.5 * (x**2).sum(-1), lik


def test_a_value_is_base_plus_likelihood(world):
    prior, _, net, v, x, e0, lik = world
    torch.testing.assert_close(v["a"](x), e0 + lik[:, 0], rtol=0, atol=1e-12)
    assert v["a"].noise_conditional is False and split_base(v["a"])[0] is prior


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda v: v["a"] & v["b"], lambda e0, L: e0 + L[:, 0] + L[:, 1]),
        (lambda v: v["a"] & ~v["b"], lambda e0, L: e0 + L[:, 0] - torch.log1p(-torch.exp(-L[:, 1]))),
        (lambda v: v["a"] & 0.5 * ~v["b"], lambda e0, L: e0 + L[:, 0] - 0.5 * torch.log1p(-torch.exp(-L[:, 1]))),
        (lambda v: 2 * v["a"], lambda e0, L: e0 + 2 * L[:, 0]),
        (lambda v: 2 * v["a"] & v["c"], lambda e0, L: e0 + 2 * L[:, 0] + L[:, 2]),
        (lambda v: (v["a"] & v["b"]) & v["c"], lambda e0, L: e0 + L.sum(1)),
        (lambda v: v["a"] | v["b"], lambda e0, L: e0 - torch.logsumexp(-L[:, :2], 1)),
        (lambda v: (v["a"] | v["b"]) & v["c"], lambda e0, L: e0 - torch.logsumexp(-L[:, :2], 1) + L[:, 2]),
        (lambda v: (v["a"] & v["b"]) | v["c"],
         lambda e0, L: e0 - torch.logsumexp(torch.stack([-L[:, 0] - L[:, 1], -L[:, 2]]), 0)),
        (lambda v: v["c"] & ~(v["a"] & v["b"]),
         lambda e0, L: e0 + L[:, 2] - torch.log1p(-torch.exp(-L[:, 0])) - torch.log1p(-torch.exp(-L[:, 1]))),
        (lambda v: ~v["a"] & ~v["b"],
         lambda e0, L: e0 - torch.log1p(-torch.exp(-L[:, 0])) - torch.log1p(-torch.exp(-L[:, 1]))),
        (lambda v: 3 * (v["a"] | v["b"]), lambda e0, L: e0 - 3 * torch.logsumexp(-L[:, :2], 1)),
    ],
)
def test_compositions_count_the_base_once(world, build, expected):
    prior, prior_fn, _, v, x, e0, lik = world
    e = build(v)
    e.validate()
    prior_fn.calls = 0
    torch.testing.assert_close(e(x), expected(e0, lik), rtol=0, atol=1e-12)
    assert prior_fn.calls == 1  # the base is evaluated once, however many values use it


def test_guidance_sharpens_the_posterior_and_its_complement(world):
    prior, _, net, v, x, e0, lik = world
    g = {n: ConditionalEnergy(net, torch.tensor(i), (2,), label=n, base=prior, guidance=3.0)
         for i, n in enumerate("ab")}
    torch.testing.assert_close((g["a"] & ~g["b"])(x), e0 + 3 * lik[:, 0] - 3 * torch.log1p(-torch.exp(-lik[:, 1])),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close((g["a"] & v["b"])(x), e0 + 3 * lik[:, 0] + lik[:, 1], rtol=0, atol=1e-12)
    with pytest.raises(CompositionError, match="guidance must be a positive"):
        ConditionalEnergy(net, torch.tensor(0), (2,), base=prior, guidance=0)


def test_a_certain_negated_value_costs_a_finite_energy(world):
    """p(b | x) = 1 exactly: the complement is clamped at p <= 1 - 1e-6 (energy ~13.8, finite gradient)."""
    *_, v, _x, _e0, _lik = world
    w = v["b"].network.w.detach()
    big = 200.0 * (w[1] - w[0]) / (w[1] - w[0]).norm()  # p(b | x) rounds to 1 in float64
    x = big.expand(3, 2).clone().requires_grad_(True)
    e = (v["a"] & ~v["b"])(x)
    (grad,) = torch.autograd.grad(e.sum(), x)
    assert torch.isfinite(e).all() and torch.isfinite(grad).all()
    with torch.no_grad():
        not_b = e - v["a"].base(x) - v["a"].likelihood(x)
    torch.testing.assert_close(not_b, torch.full_like(not_b, -math.log(-math.expm1(-1e-6))), rtol=0, atol=1e-6)


def test_the_formula_is_what_was_written(world):
    *_, v, _x, _e0, _lik = world
    assert (v["a"] & ~v["b"]).formula() == "a & ~b"
    assert ((v["a"] | v["b"]) & 2 * v["c"]).formula() == "(a | b) & 2 * c"


def test_values_of_one_network_share_one_call_on_b_rows(world):
    *_, net, v, x, _e0, _lik = world
    e = v["a"] & v["b"] & ~v["c"]
    net.calls = net.rows = 0
    e(x)
    assert (net.calls, net.rows) == (1, x.shape[0])


def test_without_energies_all_the_batch_is_stacked():
    prior = as_energy(lambda x: 0.5 * (x**2).sum(-1), event_shape=(2,))
    net = Logits(all_values=False)
    a, b = (ConditionalEnergy(net, torch.tensor(i), (2,), label=n, base=prior) for i, n in enumerate("ab"))
    x = torch.randn(5, 2, dtype=torch.float64)
    net.calls = net.rows = 0
    e = (a & b)(x)
    assert (net.calls, net.rows) == (1, 10)
    torch.testing.assert_close(e, a(x) + b(x) - prior(x), rtol=0, atol=1e-12)


def test_distinct_bases_each_count_once(world):
    prior, _, net, v, x, e0, lik = world
    other = as_energy(lambda x: (x - 1).abs().sum(-1), event_shape=(2,), label="other")
    d = ConditionalEnergy(net, torch.tensor(2), (2,), label="d", base=other)
    e = v["a"] & v["b"] & d
    assert len(e.bases) == 2 and split_base(e) == (None, e)
    torch.testing.assert_close(e(x), e0 + (x - 1).abs().sum(-1) + lik.sum(1), rtol=0, atol=1e-12)


def test_plain_experts_keep_the_literal_algebra(world):
    prior, _, _, v, x, e0, lik = world
    plain = as_energy(lambda x: x.sum(-1), event_shape=(2,))
    torch.testing.assert_close((v["a"] & plain)(x), e0 + lik[:, 0] + x.sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close((2 * plain)(x), 2 * x.sum(-1), rtol=0, atol=1e-12)
    with pytest.raises(CompositionError, match="no positive expert"):
        (~plain & ~plain).validate()


def test_gradients_match_finite_differences(world):
    *_, v, x, _e0, _lik = world
    e = (v["a"] | v["b"]) & ~v["c"]
    assert torch.autograd.gradcheck(lambda t: e(t), (x.clone().requires_grad_(True),))


def test_parts_follow_to(world):
    *_, v, _x, _e0, _lik = world
    e = product(v["a"], mixture(v["b"], v["c"]))
    e.to("meta")
    assert all(b.device.type == "meta" for b in e.buffers())


def test_base_must_be_an_energy():
    with pytest.raises(CompositionError, match="base must be an Energy"):
        ConditionalEnergy(Logits(), torch.tensor(0), (2,), label="a", base=lambda x: x)


def test_exported_at_top_level():
    assert composer.ConditionalEnergy is ConditionalEnergy


def test_concept_inference_evaluates_the_shared_base_once(world):
    from composer.inference import concept_energies, infer_concept
    from composer.registry import Registry

    prior, prior_fn, _, v, x, e0, lik = world
    reg = Registry()
    reg.add_concept("t.letter", ["a", "b", "c"], lambda value: v[value], plugin="t")
    prior_fn.calls = 0
    values, energies = concept_energies(reg, "t.letter", x)
    assert values == ["a", "b", "c"] and prior_fn.calls == 1
    torch.testing.assert_close(energies, e0[:, None] + lik, rtol=0, atol=1e-12)
    assert infer_concept(reg, "t.letter", x)[1].tolist() == lik.argmin(1).tolist()


def test_discriminative_objective_one_call_equals_the_stacked_call(world):
    """``energies_all`` on B rows (unwrapped) and the stacked K*B call (as under DDP) give the same (B, K)."""
    from composer.training.config import DSMConfig
    from composer.training.objectives import DiscriminativeObjective

    _, _, net, _, x, _, lik = world

    class Wrapped(nn.Module):  # what a DDP wrapper looks like to the objective: forward only
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, cond, sigma=None):
            return self.inner(x, cond)

    obj = DiscriminativeObjective(DSMConfig(), 3, torch.device("cpu"), seed=0, batch_size=7, lo=0)
    sigma = torch.full((x.shape[0],), 0.5, dtype=x.dtype)
    net.energies_all = lambda t, s=None: net.table(t)  # noise-free toy: ignores sigma
    net.calls = net.rows = 0
    direct = obj.energies(net, net, x, sigma)
    assert (net.calls, net.rows) == (1, x.shape[0])
    stacked = obj.energies(Wrapped(net), net, x, sigma)
    assert (net.calls, net.rows) == (2, 4 * x.shape[0])
    torch.testing.assert_close(direct, lik, rtol=0, atol=1e-12)
    torch.testing.assert_close(stacked, lik, rtol=0, atol=1e-12)
