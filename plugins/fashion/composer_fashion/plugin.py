"""The ``fashion`` plugin: dataset ``fashion``, networks, the prior, the family ``fashion.class``, commands.

Found through the entry point ``[project.entry-points.composer] fashion = "composer_fashion.plugin"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import composer
from composer_fashion.data import load


@composer.hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    """Register dataset ``fashion``: ``load(split="train", n=None, root=None)``."""
    register("fashion", load, doc="Fashion-MNIST: 1x28x28 uint8 images, split train|test, labels = the 10 classes "
                                  "(files from apt-get install dataset-fashion-mnist or $COMPOSER_FASHION_DIR)")


@composer.hookimpl
def register_networks(register: Callable[..., None]) -> None:
    """Register the trainable architectures (``composer_fashion.nets``)."""
    from composer_fashion.nets import DenoisingUNet, NoisyClassifier

    register("fashion_unet", DenoisingUNet, doc="denoising energy of a small U-Net on 1x28x28 images (the prior)")
    register("fashion_posterior", NoisyClassifier, doc="noise-conditional -log p(class | x), FiLM CNN on 1x28x28")


@composer.hookimpl
def register_experts(register: Callable[..., None]) -> None:
    """Register ``fashion.prior``, the unconditional prior every class value shares."""

    def fashion_prior() -> composer.Energy:
        """p(x) of Fashion-MNIST (train split): denoising energy of a U-Net, trained with DSM"""
        from composer_fashion.experts import prior

        return prior()

    register("fashion.prior", fashion_prior, doc=fashion_prior.__doc__)


@composer.hookimpl
def register_concepts(register: Callable[..., None]) -> None:
    """Register the family ``fashion.class``; its weights load on first use."""
    from composer_fashion.data import CLASSES
    from composer_fashion.experts import DOC, make_value

    def make(value: str) -> composer.Energy:
        return make_value(value)

    register("fashion.class", list(CLASSES), make, doc=DOC)


@composer.hookimpl
def register_commands(cli: Any) -> None:
    """Add ``composer eval fashion`` and ``composer ood fashion``."""
    from composer.cli import plugin_group
    from composer_fashion.evaluate import eval_fashion
    from composer_fashion.ood import ood_command

    plugin_group(cli, "eval").add_command(eval_fashion)
    plugin_group(cli, "ood").add_command(ood_command)
