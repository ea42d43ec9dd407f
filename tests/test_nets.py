"""Energy networks: shapes, conditioning semantics, batching in products, spectral norm, configs."""

from __future__ import annotations

import pytest
import torch

import composer
from composer import CheckpointError, CompositionError, ConditionalEnergy
from composer.nets import ConvEnergy, MLPEnergy, build_network


def _perturb(net: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its initial value (gains 1 / biases 0 would hide conditioning bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("kwargs", [{}, {"num_classes": 3}, {"noise_conditional": True},
                                    {"num_classes": 3, "noise_conditional": True, "spectral_norm": True}])
def test_mlp_rows_are_independent(kwargs):
    """Row i of a batched call equals the call on row i alone (no mixing across the batch)."""
    torch.manual_seed(0)
    net = MLPEnergy((2,), hidden=(16, 16), **kwargs).eval()
    _perturb(net)
    x = torch.randn(6, 2)
    cond = torch.tensor([0, 1, 2, 0, 1, 2]) if kwargs.get("num_classes") else None
    sigma = torch.linspace(0.1, 1.0, 6) if kwargs.get("noise_conditional") else None
    e = net(x, cond, sigma=sigma)
    assert e.shape == (6,)
    for i in range(6):
        one = net(x[i:i + 1], None if cond is None else cond[i:i + 1], sigma=None if sigma is None else sigma[i:i + 1])
        torch.testing.assert_close(e[i:i + 1], one, rtol=1e-5, atol=1e-6)


def test_conditional_values_differ_and_share_parameters():
    torch.manual_seed(0)
    net = MLPEnergy((2,), hidden=(16,), num_classes=2)
    _perturb(net)
    x = torch.randn(4, 2)
    e0, e1 = net(x, torch.zeros(4, dtype=torch.long)), net(x, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(e0, e1)
    # value 1 with the gains and biases of value 0 is value 0: the rest of the network is shared
    with torch.no_grad():
        for mod in net.mods:
            mod.gain.weight[1] = mod.gain.weight[0]
            mod.bias.weight[1] = mod.bias.weight[0]
    torch.testing.assert_close(net(x, torch.ones(4, dtype=torch.long)), e0)


def test_noise_conditional_scales_by_sigma_and_accepts_float():
    torch.manual_seed(0)
    net = MLPEnergy((2,), hidden=(16,), noise_conditional=True)
    _perturb(net)
    x = torch.randn(5, 2)
    torch.testing.assert_close(net(x, sigma=0.5), net(x, sigma=torch.full((5,), 0.5)))
    # the output is f(x, sigma) / sigma: with the sigma modulation zeroed, E(x, s) * s does not depend on s
    with torch.no_grad():
        for mod in net.mods:
            mod.sigma_proj.weight.zero_()
            mod.sigma_proj.bias.zero_()
    torch.testing.assert_close(net(x, sigma=0.5) * 0.5, net(x, sigma=2.0) * 2.0)


def test_product_of_family_values_is_one_batched_call():
    """``a & b`` over values of one conditional network: exact sum, and the network runs once."""
    torch.manual_seed(0)
    net = MLPEnergy((2,), hidden=(16,), num_classes=3)
    _perturb(net)
    red = ConditionalEnergy(net, torch.tensor(0), (2,), label="c=red")
    blue = ConditionalEnergy(net, torch.tensor(2), (2,), label="c=blue")
    x = torch.randn(7, 2)
    expected = red(x) + blue(x)
    calls = []
    handle = net.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = (red & blue)(x)
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected)
    assert len(calls) == 1


def test_conv_energy_shapes_conditional_and_noise():
    torch.manual_seed(0)
    net = ConvEnergy((3, 12, 12), channels=(4, 8), num_classes=2, noise_conditional=True, activation="leaky_relu")
    x = torch.rand(3, 3, 12, 12)
    e = net(x, torch.tensor([0, 1, 0]), sigma=torch.tensor([0.1, 0.2, 0.3]))
    assert e.shape == (3,) and torch.isfinite(e).all()


def test_spectral_norm_bounds_each_layer():
    """After power iterations (train-mode forwards) every weight has largest singular value ~1."""
    torch.manual_seed(0)
    net = MLPEnergy((2,), hidden=(32, 32), spectral_norm=True)
    for _ in range(30):
        net(torch.randn(8, 2))
    for layer in [*net.layers, net.head]:
        sv = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
        assert abs(float(sv) - 1.0) < 1e-2


def test_config_round_trip_rebuilds_identical_network():
    torch.manual_seed(0)
    net = MLPEnergy((3,), hidden=(8, 8), num_classes=2, activation="elu")
    copy = build_network(net.config)
    assert copy.config == net.config
    copy.load_state_dict(net.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(copy(x, torch.tensor([0, 1, 1, 0])), net(x, torch.tensor([0, 1, 1, 0])))


def test_clear_errors():
    cond_net = MLPEnergy((2,), hidden=(4,), num_classes=2)
    with pytest.raises(CompositionError, match="conditional"):
        cond_net(torch.zeros(1, 2))
    with pytest.raises(CompositionError, match="unconditional"):
        MLPEnergy((2,), hidden=(4,))(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    with pytest.raises(CompositionError, match="noise-conditional"):
        MLPEnergy((2,), hidden=(4,), noise_conditional=True)(torch.zeros(1, 2))
    with pytest.raises(CompositionError, match=r"shape \(B, 2\)"):
        MLPEnergy((2,), hidden=(4,))(torch.zeros(1, 3))
    with pytest.raises(CompositionError, match="unknown activation 'gelu2'"):
        MLPEnergy((2,), activation="gelu2")
    with pytest.raises(CheckpointError, match="unknown network type 'resnet'"):
        build_network({"type": "resnet"})
    with pytest.raises(CheckpointError, match="bad arguments for network 'mlp'"):
        build_network({"type": "mlp", "depth": 3})


def test_network_as_expert_composes():
    net = MLPEnergy((2,), hidden=(4,))
    e = composer.as_energy(net, event_shape=(2,), label="net")
    assert (e & e)(torch.zeros(3, 2)).shape == (3,)
