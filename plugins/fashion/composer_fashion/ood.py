"""``composer ood fashion``: out-of-distribution detection on Fashion-MNIST (the protocol of Du & Mordatch 2019).

In-distribution: ``n`` Fashion-MNIST test images (the ``typicality`` scores compare with 2,000 train images).
Out-of-distribution sets (``n`` each, seed fixed):

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, the optional extra
  ``composer-fashion[digits]``), upscaled bilinearly to 20x20 and centred on a 28x28 black canvas, the
  layout of MNIST; skipped with a note when scikit-learn is absent;
- ``noise``: uniform noise in ``[0, 1]``;
- ``constant``: constant images, level uniform in ``[0, 1]``;
- ``interpolation``: ``(a + b) / 2`` of two random test images (other than the in-distribution ones);
- ``flipped``: test images (other than the in-distribution ones) flipped upside down.

Every score (``composer.scores``) of the expert ``EXPR`` is computed on every set and the AUROC of in versus
out is reported (0.5: chance; 1: every OOD input scores higher; ``composer.scores.auroc_table``). The default
``EXPR`` is ``ALL_CLASSES``, the
mixture of the ten values of ``fashion.class``: ``E = E_prior - log sum_c p(c | x)^g``, the prior's energy plus
``g`` times how unsure the class posterior is (with ``g = 10`` the sum is its largest term); see the README.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
import numpy as np
import torch
from torch import Tensor

from composer_fashion.data import CLASSES, as_float, load

SETS = ("digits", "noise", "constant", "interpolation", "flipped")

SCORE_SPECS: dict[str, dict[str, Any]] = {
    "energy@0.1": {"kind": "energy", "sigma": 0.1},
    "energy@0.5": {"kind": "energy", "sigma": 0.5},
    "energy@1": {"kind": "energy", "sigma": 1.0},
    "energy@2": {"kind": "energy", "sigma": 2.0},
    "energy@4": {"kind": "energy", "sigma": 4.0},
    "grad-norm@0.1": {"kind": "grad-norm", "sigma": 0.1},
    "levels 1,2,4": {"kind": "levels", "sigmas": [1.0, 2.0, 4.0]},
    "typicality@0.1": {"kind": "typicality", "sigma": 0.1},
    "typicality@1": {"kind": "typicality", "sigma": 1.0},
}
"""The scores ``composer ood fashion`` reports: name -> ``composer.scores.score`` arguments."""

ALL_CLASSES = " | ".join(f"fashion.class={c}" for c in CLASSES)
"""The default expression of ``composer ood fashion``: the mixture of every class value."""


def digits_28(n: int, seed: int = 0) -> Tensor | None:
    """``n`` scikit-learn digits as ``(n, 1, 28, 28)`` in ``[0, 1]`` (20x20 centred), or ``None`` without sklearn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    images = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    up = torch.nn.functional.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    out = torch.nn.functional.pad(up, (4, 4, 4, 4))
    idx = torch.randperm(out.shape[0], generator=torch.Generator().manual_seed(seed))
    return out[idx[:n]] if n <= out.shape[0] else out[idx].repeat((n + out.shape[0] - 1) // out.shape[0], 1, 1, 1)[:n]


REFERENCE = 2000
"""Train images the ``typicality`` scores take as in-distribution reference."""


def reference_images(n: int = REFERENCE, seed: int = 0) -> Tensor:
    """``n`` random train images ``(n, 1, 28, 28)`` in ``[0, 1]`` (the ``typicality`` reference)."""
    train = load("train")["x"]
    idx = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed + 1))[:n]
    return torch.from_numpy(as_float(train[idx.numpy()]))


def ood_sets(n: int = 1000, seed: int = 0) -> tuple[Tensor, dict[str, Tensor], list[str]]:
    """``(in (n, 1, 28, 28), {name: (n, 1, 28, 28)}, notes)`` of the protocol (test split, fixed seed)."""
    test = torch.from_numpy(as_float(load("test")["x"]))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(test.shape[0], generator=g)
    if 3 * n > test.shape[0]:
        raise click.BadParameter(f"n must be at most {test.shape[0] // 3}", param_hint="-n")
    x_in, rest = test[perm[:n]], test[perm[n:]]
    sets: dict[str, Tensor] = {}
    notes: list[str] = []
    digits = digits_28(n, seed)
    if digits is None:
        notes.append("digits skipped: scikit-learn is not installed (pip install 'composer-fashion[digits]')")
    else:
        sets["digits"] = digits
    sets["noise"] = torch.rand(n, 1, 28, 28, generator=g)
    sets["constant"] = torch.rand(n, 1, 1, 1, generator=g).expand(n, 1, 28, 28).clone()
    sets["interpolation"] = 0.5 * (rest[:n] + rest[n:2 * n])
    sets["flipped"] = torch.flip(rest[2 * n:3 * n] if rest.shape[0] >= 3 * n else rest[:n], dims=[-2])
    return x_in, sets, notes


def run_protocol(energy: Any, n: int = 1000, seed: int = 0, scores: dict[str, dict[str, Any]] | None = None,
                 echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """AUROC per OOD set per score: ``{"auroc": {score: {set: value}}, "n": n, "notes": [...]}``."""
    from composer.scores import auroc_table

    x_in, sets, notes = ood_sets(n, seed)
    specs = scores or SCORE_SPECS
    needs_reference = any(spec.get("kind") == "typicality" for spec in specs.values())
    reference = reference_images(REFERENCE, seed) if needs_reference else None
    table = auroc_table(energy, x_in, sets, specs, reference=reference, echo=echo)
    return {"auroc": table, "n": n, "seed": seed, "sets": list(sets), "notes": notes,
            "reference": f"{REFERENCE} train images" if needs_reference else None}


@click.command("fashion", epilog="""
\b
Examples:
  composer ood fashion -n 200 --json ood.json
  composer ood fashion "fashion.class=bag" -n 500
""")
@click.argument("expr", default=None, required=False)
@click.option("-n", "--num", "n", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Images per set (in-distribution and each OOD set).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sets.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the table as JSON.")
def ood_command(expr: str, n: int, seed: int, json_out: str | None) -> None:
    """AUROC of Fashion-MNIST test (in) against digits, noise, constant, interpolated and flipped images."""
    from composer.atomic import atomic_write_text
    from composer.cli import check_output
    from composer.language import parse
    from composer.plugins import get_registry
    from composer.scores import markdown_table

    if json_out:
        check_output(json_out, (".json",))
    expr = expr or ALL_CLASSES
    energy = parse(expr, registry=get_registry())
    result = run_protocol(energy, n, seed, echo=lambda s: click.echo(s, err=True))
    result["expression"] = expr
    for note in result["notes"]:
        click.echo(f"note: {note}", err=True)
    if json_out:
        atomic_write_text(json_out, json.dumps(result, indent=2) + "\n")
    click.echo(markdown_table(result["auroc"]))
