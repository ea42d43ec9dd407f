"""PNG figures people look at: sample grids, 2-D densities, energy traces.

``save_samples_png`` picks the figure from the event shape: an image grid for
``(C, H, W)`` with ``C`` in {1, 3}; a density of ``exp(-E)`` behind the samples for 2-D
points; a histogram against the normalised density for 1-D points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from composer.atomic import atomic_write
from composer.errors import ComposerError


def image_grid(x: Tensor | np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` in [0, 1] into one ``(H', W', 3)`` uint8 array.

    Args:
        x: images, ``C`` in {1, 3}; values are clipped to [0, 1].
        nrow: images per row (default ``ceil(sqrt(N))``).
        pad: pixels of grey between images.
    """
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ComposerError(f"an image grid needs (N, C, H, W) with C in 1 or 3, got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if c == 1:
        x = x.expand(n, 3, h, w)
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.full((3, ncol * (h + pad) + pad, nrow * (w + pad) + pad), 0.5)
    for i in range(n):
        r, q = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    return (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_image_grid(x: Tensor | np.ndarray, path: str | Path, nrow: int | None = None, scale: int = 4) -> None:
    """Write images ``(N, C, H, W)`` as a PNG grid, each pixel enlarged ``scale`` times."""
    from PIL import Image

    grid = image_grid(x, nrow)
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_write(path) as f:  # a kill leaves the previous picture or the new one, never a torn file
        img.save(f, format="PNG")


def wrap_title(title: str, width: int) -> str:
    """``title`` broken into lines of at most ``width`` characters (at spaces; at most 4 lines, then "...").

    A long composition formula must not be cut at the figure's edge: at fontsize 9 a 5.5-inch
    figure's axes hold ~60 characters per line.
    """
    import textwrap

    lines = textwrap.wrap(title, width, break_long_words=True, break_on_hyphens=False)
    if len(lines) > 4:
        lines = lines[:4]
        lines[-1] = lines[-1][: max(width - 3, 1)] + "..."
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_points_png(
    x: Tensor | np.ndarray,
    path: str | Path,
    energy_fn: Callable[[Tensor], Tensor] | None = None,
    title: str | None = None,
    grid_size: int = 200,
) -> None:
    """Scatter 2-D samples ``(N, 2)`` (or histogram 1-D ``(N, 1)``) over the density ``exp(-E)``.

    Args:
        x: samples.
        energy_fn: ``(M, d) -> (M,)``; when given, the normalised density on a grid is drawn
            behind the samples (2-D) or beside the histogram (1-D).
        title: figure title (e.g. the composition formula).
    """
    pts = torch.as_tensor(x).detach().float().cpu()
    if pts.dim() != 2 or pts.shape[1] not in (1, 2):
        raise ComposerError(f"can only draw 1-D or 2-D points as a figure, got shape {tuple(pts.shape)}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    lo = torch.quantile(pts, 0.001, dim=0)
    hi = torch.quantile(pts, 0.999, dim=0)
    span = (hi - lo).clamp_min(1e-3)
    lo, hi = lo - 0.25 * span, hi + 0.25 * span
    if pts.shape[1] == 2:
        if energy_fn is not None:
            gx = torch.linspace(lo[0].item(), hi[0].item(), grid_size)
            gy = torch.linspace(lo[1].item(), hi[1].item(), grid_size)
            xx, yy = torch.meshgrid(gx, gy, indexing="xy")
            dens = _density(energy_fn, torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).view(grid_size, grid_size)
            extent = (gx[0].item(), gx[-1].item(), gy[0].item(), gy[-1].item())
            ax.imshow(dens.numpy(), origin="lower", extent=extent, cmap="magma", aspect="auto")
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=3, c="#4fc3f7", alpha=0.6, linewidths=0)
        ax.set_xlim(lo[0].item(), hi[0].item())
        ax.set_ylim(lo[1].item(), hi[1].item())
        ax.set_xlabel("x[0]")
        ax.set_ylabel("x[1]")
    else:
        ax.hist(pts[:, 0].numpy(), bins=60, density=True, color="#4fc3f7", label="samples")
        if energy_fn is not None:
            g = torch.linspace(lo[0].item(), hi[0].item(), 400)
            dens = _density(energy_fn, g[:, None])
            dens = dens / (dens.sum() * (g[1] - g[0]))
            ax.plot(g.numpy(), dens.numpy(), color="#d84315", label="exp(-E) / Z (grid)")
            ax.legend()
        ax.set_xlabel("x")
    if title:
        ax.set_title(wrap_title(title, 60), fontsize=9)
    _save(plt, fig, path)


def _density(energy_fn: Callable[[Tensor], Tensor], pts: Tensor) -> Tensor:
    with torch.no_grad():
        e = torch.cat([energy_fn(chunk) for chunk in pts.split(8192)]).float().cpu()
    e = torch.where(torch.isfinite(e), e, torch.full_like(e, float("inf")))
    return torch.exp(-(e - e.min()))


def save_trace_png(trace: dict[str, Tensor], path: str | Path, title: str | None = None) -> None:
    """Plot per-step diagnostics (``energy_mean``/``min``/``max``, ``grad_norm``, ``acceptance``)."""
    plt = _pyplot()
    keys = [k for k in ("grad_norm", "acceptance") if k in trace and trace[k] is not None and len(trace[k])]
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4.5 * (1 + len(keys)), 3.5), dpi=110, squeeze=False)
    ax = axes[0, 0]
    if "energy_mean" in trace:
        steps = np.arange(len(trace["energy_mean"]))
        ax.plot(steps, np.asarray(trace["energy_mean"]), label="mean")
        if "energy_min" in trace and "energy_max" in trace:
            ax.fill_between(steps, np.asarray(trace["energy_min"]), np.asarray(trace["energy_max"]), alpha=0.25,
                            label="min-max")
        ax.legend()
    ax.set_title("energy")
    ax.set_xlabel("step")
    for a, key in zip(axes[0, 1:], keys):
        a.plot(np.asarray(trace[key]))
        a.set_title(key.replace("_", " "))
        a.set_xlabel("step")
    if title:
        fig.suptitle(wrap_title(title, 55 * (1 + len(keys))), fontsize=9)
    _save(plt, fig, path)


def _save(plt, fig, path: str | Path, **options) -> None:
    fig.tight_layout()
    save_figure_png(plt, fig, path, **options)


def save_figure_png(plt, fig, path: str | Path, **options) -> None:
    """``fig.savefig`` as PNG through ``composer.atomic.atomic_write`` (whatever the suffix's case), then close."""
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", **options)
    finally:
        plt.close(fig)


def save_samples_png(
    x: Tensor | np.ndarray,
    path: str | Path,
    energy_fn: Callable[[Tensor], Tensor] | None = None,
    title: str | None = None,
) -> None:
    """Draw samples as a picture chosen by their event shape (image grid, 2-D or 1-D density)."""
    shape = tuple(torch.as_tensor(x).shape[1:])
    if len(shape) == 3 and shape[0] in (1, 3):
        save_image_grid(x, path)
    elif shape in ((1,), (2,)):
        save_points_png(x, path, energy_fn, title)
    else:
        raise ComposerError(f"no picture for samples of shape {shape}; write .npz instead")
