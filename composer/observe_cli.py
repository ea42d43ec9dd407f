"""``composer inpaint`` and ``composer score``: commands of the observation and scoring modules.

Registered into the ``composer`` group by the built-in plugin ``composer.observe`` (its ``register_commands``).
"""

from __future__ import annotations

import json

import click

from composer.errors import ComposerError


@click.command(epilog="""
\b
Examples:
  composer inpaint "fashion.class=sneaker" --image test.npz:0 --mask left -n 8 --out sneaker.png
  composer inpaint "fashion.class=boot" --image shoe.png --mask left --noise 0.05 --out boot.npz
  composer inpaint fashion.prior --image test.npz:0,1,2,3 --mask hole=8:20,8:20 -n 4 --out holes.png
""")
@click.argument("expr")
@click.option("--image", "image", required=True,
              help="Observed image: FILE.png, FILE.npz (array x) or FILE.npz:INDEX[,INDEX...] (several: columns).")
@click.option("--mask", default="left", show_default=True,
              help="Observed entries: all, left, right, top, bottom, box=R0:R1,C0:C1, hole=R0:R1,C0:C1.")
@click.option("--noise", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="Standard deviation of the observation noise.")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=8, show_default=True,
              help="Completions per observed image.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default="inpaint.png", show_default=True,
              help="Output: .png (rows: observed, masked input, completions) or .npz (x, observed, mask).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--defs", type=click.Path(dir_okay=False), default=None, help="TOML file of named sub-compositions.")
def inpaint(expr: str, image: str, mask: str, noise: float, n: int, seed: int, device: str, out: str, quiet: bool,
            defs: str | None) -> None:
    """Complete the masked part of an observed image: sample EXPR & composer.observe(image, mask, noise)."""
    import torch

    from composer.cli import _check_output, _device, _parse, _registry, _write_npz
    from composer.observe import Observe, load_image, masked_view, parse_mask
    from composer.sampling import sample as draw

    out_path = _check_output(out, (".npz", ".png"))
    dev = _device(device)
    energy = _parse(expr, defs)
    observed = load_image(image)
    if observed.dim() == 3:
        observed = observed[None]
    shape = energy.event_shape
    if shape is not None and tuple(observed.shape[1:]) != tuple(shape):
        raise ComposerError(f"the observed image has shape {tuple(observed.shape[1:])}, EXPR samples {tuple(shape)}")
    m = parse_mask(mask, tuple(observed.shape[1:]))
    k = observed.shape[0]
    chains = observed.repeat_interleave(n, dim=0)  # (k * n, C, H, W): n completions of each image
    composition = energy & Observe(chains, m, noise, label="observe")
    result = draw(composition, n=k * n, seed=seed, device=dev, progress=not quiet, registry=_registry())
    x = result.x.detach().cpu()
    if energy.domain is not None:
        x = torch.max(torch.min(x, energy.domain[1].cpu()), energy.domain[0].cpu())
    kept = ((x - chains) * m).abs().amax().item()
    if out_path.suffix == ".npz":
        _write_npz(out_path, x=x.numpy(), observed=observed.numpy(), mask=m.numpy(), expression=expr,
                   formula=composition.formula(), seed=seed, noise=noise)
    else:
        masked = masked_view(observed, m)
        grid = torch.cat([observed, masked, x.view(k, n, *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])])
        save_grid_png(grid, out_path, nrow=k)
    click.echo(f"wrote {k * n} completions to {out_path} (largest change of an observed entry {kept:.3f}, "
               f"observation noise {noise:g})", err=True)


def save_grid_png(x, path: str, nrow: int, scale: int = 4) -> None:
    """Write images ``(N, C, H, W)`` in [0, 1] as one PNG grid (``nrow`` per row), atomically."""
    from PIL import Image

    from composer.atomic import atomic_write
    from composer.figures import image_grid

    img = Image.fromarray(image_grid(x, nrow))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_write(path) as f:
        img.save(f, format="PNG")


@click.command(epilog="""
\b
Examples:
  composer score fashion.prior test.npz --score levels --out scores.npz
  composer score "fashion.class=bag" images.npz --score energy --sigma 0.05 --json
  composer score fashion.prior test.npz --score typicality --sigma 0.05 --reference train.npz
""")
@click.argument("expr")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--score", "kind", default="energy", show_default=True,
              help="energy, grad-norm, levels (noise-conditional: sum over levels) or typicality (distance "
                   "from the --reference inputs' energies, either side); see composer.scores.")
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Noise level for noise-conditional energies (energy, grad-norm).")
@click.option("--levels", default=None, help="Comma-separated noise levels of --score levels.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N inputs.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="In-distribution inputs (.npz with x, or .npy) for --score typicality.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the scores: .npz (array score) or .json.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--defs", type=click.Path(dir_okay=False), default=None, help="TOML file of named sub-compositions.")
def score(expr: str, file: str, kind: str, sigma: float | None, levels: str | None, limit: int | None,
          reference: str | None, out: str | None, as_json: bool, defs: str | None) -> None:
    """Score each input of FILE (.npz with x, or .npy) under EXPR: high scores are unlikely inputs."""
    import torch

    from composer.atomic import atomic_write_text
    from composer.cli import _check_output, _load_array, _parse, _write_npz
    from composer.scores import score as compute

    out_path = _check_output(out, (".npz", ".json")) if out else None
    try:
        sigmas = [float(v) for v in levels.split(",")] if levels else None
    except ValueError:
        raise click.BadParameter(f"'{levels}' is not a list of numbers", param_hint="--levels") from None
    energy = _parse(expr, defs)
    x = torch.as_tensor(_load_array(file))
    if limit:
        x = x[:limit]
    ref = torch.as_tensor(_load_array(reference)) if reference else None
    s = compute(energy, x, kind, sigma=sigma, sigmas=sigmas, progress=not as_json, reference=ref)
    values = s.double().tolist()
    if out_path is not None:
        if out_path.suffix == ".npz":
            _write_npz(out_path, score=s.numpy(), kind=kind, expression=expr, sigma=-1.0 if sigma is None else sigma)
        else:
            atomic_write_text(out_path, json.dumps({"expression": expr, "score": kind, "sigma": sigma,
                                                    "scores": values}) + "\n")
    if as_json:
        click.echo(json.dumps({"score": kind, "scores": values}))
    else:
        t = s.double()
        click.echo(f"{kind} of {t.numel()} inputs: mean {t.mean().item():.4g}, median {t.median().item():.4g}, "
                   f"min {t.min().item():.4g}, max {t.max().item():.4g}" + (f" -> {out_path}" if out_path else ""),
                   err=True)


