"""The fashion prior and the concept family ``fashion.class``, loaded from the shipped weights.

Every value is in Bayes form (``composer.ConditionalEnergy`` with a ``base``)::

    E(x | class = c, sigma) = E_prior(x, sigma) - g log p_sigma(c | x)

- ``prior()`` (expert ``fashion.prior``): the denoising energy of a U-Net trained with DSM on the train split
  (``weights/prior.safetensors``, ``configs/prior.toml``);
- ``fashion.class`` (values ``tshirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, boot``):
  a noise-conditional classifier trained with the discriminative objective (``weights/class.safetensors``,
  ``configs/class.toml``), ``g = GUIDANCE``.

Compositions count the shared prior once. The weights folder can be replaced (candidate weights, tests) with
``$COMPOSER_FASHION_WEIGHTS``; loading never executes code from a file.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import torch
from torch import nn

from composer import ComposerError, ConditionalEnergy, Energy, FunctionEnergy
from composer_fashion.data import CLASSES
from composer_fashion.nets import IMAGE_SHAPE
from composer_fashion.recipe import DEFAULT

WEIGHTS = Path(__file__).parent / "weights"
FAMILY = "fashion.class"
GUIDANCE = 10.0
"""Guidance ``g`` of the class posterior (``composer.ConditionalEnergy``'s ``guidance``): see the README."""
DOC = "Fashion-MNIST class: prior - g log p(class | x) (noise-conditional classifier)"


def weights_dir() -> Path:
    """``$COMPOSER_FASHION_WEIGHTS`` if set, else the shipped ``weights`` folder."""
    env = os.environ.get("COMPOSER_FASHION_WEIGHTS")
    return Path(env) if env else WEIGHTS


@cache
def load_network(name: str, folder: str | None = None) -> nn.Module:
    """The network of ``weights/<name>.safetensors`` (a file ``composer train`` exported), eval mode."""
    from composer.training.checkpoint import network_from_checkpoint

    path = Path(folder or weights_dir()) / f"{name}.safetensors"
    if not path.is_file():
        raise ComposerError(f"fashion weights not found: {path}")
    net, _ = network_from_checkpoint(path)
    return net.eval().requires_grad_(False)


def _decorate(energy: Energy) -> Energy:
    energy.sampling_recipe = DEFAULT.as_kwargs()
    energy.sigmas = DEFAULT.ladder()
    return energy


@cache
def prior() -> Energy:
    """The shared prior ``p(x)`` (one cached object, so compositions count it once)."""
    energy = FunctionEnergy(load_network("prior"), IMAGE_SHAPE, (0.0, 1.0), "fashion.prior", noise_conditional=True)
    energy.display_name = "fashion.prior"
    return _decorate(energy)


def make_value(value: str, guidance: float | None = None) -> ConditionalEnergy:
    """The expert ``fashion.class=value``: ``E_prior - g log p(value | x)``."""
    if value not in CLASSES:
        raise ComposerError(f"'{value}' is not a value of {FAMILY}; values: {', '.join(CLASSES)}")
    energy = ConditionalEnergy(load_network("class"), torch.tensor(CLASSES.index(value)), IMAGE_SHAPE, (0.0, 1.0),
                               f"{FAMILY}={value}", noise_conditional=True, base=prior(),
                               guidance=GUIDANCE if guidance is None else float(guidance))
    energy.family, energy.value = FAMILY, value
    return _decorate(energy)


def posterior() -> nn.Module:
    """The class network: ``energies_all(x, sigma) -> (B, 10)`` of ``-log p_sigma(c | x)``."""
    return load_network("class")


