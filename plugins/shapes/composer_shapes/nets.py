"""Noise-conditional energy networks of the shapes concept families (denoising-energy form).

Every network is ``net(x, cond=None, sigma=None) -> (B,)`` with ``x: (B, 3, 32, 32)``, ``cond: (B,)``
value indices and ``sigma`` a float or ``(B,)`` tensor. The energy is the denoising residual of a
preconditioned denoiser ``D`` (Karras et al. 2022, "EDM") on what the network is allowed to see:

    E(x, sigma, c) = || v - D(v, sigma, c) ||^2 / (2 s^2),    v = view(x),  s = sigma * view.noise_scale
    D(v) = c_skip v + c_out F(c_in v, sigma, c),   c_in = 1/sqrt(s^2 + sd^2), c_skip = sd^2/(s^2 + sd^2),
    c_out = s sd / sqrt(s^2 + sd^2)

so ``-grad E`` approximates the score of the noised data and denoising score matching with ``sigma^2``
weighting (``0.5 || sigma grad_x E - z ||^2``) sees unit-scale targets at every noise level.

``ViewEnergyNet`` (registered network ``shapes_view``): ``F`` is a small U-Net with FiLM conditioning
on a view of the image (``composer_shapes.views``); the shipped prior's layout part uses it on the
colour-blind view.

``RayChromaNet`` (``shapes_ray_chroma``, the shipped colour family) is the exception to the residual form:
``E(x, c) = || chroma(x) - a(x, sigma) k_c ||^2 / 2 sigma^2``, a ray per colour (see its docstring).
``ChromaEnergyNet`` and ``PixelEnergyNet`` are unshipped alternatives (plugin README, lab notes).

All expose ``.config`` (JSON-able constructor arguments) so a checkpoint rebuilds them without code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from composer_shapes.views import make_view


def noise_levels(sigma: Any, x: Tensor, default: float) -> Tensor:
    """``sigma`` (``None``: ``default``; a float, a 0-d or a ``(B,)`` tensor) as a ``(B,)`` tensor like ``x``."""
    sigma = default if sigma is None else sigma
    if isinstance(sigma, Tensor) and sigma.dim() == 1:
        return sigma.to(device=x.device, dtype=x.dtype)
    return torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])


def pick(energies: Tensor, cond: Tensor | None) -> Tensor:
    """Column ``cond[i]`` of row ``i``: ``(B, K), (B,) -> (B,)`` (a conditional network's ``forward``)."""
    if cond is None:
        raise ValueError("this network is conditional: pass cond, a (B,) tensor of value indices")
    return energies.gather(1, cond.long().view(-1, 1)).squeeze(1)


class Embedding(nn.Module):
    """Embedding of ``(log sigma, value)``: ``(B,), (B,) -> (B, dim)``."""

    def __init__(self, dim: int, num_classes: int, frequencies: int = 8):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(16.0), frequencies)), persistent=False)
        self.sigma_mlp = nn.Sequential(nn.Linear(2 * frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.values = nn.Embedding(num_classes, dim) if num_classes > 0 else None

    def forward(self, sigma: Tensor, cond: Tensor | None) -> Tensor:
        t = (sigma.log() / 4.0)[:, None] * self.freqs
        emb = self.sigma_mlp(torch.cat([t.sin(), t.cos()], dim=1))
        if self.values is not None:
            if cond is None:
                raise ValueError("this network is conditional: pass cond, a (B,) tensor of value indices")
            emb = emb + self.values(cond.long())
        return nn.functional.silu(emb)


class FiLM(nn.Module):
    """``h * (1 + gain(emb)) + bias(emb)`` per channel."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        gain, bias = self.proj(emb)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(bias, h, 1 + gain)  # one pass over h (a fifth less time for the U-Net on CPU)


class Block(nn.Module):
    """Two convolutions (the first optionally strided), each followed by FiLM and SiLU."""

    def __init__(self, c_in: int, c_out: int, dim: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, padding=pad)
        self.film1, self.film2 = FiLM(dim, c_out), FiLM(dim, c_out)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor, skip: Tensor | None = None) -> Tensor:
        h = self.conv1(h)
        if skip is not None:
            h = h + skip
        h = self.act(self.film1(h, emb))
        return self.act(self.film2(self.conv2(h), emb))


class UNet(nn.Module):
    """A small U-Net ``(B, c, H, W) -> (B, c, H, W)``: one ``Block`` per width, stride 2 between levels."""

    def __init__(self, channels: int, widths: list[int], dim: int):
        super().__init__()
        self.down = nn.ModuleList(
            Block(channels if i == 0 else widths[i - 1], w, dim, stride=1 if i == 0 else 2)
            for i, w in enumerate(widths)
        )
        self.up = nn.ModuleList(Block(widths[i + 1], widths[i], dim) for i in reversed(range(len(widths) - 1)))
        self.out = nn.Conv2d(widths[0], channels, 3, padding=1)
        # channels-last convolutions: ~30% less time on CPU (oneDNN) for these narrow layers, same values to
        # float rounding; loading weights and .to(device) keep the layout
        self.to(memory_format=torch.channels_last)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        h = h.contiguous(memory_format=torch.channels_last)
        skips = []
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        skips.pop()
        for block in self.up:
            h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(h, emb, skip=skips.pop())
        return self.out(h)


class DenoisingEnergy(nn.Module):
    """Shared part: preconditioning and the residual energy. Subclasses build ``self.view`` and ``self.body``."""

    noise_conditional = True

    def __init__(self, num_classes: int, sigma_data: float, infer_sigma: float, dim: int,
                 event_shape: list[int] | None = None, noise_conditional: bool = True):
        super().__init__()
        if event_shape is not None and tuple(event_shape) != (3, 32, 32):
            raise ValueError(f"shapes networks take images of shape (3, 32, 32), got {tuple(event_shape)}")
        if not noise_conditional:
            raise ValueError("shapes networks are noise-conditional: train them with objective = \"dsm\"")
        self.num_classes, self.sigma_data, self.infer_sigma = int(num_classes), float(sigma_data), float(infer_sigma)
        self.embed = Embedding(dim, self.num_classes)
        self.config: dict[str, Any] = {}

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: float | Tensor | None = None) -> Tensor:
        """Energies ``(B,)`` of ``x: (B, 3, 32, 32)`` for values ``cond: (B,)`` at noise ``sigma``
        (``None``: ``infer_sigma``, the level used for concept inference)."""
        sigma = noise_levels(sigma, x, self.infer_sigma)
        v = self.view(x)
        s = (sigma * self.view.noise_scale)[:, None, None, None]
        sd2 = self.sigma_data**2
        c_in, c_skip = (s.square() + sd2).rsqrt(), sd2 / (s.square() + sd2)
        c_out = s * self.sigma_data * c_in
        emb = self.embed(sigma * self.view.noise_scale, cond)
        denoised = c_skip * v + c_out * self.body(c_in * v, emb)
        return 0.5 * ((v - denoised) / s).square().flatten(1).sum(1)


class ViewEnergyNet(DenoisingEnergy):
    """Denoising energy of a U-Net on ``view(x)``.

    Args:
        view: name of the view (``composer_shapes.views.make_view``): ``colorblind``, ``colorblind_pool4``...
        num_classes: values of the family (0: unconditional).
        widths: channels per U-Net level (the view's side must be divisible by ``2^(len(widths)-1)``).
        dim: width of the (noise, value) embedding.
        sigma_data: data scale of the view used for preconditioning.
        infer_sigma: noise level used when ``sigma`` is not given (concept inference).
        event_shape, noise_conditional: filled in by ``composer train``; must be ``[3, 32, 32]`` and true.
    """

    def __init__(self, view: str = "colorblind", num_classes: int = 0, widths: list[int] | None = None,
                 dim: int = 64, sigma_data: float = 0.5, infer_sigma: float = 0.1,
                 event_shape: list[int] | None = None, noise_conditional: bool = True):
        super().__init__(num_classes, sigma_data, infer_sigma, dim, event_shape, noise_conditional)
        widths = [int(w) for w in (widths or [16, 32, 64])]
        self.view = make_view(view)
        self.body = UNet(self.view.channels, widths, dim)
        self.config = {"type": "shapes_view", "view": view, "num_classes": self.num_classes, "widths": widths,
                       "dim": dim,
                       "sigma_data": self.sigma_data, "infer_sigma": self.infer_sigma}


class PixelBody(nn.Module):
    """Per-pixel FiLM MLP ``(B, 3, H, W) -> (B, 3, H, W)`` (1x1 convolutions: blind to layout).

    With ``kernel`` > 1 the convolutions see a small neighbourhood (``depth * (kernel - 1) + 1`` pixels
    wide): enough to keep an object's colour coherent from pixel to pixel, too little to see its shape.

    With ``context``, the hidden layers after the first also receive the mean over all pixels of the
    first layer's features (a bag-of-pixels summary: how much of each colour the image holds), so the
    energy is exchangeable over pixels rather than a product of independent per-pixel terms: it can
    accept one object on a black canvas without paying a per-pixel "background is likelier" price.
    """

    def __init__(self, width: int, depth: int, dim: int, context: bool = True, kernel: int = 1):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else width, width, kernel, padding=kernel // 2)
                                   for i in range(depth))
        self.films = nn.ModuleList(FiLM(dim, width) for _ in range(depth))
        self.context = nn.Linear(width, 2 * width * (depth - 1)) if context and depth > 1 else None
        self.out = nn.Conv2d(width, 3, 1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        ctx: list[Tensor] = []
        for i, (conv, film) in enumerate(zip(self.convs, self.films)):
            h = film(conv(h), emb)
            if i > 0 and ctx:
                gain, bias = ctx[i - 1]
                h = h * (1 + gain) + bias
            h = nn.functional.silu(h)
            if i == 0 and self.context is not None:
                summary = self.context(h.mean(dim=(2, 3)))[:, :, None, None]
                ctx = [tuple(c.chunk(2, dim=1)) for c in summary.chunk(len(self.convs) - 1, dim=1)]
        return self.out(h)


class PixelEnergyNet(DenoisingEnergy):
    """Denoising energy of a per-pixel network on the RGB image: a sum of per-pixel energies.

    Args:
        num_classes: values of the family.
        width, depth: hidden channels and number of hidden 1x1 layers.
        context: give the hidden layers the mean over pixels of the first layer's features.
        kernel: size of the convolutions (odd; 1: per pixel).
        dim, sigma_data, infer_sigma: as in ``ViewEnergyNet``.
    """

    def __init__(self, num_classes: int = 0, width: int = 64, depth: int = 3, dim: int = 64, context: bool = True,
                 sigma_data: float = 0.5, infer_sigma: float = 0.1, event_shape: list[int] | None = None,
                 noise_conditional: bool = True, kernel: int = 1):
        super().__init__(num_classes, sigma_data, infer_sigma, dim, event_shape, noise_conditional)
        if int(kernel) < 1 or int(kernel) % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {kernel}")
        self.view = make_view("identity")
        self.body = PixelBody(int(width), int(depth), dim, bool(context), int(kernel))
        self.config = {"type": "shapes_pixel", "num_classes": self.num_classes, "width": int(width),
                       "depth": int(depth), "dim": dim, "context": bool(context), "kernel": int(kernel),
                       "sigma_data": self.sigma_data, "infer_sigma": self.infer_sigma}


def luma(x: Tensor) -> Tensor:
    """The component of each pixel along ``(1, 1, 1) / sqrt(3)``, as a ``(B, 3, H, W)`` tensor."""
    return x.mean(dim=1, keepdim=True).expand_as(x)


class ChromaEnergyNet(PixelEnergyNet):
    """A per-pixel denoising energy of the *chroma* of the image given its luma: ``-log p(chroma | luma, c)``.

    Each pixel splits into luma (its component along ``(1, 1, 1)``, exactly what the colour-blind view
    sees) and chroma (the orthogonal rest). The network sees the whole pixel, but the residual is
    projected onto the chroma plane and the luma input is detached, so ``grad_x E`` lies in the chroma
    plane: this expert never pushes the layout, and a product with layout experts on the colour-blind
    view factorises as ``p(luma | shape, ...) p(chroma | luma, colour)`` with no prior counted twice.
    The arguments are those of ``PixelEnergyNet``.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.config["type"] = "shapes_chroma"

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: float | Tensor | None = None) -> Tensor:
        sigma = noise_levels(sigma, x, self.infer_sigma)
        lum = luma(x)
        seen = x - lum + lum.detach()
        s = sigma[:, None, None, None]
        sd2 = self.sigma_data**2
        c_in, c_skip = (s.square() + sd2).rsqrt(), sd2 / (s.square() + sd2)
        c_out = s * self.sigma_data * c_in
        denoised = c_skip * seen + c_out * self.body(c_in * seen, self.embed(sigma, cond))
        residual = seen - denoised
        residual = residual - luma(residual)
        return 0.5 * (residual / s).square().flatten(1).sum(1)


class RayChromaNet(nn.Module):
    """Class-conditional energy of each pixel's chroma given its luma: ``-log p_sigma(chroma | luma, c)``.

    A world pixel is ``coverage * brightness * rgb_c``, so its chroma is its luma times a fixed vector of
    its colour: ``chroma = m * k_c`` (``m``: mean over channels; red ``k = (2, -1, -1)``). The denoised
    chroma of a noisy pixel therefore lies on that ray at every noise level, and the network is that
    ray: ``D_c(x) = a(x, sigma) k_c`` with ``k_c`` a learned vector in the chroma plane per value and
    ``a`` a learned function of the luma (a small convolutional net on the luma channel only, with
    EDM's skip connection on the luma, shared by all values; only the product ``a k_c`` is determined,
    not how its scale splits between the two: the shipped rays are ~0.1 of the world's length).
    The energy is the chroma residual, quadratic everywhere:

        E(x, c, sigma) = || chroma(x) - a(x, sigma) k_c ||^2 / (2 sigma^2)

    so a pixel off its colour's ray is pulled back from any distance (there is no region the training
    never reached), and the chroma of a black pixel (learned ``a`` ~ 0) is pulled to 0. The luma is
    detached: the gradient lies in the chroma plane, so the expert never moves the layout. ``energies_all`` gives every
    value in one pass (``a`` does not depend on the value).

    Args:
        num_classes: values of the family (the colours).
        width, depth, kernel: channels, number and size of the convolutions of the luma net ``a``.
        dim: width of the noise embedding; sigma_data: data scale of the luma (preconditioning).
        infer_sigma: noise level used when ``sigma`` is not given (concept inference).
        event_shape, noise_conditional: filled in by ``composer train``.
    """

    noise_conditional = True

    def __init__(self, num_classes: int = 0, width: int = 16, depth: int = 2, kernel: int = 3, dim: int = 32,
                 sigma_data: float = 0.2, infer_sigma: float = 0.05, event_shape: list[int] | None = None,
                 noise_conditional: bool = True):
        super().__init__()
        if event_shape is not None and tuple(event_shape) != (3, 32, 32):
            raise ValueError(f"shapes networks take images of shape (3, 32, 32), got {tuple(event_shape)}")
        if int(num_classes) < 1:
            raise ValueError("shapes_ray_chroma is conditional: set [data] labels and values (the colours)")
        if int(kernel) < 1 or int(kernel) % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {kernel}")
        self.num_classes, self.sigma_data, self.infer_sigma = int(num_classes), float(sigma_data), float(infer_sigma)
        self.rays = nn.Parameter(0.1 * torch.randn(self.num_classes, 3, generator=torch.Generator().manual_seed(0)))
        self.embed = Embedding(dim, 0)
        chans = [1] + [int(width)] * int(depth)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], int(kernel), padding=int(kernel) // 2)
                                   for i in range(int(depth)))
        self.films = nn.ModuleList(FiLM(dim, int(width)) for _ in range(int(depth)))
        self.out = nn.Conv2d(int(width), 1, 1)
        self.config = {"type": "shapes_ray_chroma", "num_classes": self.num_classes, "width": int(width),
                       "depth": int(depth), "kernel": int(kernel), "dim": dim, "sigma_data": self.sigma_data,
                       "infer_sigma": self.infer_sigma}

    def chroma_rays(self) -> Tensor:
        """The learned ``k_c`` projected onto the chroma plane: ``(K, 3)``."""
        return self.rays - self.rays.mean(dim=1, keepdim=True)

    def ray_coefficients(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """``a(x, sigma)``, how far along its colour's ray each pixel's chroma lies: ``(B, 3, H, W) -> (B, H, W)``.

        It reads the (detached) luma only and does not depend on the value: the values of the family differ
        only by their rays, so the colour expert cannot learn a correlation of colour with layout.
        """
        sigma = noise_levels(sigma, x, self.infer_sigma)
        m = x.mean(dim=1, keepdim=True).detach()
        s = sigma[:, None, None, None]
        sd2 = self.sigma_data**2
        c_in, c_skip = (s.square() + sd2).rsqrt(), sd2 / (s.square() + sd2)
        c_out = s * self.sigma_data * c_in
        h, emb = c_in * m, self.embed(sigma, None)
        for conv, film in zip(self.convs, self.films):
            h = nn.functional.silu(film(conv(h), emb))
        return (c_skip * m + c_out * self.out(h))[:, 0]

    def energies_all(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """``E(x, c, sigma)`` of every value: ``(B, 3, 32, 32) -> (B, K)``."""
        sigma = noise_levels(sigma, x, self.infer_sigma)
        a = self.ray_coefficients(x, sigma).flatten(1)  # (B, HW)
        ch = (x - x.mean(dim=1, keepdim=True)).flatten(2)  # (B, 3, HW), the chroma
        k = self.chroma_rays()  # (K, 3)
        residual = ch[:, None] - a[:, None, None] * k[None, :, :, None]  # (B, K, 3, HW)
        return 0.5 * residual.square().sum(dim=(2, 3)) / sigma[:, None].square()

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: float | Tensor | None = None) -> Tensor:
        """``E(x, cond, sigma)``: ``(B,)``."""
        return pick(self.energies_all(x, sigma), cond)


NETWORKS: dict[str, type[nn.Module]] = {"shapes_view": ViewEnergyNet, "shapes_pixel": PixelEnergyNet,
                                       "shapes_chroma": ChromaEnergyNet, "shapes_ray_chroma": RayChromaNet}


def build(config: dict[str, Any]) -> nn.Module:
    """Rebuild a network (denoising energy or posterior) from ``{"type": name, **config}``."""
    from composer_shapes.posteriors import POSTERIORS

    kwargs = dict(config)
    return {**NETWORKS, **POSTERIORS}[kwargs.pop("type")](**kwargs)
