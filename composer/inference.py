"""Energy-based inference: the value of a concept family that best explains each input.

``infer_concept`` evaluates every value's energy on the inputs and returns the argmin
(energy-based classification). Values in Bayes form over one shared base evaluate the base
once per input (it is the same for every value and cannot change the argmin).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from composer.algebra import split_base
from composer.energy import call_energy
from composer.errors import ComposerError
from composer.registry import Registry


@torch.no_grad()
def concept_energies(
    registry: Registry, family: str, x: Tensor, sigma: Any = None, batch_size: int = 512
) -> tuple[list[str], Tensor]:
    """Energies of every value of ``family`` on ``x``.

    Args:
        registry: where the family is registered.
        family: concept family name, e.g. ``"shapes.color"``.
        x: inputs ``(N, *event_shape)``.
        sigma: noise level passed to noise-conditional experts (their smallest, typically).
        batch_size: inputs per forward pass.

    Returns:
        ``(values, energies)`` with ``energies`` of shape ``(N, len(values))``.
    """
    info = registry.concept(family)
    experts = [registry.make_concept(family, v) for v in info.values]
    shape = experts[0].event_shape
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ComposerError(
            f"inputs of shape {tuple(x.shape[1:])} do not match the event shape {tuple(shape)} of {family}"
        )
    base, parts = _shared_base(experts)
    out = []
    for chunk in x.split(batch_size):
        e = torch.stack([call_energy(p, chunk, sigma) for p in parts], dim=1)
        out.append(e if base is None else e + call_energy(base, chunk, sigma)[:, None])
    return list(info.values), torch.cat(out)


def _shared_base(experts: list) -> tuple[Any, list]:
    """``(base, likelihood parts)`` when every value splits off the same base, else ``(None, experts)``."""
    split = [split_base(e) for e in experts]
    base = split[0][0]
    if base is None or any(b is not base for b, _ in split):
        return None, experts
    return base, [p for _, p in split]


def infer_concept(registry: Registry, family: str, x: Tensor, sigma: Any = None) -> tuple[list[str], Tensor]:
    """The value of lowest energy for each input: ``(values, indices (N,))``."""
    values, energies = concept_energies(registry, family, x, sigma)
    return values, energies.argmin(dim=1)
