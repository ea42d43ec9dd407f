"""The shapes concept families, loaded from the shipped weights.

``shapes.color``, ``shapes.shape``, ``shapes.size`` and ``shapes.position`` each have one shared
noise-conditional network (``composer_shapes.nets``) stored in ``weights/<family>.safetensors``
(safetensors tensors + JSON metadata: network config, values, training recipe); every value is a
``composer.ConditionalEnergy`` on that network, so a product of values of one family runs as one
batched call. Loading never executes code from the file.

Each expert sees only what its concept needs (invariance by scope):

============  ===================================================  ==========================
family        network                                              sees
============  ===================================================  ==========================
color         per-pixel 1x1 convolutions + mean-pooled context     colours, not layout
shape         U-Net on the colour-blind view (RGB sum)             layout at 32x32, not colour
size          U-Net on the colour-blind view pooled 4x4            coarse layout (8x8)
position      U-Net on the colour-blind view pooled 4x4            coarse layout (8x8)
============  ===================================================  ==========================

    >>> from composer_shapes.experts import family
    >>> sorted(family("shapes.color"))
    ['blue', 'green', 'red', 'yellow']
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from composer import ComposerError, ConditionalEnergy
from composer_shapes.nets import build
from composer_shapes.recipe import recipe_for_family
from composer_shapes.world import ATTRIBUTES, IMAGE_SHAPE

WEIGHTS = Path(__file__).parent / "weights"
FAMILIES: dict[str, str] = {f"shapes.{a}": a for a in ("color", "shape", "size", "position")}
"""Concept family name -> attribute of the world."""
DOCS = {
    "shapes.color": "colour of the object (per-pixel expert with a pooled summary: cannot see layout)",
    "shapes.shape": "shape of the object (sees only the colour-blind view, the RGB sum)",
    "shapes.size": "size of the object (sees the colour-blind view pooled 4x4)",
    "shapes.position": "quadrant of the object (sees the colour-blind view pooled 4x4)",
}


def weights_path(name: str) -> Path:
    """The shipped weights of ``name`` (``"shapes.color"`` -> ``weights/color.safetensors``)."""
    return WEIGHTS / f"{name.split('.')[-1]}.safetensors"


def load_network(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A network and its metadata from a weights file (eval mode, no parameter gradients).

    Reads the engine's checkpoint format (what ``composer train`` exports: ``network`` config,
    ``values``, ``sigmas``, the training ``recipe``; EMA weights when present) and the plain format
    ``{config: {...}}`` + state dict. Nothing in the file is executed.

    Raises:
        ComposerError: missing file or metadata that does not describe a shapes network.
    """
    path = Path(path)
    if not path.is_file():
        raise ComposerError(f"shapes weights not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if "composer" in header:
        from composer.training.checkpoint import network_from_checkpoint

        net, meta = network_from_checkpoint(path)
        return net, {**meta, "config": meta["network"]}
    try:
        meta = {k: _json_or_text(v) for k, v in header.items()}
        net = build(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ComposerError(f"{path}: not a shapes expert file ({exc})") from exc
    net.load_state_dict(load_file(str(path)), strict=True)
    net.eval().requires_grad_(False)
    return net, meta


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@cache
def _network(name: str) -> tuple[nn.Module, dict[str, Any]]:
    return load_network(weights_path(name))


def make_value(name: str, value: str, network: nn.Module | None = None) -> ConditionalEnergy:
    """The expert of ``value`` of family ``name`` (sharing the family's cached network).

    The energy carries ``family`` and ``value``, ``sigmas`` (the annealing ladder),
    ``sampling_recipe`` (keyword arguments of ``composer.sample``, from ``composer_shapes.recipe``) and
    ``prepare_composition`` (``composer_shapes.compose.prepare``: completes a composition before sampling).
    """
    attribute = FAMILIES[name]
    values = ATTRIBUTES[attribute]
    if value not in values:
        raise ComposerError(f"'{value}' is not a value of {name}; values: {', '.join(values)}")
    net = network if network is not None else _network(name)[0]
    energy = ConditionalEnergy(net, torch.tensor(values.index(value)), IMAGE_SHAPE, (0.0, 1.0), f"{name}={value}",
                               noise_conditional=True)
    energy.family, energy.value = name, value
    from composer_shapes.compose import prepare

    energy.prepare_composition = prepare
    recipe = recipe_for_family(name)
    energy.sampling_recipe = recipe.as_kwargs()
    energy.sigmas = recipe.ladder()
    return energy


def family(name: str) -> dict[str, ConditionalEnergy]:
    """``{value: expert}`` of family ``name``, all sharing one network."""
    return {v: make_value(name, v) for v in ATTRIBUTES[FAMILIES[name]]}


def factory(name: str):
    """``factory(value) -> Energy`` for ``register_concepts`` (weights load on first use)."""

    def make(value: str) -> ConditionalEnergy:
        return make_value(name, value)

    make.__doc__ = DOCS[name]
    return make
