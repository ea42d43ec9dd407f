"""The divergence guard: name the step, the chains and the expert that went non-finite.

The driver notices non-finite energies or gradients when it flushes its trace (every
``check_every`` steps), replays the chunk from its snapshot one checked step at a time up to the
first bad step, and calls ``diverged_error`` with the bad chains' states at that step. The
experts are the leaves of the composition tree (``Energy.children_energies``), evaluated through
the scopes (``.on(view)``) above them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from composer.algebra import Scoped
from composer.energy import call_energy
from composer.errors import SamplingDivergedError

View = Callable[[Tensor], Tensor]


def leaves(energy: nn.Module, view: View | None = None) -> Iterator[tuple[nn.Module, View | None]]:
    """Leaf experts of ``energy`` in tree order, each with the view of ``x`` it sees."""
    children = energy.children_energies() if hasattr(energy, "children_energies") else []
    if not children:
        yield energy, view
        return
    if isinstance(energy, Scoped):  # its child sees energy.view(x)
        inner = energy.view
        view = inner if view is None else (lambda x, outer=view, f=inner: f(outer(x)))
    for child in children:
        yield from leaves(child, view)


def _name(e: nn.Module) -> str:
    return e.formula() if hasattr(e, "formula") else type(e).__name__


def culprits(energy: nn.Module, x: Tensor, sigma: Any = None) -> tuple[list[str], str]:
    """Leaves whose energy (or, failing that, gradient) is non-finite at ``x: (k, *event)``.

    Returns:
        The leaf names in tree order and ``"energy"`` or ``"gradient"`` (what was non-finite).
    """
    found: list[str] = []
    with torch.no_grad():
        for leaf, view in leaves(energy):
            e = call_energy(leaf, view(x) if view is not None else x, sigma)
            if not bool(torch.isfinite(e).all()):
                found.append(_name(leaf))
    if found:
        return found, "energy"
    for leaf, view in leaves(energy):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            e = call_energy(leaf, view(xr) if view is not None else xr, sigma)
            (g,) = torch.autograd.grad(e.sum(), xr, allow_unused=True)
        if g is not None and not bool(torch.isfinite(g).all()):
            found.append(_name(leaf))
    return found, "gradient"


def diverged_error(
    energy: nn.Module,
    x: Tensor | None,
    sigma: Any,
    step: int | None,
    total: int,
    chains: Tensor,
    n_chains: int,
) -> SamplingDivergedError:
    """The error to raise: step, chains, and the first expert found non-finite.

    Args:
        energy: the composition being sampled.
        x: the states ``(k, *event)`` of the bad chains at the bad step, or ``None`` if unknown.
        sigma: the noise level at that step (noise-conditional energies).
        step: 0-based index of the first step with a non-finite value, ``None`` for the initial state.
        total: number of steps of the run.
        chains: ``(k,)`` indices of the bad chains in the original batch.
        n_chains: number of chains in the batch.
    """
    ids = chains.tolist()
    shown = ", ".join(str(i) for i in ids[:8]) + (", ..." if len(ids) > 8 else "")
    when = f"at step {step + 1} of {total}" if step is not None else "at initialisation (before step 1)"
    msg = f"sampling diverged {when}: non-finite energy or gradient in {len(ids)} of "
    msg += f"{n_chains} chains ({shown})"
    if x is not None:
        if not bool(torch.isfinite(x).all()):
            msg += "; the samples themselves became non-finite (the previous gradient step overflowed)"
        else:
            try:
                names, what = culprits(energy, x, sigma)
            except Exception:  # an expert that cannot even be evaluated there: say nothing more
                names, what = [], ""
            if names:
                more = f" (also: {', '.join(names[1:4])})" if len(names) > 1 else ""
                msg += f"; first expert with a non-finite {what}: {names[0]}{more}"
    if step is None:
        msg += ". Start the chains where every expert is finite (init=..., or a domain to draw them from)."
    else:
        msg += (
            ". Check that the composition is bounded below (each negation needs a stronger positive expert), "
            "or use a smaller step_size, clip_grad or clamp to a domain."
        )
    return SamplingDivergedError(msg)
