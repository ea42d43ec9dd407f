"""The template's expert and concept family: registration, exact energies, exact composition figures."""

import math

import composer_template.plugin
import pytest
import torch
from composer_template.concepts import shared, side
from composer_template.experts import Bowl

import composer
from composer.plugins import PluginManager


@pytest.fixture
def registry():
    pm = PluginManager(entry_points=False, builtins=True, disabled=())  # built-ins: the samplers
    pm.register(composer_template.plugin, "template")
    return pm.build_registry()


def test_registers_the_expert_and_the_family(registry):
    assert not registry.failures
    assert registry.experts["template.bowl"].doc.startswith("Quadratic bowl: E(x) =")
    assert registry.concepts["template.side"].values == ("west", "east")


def test_bowl_energy_is_exact_and_bad_parameters_are_one_line(registry):
    bowl = registry.make_expert("template.bowl", center=[1, 2], scale=2)
    x = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    torch.testing.assert_close(bowl(x), torch.tensor([0.0, 5.0]))  # 0.5 * 2 * (1 + 4)
    with pytest.raises(composer.CompositionError, match="scale must be > 0"):
        registry.make_expert("template.bowl", center=[0, 0], scale=-1)
    with pytest.raises(composer.CompositionError, match="center must be a list"):
        Bowl(center=3.0)


def test_values_share_one_network_and_one_base():
    west, east = side("west"), side("east")
    assert west.network is east.network is shared()[0]
    assert west.base is east.base is shared()[1]


def test_not_west_is_exactly_east_and_the_base_is_counted_once():
    bowl, west, east = Bowl([0.0, 0.0]), side("west"), side("east")
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    p_east = torch.sigmoid(4 * x[:, 0])
    torch.testing.assert_close((bowl & ~west)(x), bowl(x) - torch.log(p_east), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((bowl & ~west)(x), (bowl & east)(x), rtol=1e-5, atol=1e-5)
    # a value without its base divides by p(west | x) instead: unbounded as x[0] grows
    bare = west.without_base()
    bare.posterior = False
    log_p_west = torch.nn.functional.logsigmoid(-4 * x[:, 0])  # log(1 - p_east), without float32 cancellation
    torch.testing.assert_close((bowl & ~bare)(x), bowl(x) + log_p_west, rtol=1e-5, atol=1e-5)


def exact_share_west(with_base: bool) -> float:
    """P(x[0] < 0) under bowl(center=[0, 0]) & ~side=west, by quadrature on a fine grid (the x[1] factor cancels)."""
    t = torch.linspace(-12, 12, 240_001, dtype=torch.float64)
    z = 4 * t
    log_w = -0.5 * t**2 + (torch.nn.functional.logsigmoid(z) if with_base else torch.nn.functional.softplus(z))
    w = torch.exp(log_w - log_w.max())
    return float(w[t < 0].sum() / w.sum())


def test_exact_figures_of_the_guide():
    assert round(100 * exact_share_west(True), 1) == 12.9  # 1 - p(west | x): the event "not west"
    assert round(100 * exact_share_west(False), 2) == 0.02  # divided by p(west | x)


def test_sampled_share_matches_the_exact_answer(registry):
    energy = composer.parse("template.bowl(center=[0, 0]) & ~template.side=west", registry=registry)
    x = composer.sample(energy, n=4000, steps=400, sampler="mala", step_size=0.2, seed=0, registry=registry).x
    share = float((x[:, 0] < 0).float().mean())
    # 4000 chains: standard error sqrt(0.129 * 0.871 / 4000) = 0.0053; 0.03 is ~5.6 standard errors
    assert math.isclose(share, exact_share_west(True), abs_tol=0.03), share
