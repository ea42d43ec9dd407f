"""Observation experts: agreement with observed data, so inpainting and denoising are compositions.

``Observe(image, mask, noise)`` is the energy of a Gaussian observation of the masked entries,

    E(x, sigma) = || mask * (x - image) ||^2 / (2 (noise^2 + sigma^2))

where ``sigma`` is the sampler's noise level when annealing (0 otherwise): at level ``sigma`` the chains
are the data plus ``N(0, sigma^2)``, so their difference from an observation with noise ``noise`` has
variance ``noise^2 + sigma^2`` per observed entry. The expert is analytic, noise-conditional and has no
domain; ``a & observe(...)`` samples ``p(x | a) p(observation | x)``: completions of the masked image that
``a`` finds likely (``fashion.class=sneaker & composer.observe(image="shoe.png", mask="left")``).

In the composition language (registered as the built-in expert ``composer.observe``)::

    composer.observe(image="photo.png", mask="left", noise=0.05)
    composer.observe(image="test.npz:3", mask="box=4:20,4:20")    # row 3 of the npz's array x

Masks (``parse_mask``) name the OBSERVED entries: ``all``, ``left``, ``right``, ``top``, ``bottom`` (halves),
``box=R0:R1,C0:C1`` (rows R0..R1-1, columns C0..C1-1) and ``hole=R0:R1,C0:C1`` (everything but that box).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from composer.energy import Energy
from composer.errors import CompositionError
from composer.hookspecs import hookimpl

HALVES = ("all", "left", "right", "top", "bottom")


class ObservationError(CompositionError):
    """A bad observation: unreadable image, unknown mask, shapes that do not match."""


def parse_mask(spec: str | Tensor | np.ndarray, shape: tuple[int, ...]) -> Tensor:
    """The bool mask ``shape`` (``(C, H, W)`` or any ``(..., H, W)``) of observed entries named by ``spec``.

    >>> parse_mask("left", (1, 2, 4)).int().tolist()
    [[[1, 1, 0, 0], [1, 1, 0, 0]]]
    >>> parse_mask("hole=0:1,1:3", (1, 2, 4)).int().tolist()
    [[[1, 0, 0, 1], [1, 1, 1, 1]]]
    """
    if isinstance(spec, (Tensor, np.ndarray)):
        m = torch.as_tensor(spec).bool()
        try:
            return m.expand(shape).clone()
        except RuntimeError:
            raise ObservationError(f"mask of shape {tuple(m.shape)} does not fit images of shape {shape}") from None
    if len(shape) < 2:
        raise ObservationError(f"named masks need images (..., H, W), got shape {shape}")
    h, w = shape[-2], shape[-1]
    m = torch.zeros(shape, dtype=torch.bool)
    text = str(spec).strip().lower()
    if text == "all":
        m[...] = True
    elif text == "left":
        m[..., : w // 2] = True
    elif text == "right":
        m[..., w // 2:] = True
    elif text == "top":
        m[..., : h // 2, :] = True
    elif text == "bottom":
        m[..., h // 2:, :] = True
    else:
        hit = re.fullmatch(r"(box|hole)=(\d+):(\d+),(\d+):(\d+)", text.replace(" ", ""))
        if not hit:
            raise ObservationError(f"unknown mask '{spec}'; use {', '.join(HALVES)}, box=R0:R1,C0:C1 or "
                                   "hole=R0:R1,C0:C1 (rows and columns, end excluded)")
        r0, r1, c0, c1 = (int(v) for v in hit.groups()[1:])
        if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
            raise ObservationError(f"mask '{spec}' does not fit in {h}x{w} images")
        m[..., r0:r1, c0:c1] = True
        if hit.group(1) == "hole":
            m = ~m
    return m


def load_image(spec: str, channels: int | None = None) -> Tensor:
    """An image ``(C, H, W)`` in ``[0, 1]`` (``N`` images ``(N, C, H, W)`` for ``npz:i,j,...``) from a file spec.

    ``FILE.png`` (greyscale -> 1 channel, else RGB; ``channels`` forces 1 or 3), ``FILE.npz`` (the array
    ``x``, one image or row 0), ``FILE.npz:INDEX`` (row ``INDEX``), ``FILE.npz:I,J,K`` (those rows) and
    ``.npy`` likewise. ``uint8`` arrays are divided by 255.
    """
    path, _, index = str(spec).partition(":") if not Path(str(spec)).is_file() else (str(spec), "", "")
    p = Path(path)
    if not p.is_file():
        raise ObservationError(f"observed image not found: '{path}'")
    suffix = p.suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        if index:
            raise ObservationError(f"'{spec}': an index selects a row of an .npz/.npy file, not of a picture")
        from PIL import Image

        try:
            with Image.open(p) as im:
                mode = {1: "L", 3: "RGB"}.get(channels or 0, "L" if im.mode in ("L", "LA", "I", "1") else "RGB")
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
        except OSError as exc:
            raise ObservationError(f"cannot read '{path}': {exc}") from None
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    elif suffix in (".npz", ".npy"):
        try:
            if suffix == ".npy":
                arr = np.load(p, allow_pickle=False)
            else:
                with np.load(p, allow_pickle=False) as f:
                    if "x" not in f.files:
                        raise ObservationError(f"'{path}' has no array 'x' (found: {', '.join(f.files)})")
                    arr = f["x"]
        except (OSError, ValueError) as exc:
            raise ObservationError(f"cannot read '{path}': {exc}") from None
        if index:
            try:
                rows = [int(i) for i in index.split(",")]
            except ValueError:
                raise ObservationError(f"'{spec}': the index must be integers separated by commas") from None
            if any(not -arr.shape[0] <= r < arr.shape[0] for r in rows):
                raise ObservationError(f"'{spec}': index out of range for {arr.shape[0]} images")
            arr = arr[rows[0]] if len(rows) == 1 else arr[rows]
        elif arr.ndim == 4:
            arr = arr[0]
    else:
        raise ObservationError(f"'{path}': observed images are .png, .npz[:INDEX] or .npy[:INDEX] files")
    if arr.ndim not in (3, 4):
        raise ObservationError(f"'{spec}': expected images (C, H, W), got shape {arr.shape}")
    x = torch.from_numpy(np.array(arr, copy=True)).float()
    return x / 255.0 if arr.dtype == np.uint8 else x


class Observe(Energy):
    """``E(x, sigma) = || mask * (x - image) ||^2 / (2 (noise^2 + sigma^2))``: ``(B, *event) -> (B,)``.

    Args:
        image: the observation, ``(*event)`` (one for every chain) or ``(B, *event)`` (one per chain).
        mask: bool, broadcastable to ``image``; ``True`` entries are observed (default: all).
        noise: standard deviation of the observation noise (> 0).
    """

    noise_conditional = True

    def __init__(self, image: Tensor, mask: Tensor | None = None, noise: float = 0.05, label: str | None = None):
        image = torch.as_tensor(image, dtype=torch.get_default_dtype())
        if image.dim() < 1:
            raise ObservationError("the observed image must have at least one dimension")
        if not (isinstance(noise, (int, float)) and not isinstance(noise, bool) and noise > 0):
            raise ObservationError(f"observation noise must be a positive number, got {noise!r}")
        mask = torch.ones_like(image, dtype=torch.bool) if mask is None else parse_mask(mask, tuple(image.shape))
        event = tuple(image.shape[1:]) if image.dim() == 4 else tuple(image.shape)
        super().__init__(event, None, label or "observe")
        self.noise = float(noise)
        self.register_buffer("image", image, persistent=False)
        self.register_buffer("mask", mask.to(image.dtype), persistent=False)

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        var = torch.as_tensor(0.0 if sigma is None else sigma, dtype=x.dtype, device=x.device).square() + self.noise**2
        if var.dim() == 1:
            var = var.view(-1, *([1] * (x.dim() - 1)))
        if self.image.dim() == x.dim() and self.image.shape[0] not in (1, x.shape[0]):
            raise ObservationError(f"{self.image.shape[0]} observed images for {x.shape[0]} chains")
        r = self.mask * (x - self.image)
        return (0.5 * r.square() / var).flatten(1).sum(1)

    def _formula(self) -> str:
        return f"{self.label}(noise={self.noise:g})"


def observe(image: Any, mask: Any = "all", noise: float = 0.05) -> Observe:
    """The expert ``composer.observe(image="FILE.png|npz[:INDEX]", mask="left", noise=0.05)``.

    ``image`` is a file spec (``load_image``) or, from Python, a tensor ``(*event)`` / ``(B, *event)``;
    ``mask`` a name (``parse_mask``) or a bool tensor; ``noise`` the observation's standard deviation.
    """
    if isinstance(image, str):
        tensor = load_image(image)
        label = f'composer.observe(image="{image}", mask="{mask}")' if isinstance(mask, str) else None
    else:
        tensor, label = torch.as_tensor(image), None
    if isinstance(noise, bool) or not isinstance(noise, (int, float)):
        raise ObservationError(f"observation noise must be a number, got {noise!r}")
    expert = Observe(tensor, mask, float(noise), label="observe")
    if label:
        expert.display_name = label
    return expert


def masked_view(image: Tensor, mask: Tensor, fill: float = 0.5) -> Tensor:
    """``image`` with unobserved entries set to ``fill`` (for figures): same shape."""
    return torch.where(mask.bool(), image, torch.full_like(image, fill))


@hookimpl
def register_experts(register: Callable[..., None]) -> None:
    register("composer.observe", observe, doc="agreement with an observed image: ||mask (x - image)||^2 / "
                                              "2 (noise^2 + sigma^2); image=FILE.png|npz[:INDEX], mask=left|"
                                              "right|top|bottom|all|box=R0:R1,C0:C1|hole=R0:R1,C0:C1, noise=0.05")


@hookimpl
def register_commands(cli: Any) -> None:
    from composer.observe_cli import inpaint, score

    cli.add_command(inpaint)
    cli.add_command(score)


__all__ = ["Observe", "ObservationError", "load_image", "masked_view", "observe", "parse_mask"]
