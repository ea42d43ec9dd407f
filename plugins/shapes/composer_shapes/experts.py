"""The shapes concept families and their prior, loaded from the shipped weights.

Every concept value is in Bayes form (``composer.ConditionalEnergy`` with a ``base``):

    E(x | family = value, sigma) = E_prior(x, sigma) - g log p_sigma(value | x)

- ``prior()`` (registered expert ``shapes.prior``): the images, ``p(x) = p(luma) p(chroma | luma)``, the sum of
  two noise-conditional energies trained on the ``train`` split: the layout part, a denoising energy of the
  colour-blind view (``composer_shapes.nets.ViewEnergyNet``, ``weights/prior_layout.safetensors``), and the
  colour part, the mixture over the four colours (``composer_shapes.posteriors.ValueMixture``) of the
  colour family's class-conditional chroma energies (``weights/color.safetensors``).
- each family (``shapes.color``, ``shapes.shape``, ``shapes.size``, ``shapes.position``) gives
  ``-log p(value | x)`` for every value from what the concept needs to see:

============  =======================================================  ==========================
family        network (``weights/<family>.safetensors``)               sees
============  =======================================================  ==========================
color         Bayes' rule over per-pixel chroma-given-luma energies    colours, not layout
              (``RayChromaNet``, DSM-trained; g = 1: exact)
shape         CNN on the colour-blind view (RGB sum), discriminative   layout, not which colour
size          CNN on the colour-blind view, discriminative             layout, not which colour
position      CNN on the colour-blind view, discriminative             layout, not which colour
============  =======================================================  ==========================

The engine counts the shared prior once in any composition, so ``red & triangle`` is
``p(x) p(red | x) p(triangle | x)^g``, the exact ``p(x | red, triangle)`` at noise 0 and g = 1 (attributes of
an image are independent given the image); for colour it is exactly ``p(luma) p(chroma | luma, red)``.
Loading never executes code from a file.

    >>> from composer_shapes.experts import family
    >>> sorted(family("shapes.color"))
    ['blue', 'green', 'red', 'yellow']
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from composer import ComposerError, ConditionalEnergy, Energy, FunctionEnergy, Strata
from composer_shapes.nets import build
from composer_shapes.posteriors import BayesPosterior, Posterior, ValueMixture
from composer_shapes.recipe import DEFAULT, Recipe, recipe_for_family
from composer_shapes.world import ATTRIBUTES, IMAGE_SHAPE

WEIGHTS = Path(__file__).parent / "weights"
FAMILIES: dict[str, str] = {f"shapes.{a}": a for a in ("color", "shape", "size", "position")}
"""Concept family name -> attribute of the world."""
DOCS = {
    "shapes.color": "colour of the object: prior - log p(colour | per-pixel chroma given luma), cannot see layout",
    "shapes.shape": "shape of the object: prior - log p(shape | colour-blind view), cannot see which colour",
    "shapes.size": "size of the object: prior - log p(size | colour-blind view), cannot see which colour",
    "shapes.position": "quadrant of the object: prior - log p(position | colour-blind view)",
}


GUIDANCE: dict[str, float] = {"shapes.color": 1.0, "shapes.shape": 10.0, "shapes.size": 10.0, "shapes.position": 10.0}
"""Guidance scale ``g`` of each family's posterior (``composer.ConditionalEnergy``'s ``guidance``). Colour is
exact Bayes over its own class-conditional energies (g = 1 gives ``p(luma) p(chroma | luma, colour)``; g 2
and 3 gave the same quick-set figures: once a colour is decided the posterior saturates and the prior's
mixture does the pulling). The layout posteriors are discriminative; with g = 1 they hardly moved samples
away from the prior's, 10 was best of those measured (5: 94% vs 96% on the quick set; plugin README)."""


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


def _is_class_conditional_density(net: nn.Module) -> bool:
    """A family network of ``-log p(x | value)`` (DSM-trained), not of ``-log p(value | x)``."""
    return not isinstance(net, Posterior) and int(getattr(net, "num_classes", 0)) > 0


def as_posterior(net: nn.Module) -> nn.Module:
    """The network of ``-log p(value | x)``: a posterior network as it is, a class-conditional density
    ``-log p(x | value)`` through Bayes' rule (``BayesPosterior``)."""
    return BayesPosterior(net) if _is_class_conditional_density(net) else net


@cache
def _posterior(name: str) -> nn.Module:
    """The shipped network of ``-log p(value | x)`` of family ``name`` (one object, shared by its values)."""
    return as_posterior(_network(name)[0])


@cache
def _prior_part(name: str) -> nn.Module:
    """One part of the prior: an unconditional energy, or the mixture of a family's class-conditional ones."""
    net = _network(name)[0]
    return ValueMixture(net) if _is_class_conditional_density(net) else net


PRIOR_PARTS = ("shapes.prior_layout", "shapes.color")
"""The networks whose energies add up to the prior (``weights/<part>.safetensors``): the layout, and the
colour family's chroma energies mixed over the colours."""


class PriorEnergy(nn.Module):
    """``E_prior(x, sigma) = sum_k net_k(x, sigma=sigma)`` of unconditional energies (a denoising energy, a
    ``ValueMixture``): ``(B,)``."""

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
    net = PriorEnergy([_prior_part(name) for name in PRIOR_PARTS])
    energy = FunctionEnergy(net, IMAGE_SHAPE, (0.0, 1.0), "shapes.prior", noise_conditional=True)
    energy.display_name = "shapes.prior"
    _decorate(energy, DEFAULT)
    energy.strata = strata(*strata_families())
    return energy


STRATA = ("shapes.color",)
"""The families the prior declares as mixtures by default (``composer.Strata``; see ``strata``)."""


def strata_families() -> tuple[str, ...]:
    """``$COMPOSER_SHAPES_STRATA`` (attributes, comma-separated, e.g. ``color,size``; ``none``), else ``STRATA``."""
    text = os.environ.get("COMPOSER_SHAPES_STRATA")
    if text is None:
        return STRATA
    if text.strip().lower() == "none":
        return ()
    families = tuple(f"shapes.{a.strip()}" for a in text.split(",") if a.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ComposerError(f"COMPOSER_SHAPES_STRATA={text!r}: give attributes among "
                            f"{', '.join(ATTRIBUTES)} (comma-separated) or 'none'")
    return families


def strata(*families: str) -> tuple[Strata, ...]:
    """``composer.Strata`` of ``families``, each value weighted as the world weights it (uniformly).

    The prior's colour part *is* the mixture ``(1/K) sum_c p(chroma | luma, c)`` (``ValueMixture``) and the
    layout experts cannot see colour, so for a composition that leaves colour free ``p(c | composition) = 1/K``
    exactly: declared by default, each colour gets its share of the chains (``composer.sampling.strata``).
    Size and position are uniform and independent of everything in the world, but the prior is one network,
    not a declared mixture over them: ``declare_strata("shapes.color", "shapes.size")`` stratifies free sizes
    too, at a cost in accuracy measured in the README (small objects are the model's weaker ones).
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ComposerError(f"unknown shapes families {unknown}; families: {', '.join(FAMILIES)}")
    return tuple(Strata(f, dict.fromkeys(ATTRIBUTES[FAMILIES[f]], 1.0), lambda value, f=f: make_value(f, value))
                 for f in families)


def declare_strata(*families: str) -> None:
    """Make the (cached) prior declare ``families`` as its strata (default ``STRATA``; none: no strata)."""
    prior().strata = strata(*families)


def _decorate(energy: Energy, recipe: Recipe) -> None:
    energy.sampling_recipe = recipe.as_kwargs()
    energy.sigmas = recipe.ladder()


def make_value(name: str, value: str, network: nn.Module | None = None, base: Energy | None = None
               ) -> ConditionalEnergy:
    """The expert of ``value`` of family ``name``: ``E_prior(x) - log p(value | x)``.

    Args:
        name, value: e.g. ``"shapes.color"``, ``"red"``.
        network: the family's network (default: the shipped one, cached): a posterior ``-log p(value | x)``,
            or a class-conditional ``-log p(x | value)`` (wrapped in ``BayesPosterior``; build the wrapper
            once, ``as_posterior(net)``, and pass it to every value to have them share one batched call).
        base: the prior (default: ``prior()``, cached).

    The energy carries ``family`` and ``value``, ``sigmas`` (the annealing ladder) and ``sampling_recipe``
    (keyword arguments of ``composer.sample``, from ``composer_shapes.recipe``).
    """
    attribute = FAMILIES[name]
    values = ATTRIBUTES[attribute]
    if value not in values:
        raise ComposerError(f"'{value}' is not a value of {name}; values: {', '.join(values)}")
    net = as_posterior(network) if network is not None else _posterior(name)
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
