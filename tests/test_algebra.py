"""Exact-value tests of the composition operators (products, mixtures, negations, weights, scopes)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import composer
from composer import CompositionError, ConditionalEnergy, Energy, as_energy
from composer.algebra import Mixture, Product, describe


class Quadratic(Energy):
    """E(x) = 0.5 * ||(x - mean) / std||^2 with learnable mean (so .to() has something to move)."""

    def __init__(self, mean, std=1.0, label="q"):
        mean = torch.as_tensor(mean, dtype=torch.get_default_dtype())
        super().__init__(mean.shape, label=label)
        self.mean = nn.Parameter(mean)
        self.std = std

    def forward(self, x):
        return 0.5 * (((x - self.mean) / self.std) ** 2).sum(-1)


class Mlp(Energy):
    def __init__(self, d=3, seed=0):
        super().__init__((d,), label=f"mlp{seed}")
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.net(x).squeeze(-1)


@pytest.fixture
def abc():
    torch.manual_seed(0)
    a = Quadratic([0.0, 0.0], label="a")
    return a, Quadratic([2.0, 0.0], 0.5, label="b"), Quadratic([0.0, 1.0], 2.0, label="c")


X = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))


def test_product_is_sum_of_energies(abc):
    a, b, c = abc
    torch.testing.assert_close((a & b)(X), a(X) + b(X), rtol=0, atol=1e-6)
    torch.testing.assert_close((a & b & c)(X), a(X) + b(X) + c(X), rtol=0, atol=1e-6)


def test_nested_products_flatten(abc):
    a, b, c = abc
    p = (a & b) & (c & a)
    assert isinstance(p, Product) and len(p.terms) == 4
    assert not any(isinstance(t, Product) for t in p.terms)
    assert repr(p) == "a & b & c & a"
    q = 2 * (a & b) & c
    assert q.coefficients == [2.0, 2.0, 1.0]
    torch.testing.assert_close(q(X), 2 * a(X) + 2 * b(X) + c(X), rtol=0, atol=1e-5)


def test_mixture_is_negative_logsumexp(abc):
    a, b, c = abc
    expected = -torch.logsumexp(torch.stack([-a(X), -b(X)]), 0)
    torch.testing.assert_close((a | b)(X), expected, rtol=0, atol=1e-6)
    # closed form for two components: -log(exp(-Ea) + exp(-Eb))
    ea, eb = a(X).double(), b(X).double()
    torch.testing.assert_close((a | b)(X).double(), -torch.log(torch.exp(-ea) + torch.exp(-eb)), rtol=1e-5, atol=1e-5)


def test_mixture_log_weights_and_flattening(abc):
    a, b, c = abc
    m = composer.mixture(a, b, weights=[1.0, 3.0])
    expected = -torch.log(torch.exp(-a(X).double()) + 3 * torch.exp(-b(X).double()))
    torch.testing.assert_close(m(X).double(), expected, rtol=1e-5, atol=1e-5)
    nested = composer.mixture(m, c, log_weights=[math.log(2.0), 0.0])
    assert isinstance(nested, Mixture) and len(nested.components) == 3
    torch.testing.assert_close(nested.log_weights, [math.log(2.0), math.log(6.0), 0.0])
    expected = -torch.log(2 * torch.exp(-a(X)) + 6 * torch.exp(-b(X)) + torch.exp(-c(X)))
    torch.testing.assert_close(nested(X), expected, rtol=1e-5, atol=1e-5)
    assert len(((a | b) | c).components) == 3


def test_negation_weights(abc):
    a, b, c = abc
    torch.testing.assert_close((a & ~b)(X), a(X) - b(X), rtol=0, atol=1e-6)
    torch.testing.assert_close((a & 0.3 * ~b)(X), a(X) - 0.3 * b(X), rtol=0, atol=1e-6)
    torch.testing.assert_close((a & 2 * (0.25 * ~b))(X), a(X) - 0.5 * b(X), rtol=0, atol=1e-6)
    assert repr(a & 0.3 * ~b) == "a & 0.3 * ~b"
    # ~(b & c) inside a product subtracts both
    torch.testing.assert_close((a & ~(b & c))(X), a(X) - b(X) - c(X), rtol=0, atol=1e-5)
    # a negated mixture is one term
    torch.testing.assert_close((a & 0.5 * ~(b | c))(X), a(X) - 0.5 * (b | c)(X), rtol=0, atol=1e-5)


def test_negation_without_positive_expert_is_rejected(abc):
    a, b, _ = abc
    with pytest.raises(CompositionError, match="outside a product"):
        (~b).validate()
    with pytest.raises(CompositionError, match="outside a product"):
        (~b)(X)
    with pytest.raises(CompositionError, match="no positive expert"):
        (~a & ~b).validate()
    (~a & ~b & b & a).validate()  # positive experts present: fine
    with pytest.raises(CompositionError, match="negation is only valid inside a product"):
        a | ~b
    with pytest.raises(CompositionError, match="no positive expert"):
        (a | (~a & ~b)).validate()


def test_weights(abc):
    a, _, _ = abc
    torch.testing.assert_close((2.5 * a)(X), 2.5 * a(X))
    torch.testing.assert_close((a * 2)(X), 2 * a(X))
    assert (2 * (3 * a)).weight == 6
    for bad in (0, -1, float("nan"), float("inf"), "2", True):
        with pytest.raises(CompositionError, match="weight"):
            bad * a


def test_scope_sees_view(abc):
    a, _, _ = abc
    x4 = torch.randn(5, 4)
    scoped = a.on(lambda x: x[:, 2:], event_shape=(4,))
    torch.testing.assert_close(scoped(x4), a(x4[:, 2:]))
    big = Quadratic([1.0, 1.0, 1.0, 1.0], label="big")
    combo = big & a.on(lambda x: x[:, :2])  # the scope's outer shape comes from its sibling
    assert combo.event_shape == torch.Size([4])
    torch.testing.assert_close(combo(x4), big(x4) + a(x4[:, :2]))


def test_incompatible_shapes_rejected(abc):
    a, _, _ = abc
    c3 = Quadratic([0.0, 0.0, 0.0], label="c3")
    with pytest.raises(CompositionError, match=r"incompatible event shapes: a has \(2,\) but c3 has \(3,\)"):
        a & c3
    with pytest.raises(CompositionError, match="incompatible event shapes"):
        a | c3


def test_different_devices_rejected(abc):
    a, b, _ = abc
    b.to("meta")
    with pytest.raises(CompositionError, match="different devices"):
        a & b


def test_to_moves_every_parameter():
    e = (Mlp(3, 0) & 0.5 * ~Mlp(3, 1)) | Mlp(3, 2).on(lambda x: x, event_shape=(3,))
    e = e.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in e.parameters())
    assert len(list(e.parameters())) == 12
    e = e.to("meta")
    assert all(p.device.type == "meta" for p in e.parameters())


def test_gradients_match_finite_differences():
    e = (Mlp(3, 0) & 0.5 * ~Mlp(3, 1) & 2 * Mlp(3, 3)) | Mlp(3, 2)
    e = e.to(torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: e(x), (x,), eps=1e-6, atol=1e-5)


class CountingNet(nn.Module):
    """A conditional network E(x, c) = 0.5 * ||x - M[c]||^2 * s[c] that counts its calls."""

    def __init__(self):
        super().__init__()
        self.means = nn.Parameter(torch.tensor([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]]))
        self.scale = nn.Parameter(torch.tensor([1.0, 2.0, 0.5]))
        self.calls = 0
        self.batch_sizes = []

    def forward(self, x, cond):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        return 0.5 * ((x - self.means[cond]) ** 2).sum(-1) * self.scale[cond]


def test_shared_network_values_run_in_one_batched_call(abc):
    a, _, _ = abc
    net = CountingNet()
    vals = [ConditionalEnergy(net, torch.tensor(i), (2,), label=f"v{i}") for i in range(3)]
    composed = vals[0] & a & vals[1] & 0.5 * ~vals[2]
    x = X.clone().requires_grad_(True)
    e = composed(x)
    assert net.calls == 1 and net.batch_sizes == [3 * X.shape[0]]
    net.calls = 0
    xs = X.clone().requires_grad_(True)
    expected = vals[0](xs) + a(xs) + vals[1](xs) - 0.5 * vals[2](xs)
    assert net.calls == 3
    # float32: only the summation order differs, so agreement to a few ulps of |E| ~ 20
    torch.testing.assert_close(e, expected, rtol=1e-6, atol=1e-5)
    g1 = torch.autograd.grad(e.sum(), x)[0]
    g2 = torch.autograd.grad(expected.sum(), xs)[0]
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-6)
    # parameter gradients agree too (training through a composition)
    p1 = torch.autograd.grad(composed(X).sum(), [net.means, net.scale])
    p2 = torch.autograd.grad((vals[0](X) + vals[1](X) - 0.5 * vals[2](X)).sum(), [net.means, net.scale])
    for u, v in zip(p1, p2):
        torch.testing.assert_close(u, v, rtol=1e-6, atol=1e-6)


class NoisyNet(nn.Module):
    def forward(self, x, cond, sigma=None):
        s = sigma if isinstance(sigma, torch.Tensor) else torch.full((x.shape[0],), float(sigma))
        return (x ** 2).sum(-1) / s ** 2 + cond.float()


def test_sigma_reaches_noise_conditional_experts(abc):
    a, _, _ = abc
    net = NoisyNet()
    v0, v1 = (ConditionalEnergy(net, torch.tensor(i), (2,), noise_conditional=True) for i in range(2))
    comp = v0 & v1 & a
    assert comp.noise_conditional
    sigma = torch.full((X.shape[0],), 2.0)
    expected = 2 * (X ** 2).sum(-1) / 4 + 1 + a(X)
    torch.testing.assert_close(comp(X, sigma=sigma), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(comp(X, sigma=2.0), expected, rtol=0, atol=1e-5)


def test_domains_intersect():
    a = as_energy(lambda x: x.sum(-1), event_shape=(2,), domain=(0.0, 1.0), label="a")
    b = as_energy(lambda x: x.sum(-1), event_shape=(2,), domain=([-1.0, 0.5], [0.5, 2.0]), label="b")
    low, high = (a & b).domain
    assert low.tolist() == [0.0, 0.5] and high.tolist() == [0.5, 1.0]
    low, high = (a | b).domain
    assert low.tolist() == [-1.0, 0.0] and high.tolist() == [1.0, 2.0]
    c = as_energy(lambda x: x.sum(-1), event_shape=(2,), domain=(2.0, 3.0), label="c")
    with pytest.raises(CompositionError, match="do not intersect"):
        (a & c).domain
    with pytest.raises(CompositionError, match="low must be < high"):
        as_energy(lambda x: x, event_shape=(1,), domain=(1.0, 0.0))


def test_plain_callables_and_modules_wrap():
    lin = nn.Linear(3, 1)
    e = as_energy(lambda x: lin(x).squeeze(-1), event_shape=(3,))
    assert e(torch.zeros(5, 3)).shape == (5,)
    m = as_energy(nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)), event_shape=(3,), label="seq")
    assert len(list(m.parameters())) == 2 and m.formula() == "seq"
    assert as_energy(m) is m
    with pytest.raises(CompositionError, match="callable"):
        as_energy(3)
    with pytest.raises(CompositionError, match="as_energy"):
        m & (lambda x: x)


def test_describe_shows_weights(abc):
    a, b, c = abc
    text = describe((a & 0.5 * ~b) | 2 * c)
    assert "OR (mixture of 2)" in text and "NOT, alpha 0.5" in text and "weight 2" in text
