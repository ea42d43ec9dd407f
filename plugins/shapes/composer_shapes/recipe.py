"""Sampling recipes of the shapes experts: predictor-corrector annealing over a geometric noise ladder.

A ``Recipe`` is the set of ``composer.sample`` keyword arguments that turns a composition of
shapes experts into images: start from ``0.5 + sigma_max * N(0, 1)`` (the noised data at the top
level), run ``steps_per_level`` unadjusted Langevin steps (the corrector) at each of ``levels`` noise
levels from ``sigma_max`` down to ``sigma_min`` with step ``step_factor * sigma_i^2`` (noise
``sqrt(2 * step)``), move between levels with the ``ddim`` predictor (which keeps the chains' noise
matched to the level; plain annealed Langevin with few steps lets chains lag behind the ladder and
stall as noise images), then clamp to ``[0, 1]``. Every expert carries its family's recipe as the
attribute ``sampling_recipe`` (a dict of ``composer.sample`` keyword arguments) and its ladder as
``sigmas``; ``composer.sample`` finds the recipe of any composition, and ``sample`` below applies it
with overrides and clamps::

    >>> r = Recipe(levels=4, steps_per_level=2)
    >>> [round(s, 3) for s in r.ladder()], r.as_kwargs()["steps"]
    ([20.0, 1.474, 0.109, 0.008], 8)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from composer import ComposerError, Energy
from composer.sampling.schedules import geometric_ladder


@dataclass(frozen=True)
class Recipe:
    """Annealed-Langevin recipe.

    Attributes:
        sigma_max, sigma_min: top and bottom of the geometric noise ladder.
        levels: number of noise levels.
        steps_per_level: Langevin steps at each level.
        step_factor: the step at level ``i`` is ``step_factor * sigma_i^2``.
        sampler: kernel of the shared sampler.
        predictor: the move between levels (``composer.sample``'s ``predictor``): ``"ddim"`` keeps the
            chains' noise matched to the level; ``None`` is plain annealed Langevin.
    """

    sigma_max: float = 20.0
    sigma_min: float = 0.008
    levels: int = 30
    steps_per_level: int = 2
    step_factor: float = 0.3
    sampler: str = "langevin"
    predictor: str | None = "ddim"

    def ladder(self) -> list[float]:
        """The noise levels, largest first."""
        return geometric_ladder(self.sigma_max, self.sigma_min, self.levels)

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``composer.sample``."""
        return {
            "sigmas": self.ladder(),
            "steps": self.levels * self.steps_per_level,
            "step_size": self.step_factor * self.sigma_min**2,
            "sampler": self.sampler,
            "predictor": self.predictor,
            "noise": "exact",
            "clamp": False,
            "init": GaussianInit(self.sigma_max),
        }

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (unknown names are a ``ComposerError``)."""
        known = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ComposerError(f"unknown recipe setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)


class GaussianInit:
    """Initial chains ``0.5 + scale * N(0, 1)`` of shape ``(n, 3, 32, 32)`` (the top noise level)."""

    def __init__(self, scale: float, shape: tuple[int, ...] = (3, 32, 32)):
        self.scale, self.shape = float(scale), tuple(shape)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = generator.device if generator is not None else "cpu"
        return 0.5 + self.scale * torch.randn((n, *self.shape), generator=generator, device=device)

    def __repr__(self) -> str:
        return f"GaussianInit(0.5 + {self.scale:g} * N(0, 1))"


DEFAULT = Recipe()
FAMILY_RECIPES: dict[str, Recipe] = {}
"""Per-family overrides of ``DEFAULT`` (none needed so far: one ladder serves every family)."""


def recipe_for_family(name: str) -> Recipe:
    """The recipe of concept family ``name``."""
    return FAMILY_RECIPES.get(name, DEFAULT)


def sample(energy: Energy, n: int = 64, seed: int = 0, progress: bool = False, **overrides: Any):
    """Sample a composition of shapes experts with its recipe; ``overrides`` replace recipe entries.

    Returns:
        The ``composer.sampling.SampleResult`` with ``x`` clamped to ``[0, 1]``: ``(n, 3, 32, 32)``.
    """
    from composer.sampling import sample as draw
    from composer.sampling.recipe import recipe_of

    recipe = True if recipe_of(energy)[0] else DEFAULT.as_kwargs()  # the experts' recipe, else the default
    result = draw(energy, n=n, seed=seed, progress=progress, recipe=recipe, **overrides)
    result.x = result.x.clamp(0.0, 1.0)
    return result
