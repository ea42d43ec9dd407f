"""The sampling recipe of the fashion experts: predictor-corrector annealing over a geometric noise ladder.

Chains start at ``0.5 + sigma_max N(0, 1)`` (the noised data at the top level), run ``steps_per_level``
unadjusted Langevin steps (step ``step_factor sigma_i^2``, exact noise) at each of ``levels`` levels from
``sigma_max`` to ``sigma_min``, and move between levels with the ``ddim`` predictor. Every fashion expert
carries it as ``sampling_recipe`` (``composer.sample`` keyword arguments)::

    >>> r = Recipe(levels=3)
    >>> [round(s, 3) for s in r.ladder()], r.as_kwargs()["steps"]
    ([10.0, 0.283, 0.008], 6)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from composer.sampling.schedules import geometric_ladder
from composer_fashion.nets import IMAGE_SHAPE


@dataclass(frozen=True)
class Recipe:
    """Annealed-Langevin recipe (see the module docstring)."""

    sigma_max: float = 10.0
    sigma_min: float = 0.008
    levels: int = 30
    steps_per_level: int = 2
    step_factor: float = 0.3
    predictor: str | None = "ddim"

    def ladder(self) -> list[float]:
        """The noise levels, largest first."""
        return geometric_ladder(self.sigma_max, self.sigma_min, self.levels)

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``composer.sample``."""
        return {"sigmas": self.ladder(), "steps": self.levels * self.steps_per_level,
                "step_size": self.step_factor * self.sigma_min**2, "sampler": "langevin",
                "predictor": self.predictor, "noise": "exact", "clamp": False, "init": GaussianInit(self.sigma_max)}


class GaussianInit:
    """Initial chains ``0.5 + scale N(0, 1)`` of shape ``(n, 1, 28, 28)`` (the top noise level)."""

    def __init__(self, scale: float):
        self.scale = float(scale)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = generator.device if generator is not None else "cpu"
        return 0.5 + self.scale * torch.randn((n, *IMAGE_SHAPE), generator=generator, device=device)

    def __repr__(self) -> str:
        return f"GaussianInit(0.5 + {self.scale:g} * N(0, 1))"


DEFAULT = Recipe()


def sample(energy: Any, n: int = 64, seed: int = 0, progress: bool = False, **overrides: Any):
    """Sample a composition of fashion experts with its recipe, clamped to ``[0, 1]``: ``result.x (n, 1, 28, 28)``."""
    from composer.sampling import sample as draw

    result = draw(energy, n=n, seed=seed, progress=progress, recipe=True, **overrides)
    result.x = result.x.detach().clamp(0.0, 1.0)
    return result
