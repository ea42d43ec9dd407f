"""Noise-conditional posterior networks of the shapes concept families: ``E(x, c, sigma) = -log p_sigma(c | x)``.

A concept value's expert is Bayes' rule in energy form, ``E(x | c) = E_prior(x) - log p(c | x)`` (up to a
constant): the shared prior (``composer_shapes.experts.prior``) models the images, and each family's
network only says how likely each of its values is given a (noised) image. Its energy is the negative
log-posterior, normalised over the family's values, so a product of values of *different* families is
``p(x) p(c1 | x) p(c2 | x)``: the prior is counted once, and since the attributes are functions of the
image they are independent given it, which makes the product the exact conditional ``p(x | c1, c2)`` at
noise level 0. Two kinds: networks trained with ``composer train`` and ``objective = "discriminative"``
(cross-entropy over the values on images noised with a random ``sigma`` of the sampling ladder), and
``BayesPosterior``, Bayes' rule over a DSM-trained class-conditional network (the colour family).

Each network sees only what its concept needs (invariance by scope), and so pushes only that:

- ``ViewPosterior`` (registered ``shapes_view_posterior``): a small CNN on a view (``composer_shapes.views``):
  the colour-blind view for shape, size and position, whose gradient lies along ``(1, 1, 1)``: it moves
  the luma of pixels, never their colour. (The monolithic baseline uses it on the whole image.)
- ``BayesPosterior`` (the colour family): Bayes' rule over class-conditional energies of each pixel's
  chroma given its luma (``composer_shapes.nets.RayChromaNet``, trained with DSM), whose mixture over the
  colours (``ValueMixture``) is the colour part of the prior. It cannot see layout, and its gradient lies
  in the chroma plane, so it never moves the layout.
- ``ColorPosterior`` (``shapes_color_posterior``, not shipped): per-pixel 1x1 convolutions on the chroma,
  pooled over all pixels (mean and max), trained discriminatively. Measured worse than ``BayesPosterior``:
  once it is confident it stops pushing, and colours stayed washed out (plugin README).

Networks are ``net(x, cond, sigma=None) -> (B,)`` for ``x: (B, 3, 32, 32)``, ``cond: (B,)`` value indices;
``energies_all(x, sigma) -> (B, K)`` gives every value at once. ``.config`` rebuilds the trained networks
without code; ``BayesPosterior`` and ``ValueMixture`` are wrappers built around a loaded network.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from composer.energy import stacked_values
from composer.sampling.memo import shared
from composer_shapes.nets import Embedding, FiLM, luma, noise_levels, pick
from composer_shapes.views import make_view


class Posterior(nn.Module):
    """Shared part: input scaling ``1 / sqrt(sigma^2 + sigma_data^2)``, the normalised energy."""

    noise_conditional = True

    def __init__(self, num_classes: int, sigma_data: float, infer_sigma: float, dim: int,
                 event_shape: list[int] | None, noise_conditional: bool):
        super().__init__()
        if event_shape is not None and tuple(event_shape) != (3, 32, 32):
            raise ValueError(f"shapes networks take images of shape (3, 32, 32), got {tuple(event_shape)}")
        if num_classes < 2:
            raise ValueError("a posterior network needs a concept family of at least two values (set [data] labels)")
        self.num_classes, self.sigma_data, self.infer_sigma = int(num_classes), float(sigma_data), float(infer_sigma)
        self.embed = Embedding(dim, 0)
        self.config: dict[str, Any] = {}

    def logits(self, x: Tensor, sigma: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def energies_all(self, x: Tensor, sigma: Any = None) -> Tensor:
        """``-log p_sigma(c | x)`` of every value ``c``: ``(B, 3, 32, 32) -> (B, K)``."""
        return -torch.log_softmax(self.logits(x, noise_levels(sigma, x, self.infer_sigma)), dim=1)

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: Any = None) -> Tensor:
        """``-log p_sigma(cond | x)``: ``(B,)`` (``sigma=None``: ``infer_sigma``, for concept inference)."""
        return pick(self.energies_all(x, sigma), cond)


class ViewPosterior(Posterior):
    """CNN on a view of the image: FiLM blocks (stride 2 after the first), flattened, MLP head.

    Args:
        num_classes: values of the family.
        widths: channels of the three convolution levels.
        hidden: width of the MLP head.
        dim: width of the noise embedding.
        sigma_data, infer_sigma: data scale of the view; the noise level of concept inference.
        event_shape, noise_conditional: filled in by ``composer train``.
        view: ``colorblind`` (default) or ``identity`` (the whole image).
    """

    def __init__(self, num_classes: int = 0, widths: list[int] | None = None, hidden: int = 128, dim: int = 64,
                 sigma_data: float = 0.5, infer_sigma: float = 0.01, event_shape: list[int] | None = None,
                 noise_conditional: bool = True, view: str = "colorblind"):
        super().__init__(num_classes, sigma_data, infer_sigma, dim, event_shape, noise_conditional)
        widths = [int(w) for w in (widths or [16, 32, 32, 32])]
        self.view = make_view(view)
        chans = [self.view.channels, *widths]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1)
                                   for i in range(len(widths)))
        self.films = nn.ModuleList(FiLM(dim, w) for w in widths)
        side = 32 // 2 ** (len(widths) - 1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, hidden), nn.SiLU(),
                                  nn.Linear(hidden, self.num_classes))
        self.config = {"type": "shapes_view_posterior", "num_classes": self.num_classes, "widths": widths,
                       "hidden": int(hidden), "dim": dim, "sigma_data": self.sigma_data,
                       "infer_sigma": self.infer_sigma, "view": view}
        self.to(memory_format=torch.channels_last)  # ~30% faster convolutions on CPU, same values (see nets.UNet)

    def logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        v = self.view(x)
        s = sigma * self.view.noise_scale
        h = v * (s.square() + self.sigma_data**2).rsqrt()[:, None, None, None]
        h = h.contiguous(memory_format=torch.channels_last)
        emb = self.embed(s, None)
        for conv, film in zip(self.convs, self.films):
            h = nn.functional.silu(film(conv(h), emb))
        return self.head(h)


class ColorPosterior(Posterior):
    """Per-pixel FiLM MLP on each pixel's chroma given its luma, mean- and max-pooled over pixels, MLP head.

    Args:
        num_classes: values of the family.
        width, depth: hidden channels and number of 1x1 layers.
        dim, sigma_data, infer_sigma, event_shape, noise_conditional: as in ``ViewPosterior``.
    """

    def __init__(self, num_classes: int = 0, width: int = 32, depth: int = 3, dim: int = 64,
                 sigma_data: float = 0.5, infer_sigma: float = 0.01, event_shape: list[int] | None = None,
                 noise_conditional: bool = True):
        super().__init__(num_classes, sigma_data, infer_sigma, dim, event_shape, noise_conditional)
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else int(width), int(width), 1) for i in range(int(depth)))
        self.films = nn.ModuleList(FiLM(dim, int(width)) for _ in range(int(depth)))
        self.head = nn.Sequential(nn.Linear(2 * int(width), int(width)), nn.SiLU(),
                                  nn.Linear(int(width), self.num_classes))
        self.config = {"type": "shapes_color_posterior", "num_classes": self.num_classes, "width": int(width),
                       "depth": int(depth), "dim": dim, "sigma_data": self.sigma_data, "infer_sigma": self.infer_sigma}

    def logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        lum = luma(x)
        seen = x - lum + lum.detach()  # the gradient stays in the chroma plane
        h = seen * (sigma.square() + self.sigma_data**2).rsqrt()[:, None, None, None]
        emb = self.embed(sigma, None)
        for conv, film in zip(self.convs, self.films):
            h = nn.functional.silu(film(conv(h), emb))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


def all_values(net: nn.Module, x: Tensor, sigma: Any = None) -> Tensor:
    """``E(x, c, sigma)`` of every value ``c`` of a class-conditional network: ``(B, 3, 32, 32) -> (B, K)``.

    Its ``energies_all`` when it has one, else one call on the ``K * B`` stacked rows. Within one evaluation
    of a composition the call is made once (``composer.sampling.memo``): the colour family's likelihood
    (``BayesPosterior``) and the prior's colour part (``ValueMixture``) share it.
    """
    return shared(("shapes.all_values", net, x, sigma), lambda: _all_values(net, x, sigma))


def _all_values(net: nn.Module, x: Tensor, sigma: Any) -> Tensor:
    if callable(getattr(net, "energies_all", None)):
        return net.energies_all(x, sigma)
    return stacked_values(net, x, int(net.num_classes), noise_levels(sigma, x, float(net.infer_sigma)))


class BayesPosterior(nn.Module):
    """``-log p_sigma(c | x)`` from class-conditional energies by Bayes' rule (uniform prior over values).

    Wraps a class-conditional network giving ``E(x | c) = -log p_sigma(x | c)`` up to a constant shared by
    the values (``composer_shapes.nets.RayChromaNet``; any DSM-trained one, see ``all_values``): the
    posterior is the softmax of ``-E`` over the values, and ``ValueMixture`` of the same network is the
    matching prior, so ``prior - log p(c | x) = E(x | c)`` exactly (up to a constant).
    """

    noise_conditional = True

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.num_classes, self.infer_sigma = int(net.num_classes), float(net.infer_sigma)

    def energies_all(self, x: Tensor, sigma: Any = None) -> Tensor:
        """``-log p_sigma(c | x)`` of every value: ``(B, 3, 32, 32) -> (B, K)``."""
        return -torch.log_softmax(-all_values(self.net, x, sigma), dim=1)

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: Any = None) -> Tensor:
        """``-log p_sigma(cond | x)``: ``(B,)``."""
        return pick(self.energies_all(x, sigma), cond)


class ValueMixture(nn.Module):
    """The marginal of class-conditional energies: ``E(x) = -log (1/K) sum_c exp(-E(x | c))``: ``(B,)``.

    One image draws one value for all its pixels (the logsumexp is over whole-image energies), so an
    unconditional sample has one colour, not a patchwork.
    """

    noise_conditional = True
    num_classes = 0

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: Any = None) -> Tensor:
        e = all_values(self.net, x, sigma)
        return math.log(e.shape[1]) - torch.logsumexp(-e, dim=1)


POSTERIORS: dict[str, type[Posterior]] = {"shapes_view_posterior": ViewPosterior,
                                          "shapes_color_posterior": ColorPosterior}
