"""The ``shapes`` plugin: registers the shapes-world dataset.

Found through the entry point ``[project.entry-points.composer] shapes = "composer_shapes.plugin"``.
``composer dataset shapes -n N --split train|heldout|all --seed S --out FILE.npz`` and
``composer train`` reach the data through this registration.
"""

from __future__ import annotations

from collections.abc import Callable

import composer
from composer_shapes.data import load


@composer.hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    """Register dataset ``shapes``: ``load(n=10000, seed=0, split="train")`` (see ``composer_shapes.data``)."""
    register(
        "shapes",
        load,
        doc="the shapes world: 3x32x32 images of one coloured shape, split train|heldout|all "
        "(held-out pairs: red triangle, green circle, blue square)",
    )
