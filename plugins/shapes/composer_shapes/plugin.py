"""The ``shapes`` plugin: the shapes-world dataset, its concept families, networks and ``composer eval shapes``.

Found through the entry point ``[project.entry-points.composer] shapes = "composer_shapes.plugin"``.

- datasets ``shapes`` (``composer dataset shapes ...``, ``composer train``) and ``shapes_pairs`` (the
  same images labelled by (shape, colour) pair, for the monolithic baseline);
- concept families ``shapes.color``, ``shapes.shape``, ``shapes.size``, ``shapes.position`` with the
  shipped weights (bare values such as ``red`` or ``top_left`` resolve through the language), each value
  ``E_prior - log p(value | x)`` over the shared prior, the expert ``shapes.prior``;
- networks ``shapes_view`` (denoising energy of a view), ``shapes_ray_chroma`` (chroma given luma and
  colour), ``shapes_view_posterior``, and the unshipped alternatives ``shapes_chroma``,
  ``shapes_color_posterior`` (for ``[network]`` in training files);
- the command group ``composer eval`` with ``composer eval shapes``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import composer
from composer_shapes.data import load
from composer_shapes.world import ATTRIBUTES


@composer.hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    """Register dataset ``shapes``: ``load(n=10000, seed=0, split="train")`` (see ``composer_shapes.data``)."""
    register(
        "shapes",
        load,
        doc="the shapes world: 3x32x32 images of one coloured shape, split train|heldout|all "
        "(held-out pairs: red triangle, green circle, blue square)",
    )
    register("shapes_pairs", load_pairs,
             doc="the shapes world labelled by (shape, colour) pair, for the monolithic baseline")


def load_pairs(n: int = 10000, seed: int = 0, split: str = "train") -> dict[str, Any]:
    """The shapes data labelled by (shape, colour) pair for the monolithic baseline.

    Returns ``load(n, seed, split)`` plus ``y`` (``shape * 4 + color``, int64) and ``values``
    (``red_circle``, ``green_circle``, ...; the held-out pairs keep their index but never occur in ``train``).
    """
    import numpy as np

    data = load(n=n, seed=seed, split=split)
    k = len(ATTRIBUTES["color"])
    data["y"] = data["shape"] * k + data["color"]
    data["values"] = np.array([f"{c}_{s}" for s in ATTRIBUTES["shape"] for c in ATTRIBUTES["color"]])
    return data


@composer.hookimpl
def register_experts(register: Callable[..., None]) -> None:
    """Register ``shapes.prior``, the unconditional prior every concept value shares."""

    def shapes_prior() -> composer.Energy:
        """p(x) of the shapes world (train split): layout of the colour-blind view + chroma mixed over the colours"""
        from composer_shapes.experts import prior

        return prior()

    register("shapes.prior", shapes_prior, doc=shapes_prior.__doc__)


@composer.hookimpl
def register_concepts(register: Callable[..., None]) -> None:
    """Register the four concept families; their weights load on first use."""
    from composer_shapes.experts import DOCS, FAMILIES, factory

    for name, attribute in FAMILIES.items():
        register(name, list(ATTRIBUTES[attribute]), factory(name), doc=DOCS[name])


@composer.hookimpl
def register_networks(register: Callable[..., None]) -> None:
    """Register the trainable architectures of the families (``composer_shapes.nets``)."""
    from composer_shapes.nets import ChromaEnergyNet, RayChromaNet, ViewEnergyNet
    from composer_shapes.posteriors import ColorPosterior, ViewPosterior

    register("shapes_view", ViewEnergyNet, doc="denoising energy of a U-Net on a view (colour-blind...) of the image")
    register("shapes_chroma", ChromaEnergyNet,
             doc="per-pixel denoising energy of chroma given luma, with a pooled context (moves colour only)")
    register("shapes_ray_chroma", RayChromaNet,
             doc="energy of chroma given luma and colour: each pixel on its colour's ray (moves colour only)")
    register("shapes_view_posterior", ViewPosterior,
             doc="noise-conditional -log p(value | colour-blind view): shape, size, position (moves luma only)")
    register("shapes_color_posterior", ColorPosterior,
             doc="noise-conditional -log p(colour | pooled per-pixel chroma) (moves colour only)")


@composer.hookimpl
def register_commands(cli: Any) -> None:
    """Add ``composer eval shapes`` and ``composer ood shapes``."""
    from composer.cli import plugin_group
    from composer_shapes.evaluate import eval_shapes
    from composer_shapes.ood import ood_command

    plugin_group(cli, "eval").add_command(eval_shapes)
    plugin_group(cli, "ood").add_command(ood_command)
