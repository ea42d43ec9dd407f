"""``composer ood shapes``: out-of-distribution detection with the shapes experts, against off-world images.

In-distribution: ``n`` fresh images of the world (``all`` split, seed ``OOD_SEED + seed``). Out-of-distribution
sets (``n`` each): the off-world images of ``composer_shapes.offworld``, one set per kind of break, so each set
asks one question (``color``: a hue or saturation the world does not have; ``shape``: an ellipse, diamond,
downward triangle or squircle; ``size``: a radius between small and large; ``position``: a centre on a
midline; ``empty``: a black canvas), plus ``noise`` (uniform in ``[0, 1]``). The ``typicality`` scores compare
with ``REFERENCE`` further world images (another seed).

The default ``EXPR`` is ``shapes.prior``, the world's density ``p(luma) p(chroma | luma)``; a composition can be
scored instead (``composer ood shapes "red & triangle"``: then images of other colours or shapes are out of
distribution too, and the in-distribution set should be restricted accordingly; the protocol keeps the world's).
"""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np
import torch
from torch import Tensor

from composer_shapes import offworld
from composer_shapes.data import generate

OOD_SEED = 31_000
"""Base seed of the protocol's world images (far from the training and evaluation seeds)."""
REFERENCE = 1000
"""World images the ``typicality`` scores take as in-distribution reference."""

SCORE_SPECS: dict[str, dict[str, Any]] = {
    "energy@0.05": {"kind": "energy", "sigma": 0.05},
    "energy@0.1": {"kind": "energy", "sigma": 0.1},
    "energy@0.3": {"kind": "energy", "sigma": 0.3},
    "grad-norm@0.05": {"kind": "grad-norm", "sigma": 0.05},
    "levels 0.05-1": {"kind": "levels", "sigmas": [0.05, 0.1, 0.2, 0.5, 1.0]},
    "typicality@0.05": {"kind": "typicality", "sigma": 0.05},
    "typicality@0.1": {"kind": "typicality", "sigma": 0.1},
}
"""The scores ``composer ood shapes`` reports: name -> ``composer.scores.score`` arguments."""


def offworld_sets(n: int, seed: int = 0) -> dict[str, Tensor]:
    """``{break: (n, 3, 32, 32)}`` for every break of ``composer_shapes.offworld.BREAKS``, and ``noise``."""
    rng = np.random.default_rng(OOD_SEED + 7 + seed)
    pool: dict[str, list[np.ndarray]] = {b: [] for b in offworld.BREAKS}
    while min(sum(len(a) for a in chunks) for chunks in pool.values()) < n:
        x, _, brk = offworld.sample(max(4 * n, 200), rng)
        for i, name in enumerate(offworld.BREAKS):
            pool[name].append(x[brk == i])
    sets = {name: torch.from_numpy(np.concatenate(chunks)[:n]) for name, chunks in pool.items()}
    sets["noise"] = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(OOD_SEED + seed))
    return sets


def run_protocol(energy: Any, n: int = 500, seed: int = 0, scores: dict[str, dict[str, Any]] | None = None,
                 echo: Any = None) -> dict[str, Any]:
    """AUROC per off-world set per score: ``{"auroc": {score: {set: value}}, "n": n, "sets": [...]}``."""
    from composer.scores import auroc_table

    x_in = torch.from_numpy(generate(n, "all", seed=OOD_SEED + seed)["x"])
    reference = torch.from_numpy(generate(REFERENCE, "all", seed=OOD_SEED + 1 + seed)["x"])
    sets = offworld_sets(n, seed)
    table = auroc_table(energy, x_in, sets, scores or SCORE_SPECS, reference=reference, echo=echo)
    return {"auroc": table, "n": n, "seed": seed, "sets": list(sets), "reference": f"{REFERENCE} world images"}


@click.command("shapes", epilog="""
\b
Examples:
  composer ood shapes -n 200 --json ood_shapes.json
""")
@click.argument("expr", default="shapes.prior", required=False)
@click.option("-n", "--num", "n", type=click.IntRange(min=10, max=20_000), default=500, show_default=True,
              help="Images per set (in-distribution and each off-world set).")
@click.option("--seed", type=click.IntRange(min=0, max=2**31), default=0, show_default=True,
              help="Seed of the sets.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the table as JSON.")
def ood_command(expr: str, n: int, seed: int, json_out: str | None) -> None:
    """AUROC of world images (in) against off-world colours, shapes, sizes, positions, empty canvases, noise."""
    from composer.atomic import atomic_write_text
    from composer.cli import check_output
    from composer.language import parse
    from composer.plugins import get_registry
    from composer.scores import markdown_table

    if json_out:
        check_output(json_out, (".json",))
    energy = parse(expr, registry=get_registry())
    result = run_protocol(energy, n, seed, echo=lambda s: click.echo(s, err=True))
    result["expression"] = expr
    if json_out:
        atomic_write_text(json_out, json.dumps(result, indent=2) + "\n")
    click.echo(markdown_table(result["auroc"]))
