"""An analytic concept family in Bayes form over a flat base: ``template.side=west|east``.

Each value is ``E(x | c) = E_base(x) - log p(c | x)`` with ``p(east | x) = sigmoid(4 x[0])``
and a flat base on the box ``[-4, 4]^2``. Every value shares ONE network and ONE base object.
"""

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

import composer

VALUES = ("west", "east")
DOMAIN = (-4.0, 4.0)


class SidePosterior(nn.Module):
    """``-log p(c | x)`` of the side of ``x[:, 0]``: ``p(east | x) = sigmoid(sharpness * x[:, 0])``."""

    def __init__(self, sharpness: float = 4.0):
        super().__init__()
        self.sharpness = float(sharpness)

    def energies_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every value at once: ``(B, 2) -> (B, 2)``, columns in the order of ``VALUES``."""
        z = self.sharpness * x[:, 0]
        return torch.stack([F.softplus(z), F.softplus(-z)], dim=1)  # -log sigmoid(-z), -log sigmoid(z)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x: (B, 2)``, ``cond: (B,)`` value indices -> ``(B,)``."""
        return self.energies_all(x).gather(1, cond.long().view(-1, 1)).squeeze(1)


class Flat(composer.Energy):
    """The flat base ``E(x) = 0`` on a box: the uniform distribution there."""

    def __init__(self):
        super().__init__(event_shape=(2,), domain=DOMAIN, label="template.flat")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0])


@cache
def shared() -> tuple[SidePosterior, Flat]:
    """The one network and the one base every value uses (cached: compositions count the base once)."""
    return SidePosterior(), Flat()


def side(value: str) -> composer.Energy:
    """Which side of x[0] = 0: E = 0 - log p(value | x) on the box [-4, 4]^2."""
    network, base = shared()
    return composer.ConditionalEnergy(network, torch.tensor(VALUES.index(value)), event_shape=(2,),
                                      domain=DOMAIN, base=base)
