"""The shapes concept families and their prior, loaded from the shipped weights.

Every concept value is in Bayes form (``composer.ConditionalEnergy`` with a ``base``):

    E(x | family = value, sigma) = E_prior(x, sigma) - log p_sigma(value | x)

- ``prior()`` (registered expert ``shapes.prior``): the images, ``p(x)``, as one unconditional
  noise-conditional denoising energy of the RGB image (``composer_shapes.nets.ViewEnergyNet``,
  ``weights/prior.safetensors``), trained on the ``train`` split.
- each family (``shapes.color``, ``shapes.shape``, ``shapes.size``, ``shapes.position``): one noise-conditional
  posterior network (``composer_shapes.posteriors``, ``weights/<family>.safetensors``) giving
  ``-log p(value | x)`` for every value from what the concept needs to see:

============  =======================================================  ==========================
family        posterior network                                        sees
============  =======================================================  ==========================
color         per-pixel 1x1 convolutions on chroma, pooled             colours, not layout
shape         CNN on the colour-blind view (RGB sum)                   layout, not which colour
size          CNN on the colour-blind view                             layout, not which colour
position      CNN on the colour-blind view                             layout, not which colour
============  =======================================================  ==========================

The engine counts the shared prior once in any composition, so ``red & triangle`` is
``p(x) p(red | x) p(triangle | x)``, the exact ``p(x | red, triangle)`` at noise 0 (attributes of an
image are independent given the image). Loading never executes code from a file.

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

from composer import ComposerError, ConditionalEnergy, Energy, FunctionEnergy
from composer_shapes.nets import build
from composer_shapes.recipe import DEFAULT, Recipe, recipe_for_family
from composer_shapes.world import ATTRIBUTES, IMAGE_SHAPE

WEIGHTS = Path(__file__).parent / "weights"
FAMILIES: dict[str, str] = {f"shapes.{a}": a for a in ("color", "shape", "size", "position")}
"""Concept family name -> attribute of the world."""
DOCS = {
    "shapes.color": "colour of the object: prior - log p(colour | pooled per-pixel chroma), cannot see layout",
    "shapes.shape": "shape of the object: prior - log p(shape | colour-blind view), cannot see which colour",
    "shapes.size": "size of the object: prior - log p(size | colour-blind view), cannot see which colour",
    "shapes.position": "quadrant of the object: prior - log p(position | colour-blind view)",
}


GUIDANCE: dict[str, float] = {name: 10.0 for name in FAMILIES}
"""Guidance scale ``g`` of each family's posterior (``composer.ConditionalEnergy``'s ``guidance``): measured
on 16 samples of 8 compositions, g = 1 hardly moved the samples away from the prior's (mean 14%), 4 gave
16%, 10 gave 50%; 20 or 30 made objects grow between the world's two sizes and colours wash out."""


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


PRIOR_PARTS = ("shapes.prior_layout", "shapes.prior_chroma")
"""The networks whose energies add up to the prior (``weights/<part>.safetensors``)."""


class PriorEnergy(nn.Module):
    """``E_prior(x, sigma) = sum_k net_k(x, sigma=sigma)`` of unconditional denoising energies: ``(B,)``."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor, sigma: Any = None) -> torch.Tensor:
        total = self.nets[0](x, None, sigma=sigma)
        for net in self.nets[1:]:
            total = total + net(x, None, sigma=sigma)
        return total


@cache
def prior() -> Energy:
    """The shared prior ``p(x)`` of the shapes world (one cached object: compositions count it once).

    Registered as the expert ``shapes.prior``: ``composer sample shapes.prior`` draws unconditional images.
    """
    net = PriorEnergy([_network(name)[0] for name in PRIOR_PARTS])
    energy = FunctionEnergy(net, IMAGE_SHAPE, (0.0, 1.0), "shapes.prior", noise_conditional=True)
    energy.display_name = "shapes.prior"
    _decorate(energy, DEFAULT)
    return energy


def _decorate(energy: Energy, recipe: Recipe) -> None:
    energy.sampling_recipe = recipe.as_kwargs()
    energy.sigmas = recipe.ladder()


def make_value(name: str, value: str, network: nn.Module | None = None, base: Energy | None = None
               ) -> ConditionalEnergy:
    """The expert of ``value`` of family ``name``: ``E_prior(x) - log p(value | x)``.

    Args:
        name, value: e.g. ``"shapes.color"``, ``"red"``.
        network: the family's posterior network (default: the shipped one, cached).
        base: the prior (default: ``prior()``, cached).

    The energy carries ``family`` and ``value``, ``sigmas`` (the annealing ladder) and ``sampling_recipe``
    (keyword arguments of ``composer.sample``, from ``composer_shapes.recipe``).
    """
    attribute = FAMILIES[name]
    values = ATTRIBUTES[attribute]
    if value not in values:
        raise ComposerError(f"'{value}' is not a value of {name}; values: {', '.join(values)}")
    net = network if network is not None else _network(name)[0]
    energy = ConditionalEnergy(net, torch.tensor(values.index(value)), IMAGE_SHAPE, (0.0, 1.0), f"{name}={value}",
                               noise_conditional=True, base=base if base is not None else prior(),
                               guidance=GUIDANCE[name])
    energy.family, energy.value = name, value
    _decorate(energy, recipe_for_family(name))
    return energy


def family(name: str) -> dict[str, ConditionalEnergy]:
    """``{value: expert}`` of family ``name``, all sharing one network and the prior."""
    return {v: make_value(name, v) for v in ATTRIBUTES[FAMILIES[name]]}


def factory(name: str):
    """``factory(value) -> Energy`` for ``register_concepts`` (weights load on first use)."""

    def make(value: str) -> ConditionalEnergy:
        return make_value(name, value)

    make.__doc__ = DOCS[name]
    return make
