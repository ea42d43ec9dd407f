"""The ``toy`` plugin: registers the analytic experts of ``composer_toy.experts``.

Found through the entry point ``[project.entry-points.composer] toy = "composer_toy.plugin"``.
"""

from __future__ import annotations

from collections.abc import Callable

import composer
from composer_toy.experts import EXPERTS


@composer.hookimpl
def register_experts(register: Callable[..., None]) -> None:
    """Register ``toy.gaussian``, ``toy.mixture``, ``toy.ring``, ``toy.moons``, ``toy.box``,
    ``toy.halfspace`` and ``toy.student_t`` (each factory is the expert's class)."""
    for name, factory in EXPERTS.items():
        register(name, factory)
