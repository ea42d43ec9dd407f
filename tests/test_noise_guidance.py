"""``NoiseGuidance``: a guidance scale that depends on the noise level, in products, negations and mixtures.

Every check compares the composed energy with the closed form written out by hand, in float64.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from composer import CompositionError, ConditionalEnergy, NoiseGuidance, as_energy
from composer.energy import complement


class NoisyLogits(nn.Module):
    """``-log softmax(W x / (1 + sigma))[c]`` over 3 values; ``energies_all`` optional."""

    noise_conditional = True

    def __init__(self, all_values: bool):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
        if not all_values:
            self.energies_all = None

    def table(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) if sigma is not None else 0.0
        return -torch.log_softmax(x @ self.w.t() / (1 + s), dim=1)

    def forward(self, x, cond, sigma=None):
        return self.table(x, sigma).gather(1, cond.view(-1, 1)).squeeze(1)

    def energies_all(self, x, sigma=None):  # noqa: F811 - replaced by None when off
        return self.table(x, sigma)


@pytest.mark.parametrize("all_values", [True, False])
@pytest.mark.parametrize("sigma", [0.5, 2.0, "tensor"])
def test_products_and_negations_use_the_guidance_of_the_noise_level(all_values, sigma):
    net = NoisyLogits(all_values)
    prior = as_energy(lambda x, sigma=None: 0.5 * x.pow(2).sum(-1), event_shape=(2,), noise_conditional=True)
    g = NoiseGuidance(10.0, sigma_max=1.0, above=2.0)
    a, b, c = (ConditionalEnergy(net, torch.tensor(i), (2,), label=n, noise_conditional=True, base=prior, guidance=g)
               for i, n in enumerate("abc"))
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = torch.tensor([0.5, 2.0, 0.5, 3.0, 0.1], dtype=torch.float64) if sigma == "tensor" else sigma
    scale = g(s)
    table = net.table(x, s)
    expected = 0.5 * x.pow(2).sum(-1) + scale * table[:, 0] + scale * table[:, 1] - scale * torch.log1p(
        -torch.exp(-table[:, 2]))
    got = (a & b & ~c)(x, sigma=s)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # alone: the value's likelihood part is g(sigma) * (-log p)
    torch.testing.assert_close(a.likelihood(x, s), scale * table[:, 0], rtol=1e-12, atol=1e-12)
    # a single negation outside a batched group takes the complement at the same scale
    torch.testing.assert_close(complement(scale * table[:, 2], scale), -scale * torch.log1p(-torch.exp(-table[:, 2])))


def test_noise_guidance_values_and_errors():
    g = NoiseGuidance(10.0, sigma_max=1.0)
    assert g(None) == 10.0 and g(0.99) == 10.0 and g(1.0) == 1.0
    assert g(torch.tensor([0.5, 1.5])).tolist() == [10.0, 1.0]
    with pytest.raises(CompositionError, match="positive numbers"):
        NoiseGuidance(0.0, 1.0)
