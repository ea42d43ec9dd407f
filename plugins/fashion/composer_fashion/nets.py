"""Noise-conditional networks of the Fashion-MNIST experts (``x: (B, 1, 28, 28)`` in ``[0, 1]``).

- ``DenoisingUNet`` (registered network ``fashion_unet``): the prior's energy in denoising form,

      E(x, sigma) = || x - D(x, sigma) ||^2 / (2 sigma^2),
      D(x) = c_skip x + c_out F(c_in x, sigma),  c_in = 1/sqrt(sigma^2 + sd^2), c_skip = sd^2/(sigma^2 + sd^2),
      c_out = sigma sd / sqrt(sigma^2 + sd^2)          (EDM preconditioning, Karras et al. 2022)

  with ``F`` a small U-Net (28 -> 14 -> 7) whose convolutions are modulated (FiLM) by an embedding of
  ``log sigma``; ``-grad_x E`` approximates the score of the noised data, and ``composer train`` with
  ``objective = "dsm"`` fits it.
- ``NoisyClassifier`` (``fashion_posterior``): ``E(x, c, sigma) = -log p_sigma(c | x)``, a FiLM CNN whose
  input is scaled by ``c_in``, trained with ``objective = "discriminative"`` on images noised along the
  same ladder. ``energies_all(x, sigma) -> (B, 10)``.

Both are ``net(x, cond=None, sigma=None) -> (B,)`` (``sigma``: float or ``(B,)``; ``None``: ``infer_sigma``)
and carry ``.config`` so a checkpoint rebuilds them without code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

IMAGE_SHAPE = (1, 28, 28)


def noise_levels(sigma: Any, x: Tensor, default: float) -> Tensor:
    """``sigma`` (``None``: ``default``; a float, 0-d or ``(B,)`` tensor) as a ``(B,)`` tensor like ``x``."""
    sigma = default if sigma is None else sigma
    if isinstance(sigma, Tensor) and sigma.dim() == 1:
        return sigma.to(device=x.device, dtype=x.dtype)
    return torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])


def _check(event_shape: list[int] | None, noise_conditional: bool) -> None:
    if event_shape is not None and tuple(event_shape) != IMAGE_SHAPE:
        raise ValueError(f"fashion networks take images of shape (1, 28, 28), got {tuple(event_shape)}")
    if not noise_conditional:
        raise ValueError('fashion networks are noise-conditional: train them with objective "dsm" or "discriminative"')


class SigmaEmbedding(nn.Module):
    """Fourier features of ``log sigma`` through a small MLP: ``(B,) -> (B, dim)``."""

    def __init__(self, dim: int, frequencies: int = 8):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(16.0), frequencies)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * frequencies, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, sigma: Tensor) -> Tensor:
        t = (sigma.log() / 4.0)[:, None] * self.freqs
        return self.mlp(torch.cat([t.sin(), t.cos()], dim=1))


class FiLMConv(nn.Module):
    """``silu(conv(h) * (1 + gain(emb)) + bias(emb))``; the modulation starts at the identity."""

    def __init__(self, c_in: int, c_out: int, dim: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.film = nn.Linear(dim, 2 * c_out)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: Tensor, emb: Tensor, skip: Tensor | None = None) -> Tensor:
        h = self.conv(h)
        if skip is not None:
            h = h + skip
        gain, bias = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        return nn.functional.silu(h * (1 + gain) + bias)


class DenoisingUNet(nn.Module):
    """The prior: denoising energy of a U-Net (see the module docstring).

    Args:
        widths: channels per level (three levels: 28, 14, 7 pixels).
        dim: width of the noise embedding.
        sigma_data: data scale used for preconditioning.
        infer_sigma: noise level when ``sigma`` is not given.
        num_classes, event_shape, noise_conditional: filled in by ``composer train`` (must be 0, ``[1, 28, 28]``, true).
    """

    noise_conditional = True

    def __init__(self, widths: list[int] | None = None, dim: int = 64, sigma_data: float = 0.4,
                 infer_sigma: float = 0.05, num_classes: int = 0, event_shape: list[int] | None = None,
                 noise_conditional: bool = True):
        super().__init__()
        _check(event_shape, noise_conditional)
        if int(num_classes) != 0:
            raise ValueError("fashion_unet is the unconditional prior: leave [data] labels unset")
        widths = [int(w) for w in (widths or [16, 32, 64])]
        if len(widths) != 3:
            raise ValueError(f"fashion_unet needs three widths (28, 14, 7 pixels), got {widths}")
        self.num_classes, self.sigma_data, self.infer_sigma = 0, float(sigma_data), float(infer_sigma)
        self.embed = SigmaEmbedding(dim)
        w0, w1, w2 = widths
        self.down = nn.ModuleList([FiLMConv(1, w0, dim), FiLMConv(w0, w0, dim), FiLMConv(w0, w1, dim, 2),
                                   FiLMConv(w1, w1, dim), FiLMConv(w1, w2, dim, 2), FiLMConv(w2, w2, dim)])
        self.up = nn.ModuleList([FiLMConv(w2, w1, dim), FiLMConv(w1, w1, dim), FiLMConv(w1, w0, dim),
                                 FiLMConv(w0, w0, dim)])
        self.out = nn.Conv2d(w0, 1, 3, padding=1)
        self.config = {"type": "fashion_unet", "widths": widths, "dim": int(dim), "sigma_data": self.sigma_data,
                       "infer_sigma": self.infer_sigma}

    def body(self, h: Tensor, emb: Tensor) -> Tensor:
        """``F``: ``(B, 1, 28, 28) -> (B, 1, 28, 28)``."""
        d = self.down
        h0 = d[1](d[0](h, emb), emb)
        h1 = d[3](d[2](h0, emb), emb)
        h2 = d[5](d[4](h1, emb), emb)
        u = nn.functional.interpolate(h2, scale_factor=2.0, mode="nearest")
        u = self.up[1](self.up[0](u, emb, skip=h1), emb)
        u = nn.functional.interpolate(u, scale_factor=2.0, mode="nearest")
        u = self.up[3](self.up[2](u, emb, skip=h0), emb)
        return self.out(u)

    def denoise(self, x: Tensor, sigma: Any = None) -> Tensor:
        """``D(x, sigma)``, the denoised image: ``(B, 1, 28, 28)``."""
        sigma = noise_levels(sigma, x, self.infer_sigma)
        s = sigma[:, None, None, None]
        sd2 = self.sigma_data**2
        c_in, c_skip = (s.square() + sd2).rsqrt(), sd2 / (s.square() + sd2)
        return c_skip * x + s * self.sigma_data * c_in * self.body(c_in * x, self.embed(sigma))

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: Any = None) -> Tensor:
        """``E(x, sigma)``: ``(B,)`` for ``x: (B, 1, 28, 28)``."""
        sigma = noise_levels(sigma, x, self.infer_sigma)
        residual = (x - self.denoise(x, sigma)) / sigma[:, None, None, None]
        return 0.5 * residual.square().flatten(1).sum(1)


class NoisyClassifier(nn.Module):
    """``-log p_sigma(c | x)``: FiLM CNN (strides 1, 2, 2), flattened 7x7 features, MLP head.

    Args:
        num_classes: values of the family (10 for ``fashion.class``).
        widths: channels of the three convolution levels.
        hidden: width of the head.
        dim, sigma_data, infer_sigma, event_shape, noise_conditional: as in ``DenoisingUNet``.
    """

    noise_conditional = True

    def __init__(self, num_classes: int = 0, widths: list[int] | None = None, hidden: int = 128, dim: int = 64,
                 sigma_data: float = 0.4, infer_sigma: float = 0.01, event_shape: list[int] | None = None,
                 noise_conditional: bool = True):
        super().__init__()
        _check(event_shape, noise_conditional)
        if int(num_classes) < 2:
            raise ValueError("fashion_posterior needs a family of at least two values (set [data] labels)")
        widths = [int(w) for w in (widths or [32, 64, 64])]
        self.num_classes, self.sigma_data, self.infer_sigma = int(num_classes), float(sigma_data), float(infer_sigma)
        self.embed = SigmaEmbedding(dim)
        chans = [1, *widths]
        self.convs = nn.ModuleList(FiLMConv(chans[i], chans[i + 1], dim, 1 if i == 0 else 2)
                                   for i in range(len(widths)))
        side = 28 // 2 ** (len(widths) - 1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, int(hidden)), nn.SiLU(),
                                  nn.Linear(int(hidden), self.num_classes))
        self.config = {"type": "fashion_posterior", "num_classes": self.num_classes, "widths": widths,
                       "hidden": int(hidden), "dim": int(dim), "sigma_data": self.sigma_data,
                       "infer_sigma": self.infer_sigma}

    def logits(self, x: Tensor, sigma: Any = None) -> Tensor:
        """``(B, K)`` logits of ``x: (B, 1, 28, 28)`` at noise ``sigma``."""
        sigma = noise_levels(sigma, x, self.infer_sigma)
        h = x * (sigma.square() + self.sigma_data**2).rsqrt()[:, None, None, None]
        emb = self.embed(sigma)
        for conv in self.convs:
            h = conv(h, emb)
        return self.head(h)

    def energies_all(self, x: Tensor, sigma: Any = None) -> Tensor:
        """``-log p_sigma(c | x)`` of every value: ``(B, 1, 28, 28) -> (B, K)``."""
        return -torch.log_softmax(self.logits(x, sigma), dim=1)

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: Any = None) -> Tensor:
        """``-log p_sigma(cond | x)``: ``(B,)``."""
        if cond is None:
            raise ValueError("fashion_posterior is conditional: pass cond, a (B,) tensor of value indices")
        return self.energies_all(x, sigma).gather(1, cond.long().view(-1, 1)).squeeze(1)


NETWORKS: dict[str, type[nn.Module]] = {"fashion_unet": DenoisingUNet, "fashion_posterior": NoisyClassifier}
