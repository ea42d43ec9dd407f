"""Shared test helpers: concept families on analytic networks with exact energies (float64).

Each value sits at a point of ``CENTERS``; its energy is ``0.5 * ||x - center||^2``, so
parsed compositions can be compared with hand-written formulas to a few ulps.
"""

from __future__ import annotations

import torch
from torch import nn

from composer import ConditionalEnergy

CENTERS = {
    "red": (1.0, 0.0),
    "green": (0.0, 1.0),
    "blue": (0.0, 1.0),
    "triangle": (-1.0, 0.0),
    "square": (0.0, -1.0),
}


class Centers(nn.Module):
    """A shared conditional network: E(x, c) = 0.5 * ||x - centers[c]||^2."""

    def __init__(self, values):
        super().__init__()
        self.register_buffer("centers", torch.tensor([CENTERS[v] for v in values], dtype=torch.float64))

    def forward(self, x, cond):
        return 0.5 * ((x - self.centers[cond]) ** 2).sum(-1)


def concept_family(values, looks=None):
    """Values of one family sharing one network; value i sits at CENTERS[looks[i]]."""
    net = Centers(looks or values)
    return lambda value: ConditionalEnergy(net, torch.tensor(values.index(value)), event_shape=(2,))


def exact(name: str, x: torch.Tensor) -> torch.Tensor:
    """The exact energy of value ``name`` at ``x: (B, 2)``."""
    return 0.5 * ((x - torch.tensor(CENTERS[name], dtype=torch.float64)) ** 2).sum(-1)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal to a few ulps: the same few float64 operations, possibly in another order."""
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
