"""Views of a shapes image that hide what a concept must not see (invariance by scope).

An expert that sees only ``view(x)`` cannot learn correlations with the factors the view
removes, which is what lets a product of experts generalise to held-out combinations:

- ``ColorBlind``: the sum of the RGB channels over ``sqrt(3)``, ``(B, 3, H, W) -> (B, 1, H, W)``. Red,
  green and blue objects look the same in it (only yellow, never part of a held-out pair, is twice as
  bright), so the view shows the layout (shape, size, position) but not which primary colour. It is
  linear, so Gaussian noise of std ``sigma`` on ``x`` is Gaussian noise of std ``sigma`` in the view and
  denoising score matching in the view is exact (a max over channels, tried first, is not: its noise
  is biased and skewed, and its experts collapsed to empty canvases when sampled).
- ``ColorBlindPooled(k)``: the colour-blind view averaged over ``k x k`` blocks,
  ``(B, 3, H, W) -> (B, 1, H/k, W/k)``: coarse layout (where the mass is, how much), no shape detail.
- ``Identity``: the whole image (for the monolithic baseline).

The colour expert does not need a view: its network is per-pixel (1x1 convolutions), so it
cannot see layout. Each view exposes ``noise_scale``: how a Gaussian noise of std ``sigma`` on ``x``
shows in the view (``1/k`` for a ``k x k`` average, 1 otherwise); the experts precondition with it.

    >>> import torch
    >>> v = ColorBlind()
    >>> round(v(torch.tensor([[[[0.0]], [[3 ** 0.5]], [[0.0]]]])).item(), 6)
    1.0
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from composer import ComposerError


class ColorBlind(nn.Module):
    """Sum over channels over ``sqrt(C)``: ``(B, C, H, W) -> (B, 1, H, W)`` (noise keeps its std)."""

    noise_scale = 1.0
    channels = 1

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=1, keepdim=True) / math.sqrt(x.shape[1])

    def extra_repr(self) -> str:
        return "sum over RGB / sqrt(3): sees layout, not which primary colour"


class ColorBlindPooled(nn.Module):
    """``ColorBlind``, then the mean over ``k x k`` blocks: ``(B, C, H, W) -> (B, 1, H/k, W/k)``."""

    channels = 1

    def __init__(self, k: int = 4):
        super().__init__()
        self.k = int(k)
        self.noise_scale = 1.0 / self.k

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x.sum(dim=1, keepdim=True) / math.sqrt(x.shape[1]), self.k)

    def extra_repr(self) -> str:
        return f"sum over RGB / sqrt(3), mean over {self.k}x{self.k} blocks: sees coarse layout, not colour or shape"


class Identity(nn.Module):
    """The whole image ``(B, 3, H, W)``."""

    noise_scale = 1.0
    channels = 3

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return "the whole image"


def make_view(name: str) -> nn.Module:
    """A view by name: ``"colorblind"``, ``"colorblind_pool2"``, ``"colorblind_pool4"``, ``"identity"``."""
    if name == "colorblind":
        return ColorBlind()
    if name == "identity":
        return Identity()
    if name.startswith("colorblind_pool") and name[len("colorblind_pool"):].isdigit():
        return ColorBlindPooled(int(name[len("colorblind_pool"):]))
    raise ComposerError(f"unknown view '{name}'; known: colorblind, colorblind_poolK (K = 2, 4, ...), identity")
