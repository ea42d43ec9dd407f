"""Per-sample scores of inputs under an energy (out-of-distribution detection) and their AUROC.

A score is high for inputs the energy finds unlikely. Kinds (``SCORES``):

- ``energy``: ``E(x, sigma)``; for a noise-conditional energy at the level ``sigma`` (default: the
  energy's own default, e.g. its concept-inference level).
- ``grad-norm``: ``|| grad_x E(x, sigma) ||``, how hard the energy pushes ``x`` (Grathwohl et al. 2019
  report it next to the energy).
- ``levels``: for noise-conditional energies, ``sum_i sigma_i^2 E(x, sigma_i)`` over a ladder of levels
  (``sigmas``): for a denoising energy ``|| x - D(x, sigma) ||^2 / 2 sigma^2`` it is the sum over scales
  of how far the denoiser moves ``x``, ``1/2 sum_i || x - D(x, sigma_i) ||^2``: fine levels see pixel
  statistics (noise), coarse ones global shape (constant images, flips).
- ``typicality``: how far ``E(x, sigma)`` lies from the energies of in-distribution ``reference`` inputs,
  on either side: ``|E(x) - median| / (1.4826 MAD)`` of the reference's energies (a robust z-score). An
  energy can fail as a likelihood in the other direction too: inputs simpler than the data (an empty canvas,
  a flat image) often get a *lower* energy than any real input (Nalisnick et al. 2019); a two-sided test
  of typicality flags them as well as the unlikely ones.

``auroc(in_scores, out_scores)`` is the probability that an out-of-distribution input scores higher than
an in-distribution one (ties count one half), the Mann-Whitney statistic::

    >>> auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 1.0]))
    0.875
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from composer.energy import Energy, call_energy
from composer.errors import ComposerError

SCORES = ("energy", "grad-norm", "levels", "typicality")
DEFAULT_LEVELS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The ladder of ``levels`` when none is given (images in ``[0, 1]``)."""


def score(energy: Energy, x: Tensor, kind: str = "energy", sigma: float | None = None,
          sigmas: Sequence[float] | None = None, batch: int = 500, progress: bool = False,
          reference: Tensor | None = None) -> Tensor:
    """Scores ``(N,)`` of inputs ``x: (N, *event_shape)`` (higher: less likely under ``energy``).

    Args:
        energy: any ``Energy`` (a composition too).
        x: the inputs, float (``uint8`` images are mapped to ``[0, 1]``).
        kind: one of ``SCORES``.
        sigma: noise level passed to noise-conditional energies (``energy``, ``grad-norm``, ``typicality``).
        sigmas: the levels of ``levels`` (default ``DEFAULT_LEVELS``).
        batch: inputs per evaluation.
        progress: show a tqdm bar.
        reference: in-distribution inputs ``(M, *event_shape)``, ``M >= 10``, for ``typicality`` (held out
            from the inputs scored).

    Raises:
        ComposerError: unknown kind, ``levels`` of an energy that is not noise-conditional, ``typicality``
            without a reference (or one whose energies do not vary), bad shapes.
    """
    if kind not in SCORES:
        raise ComposerError(f"unknown score '{kind}'; scores: {', '.join(SCORES)}")
    if kind == "levels" and not energy.noise_conditional:
        raise ComposerError(f"score 'levels' needs a noise-conditional energy; {energy.formula()} is not")
    if kind == "typicality":
        if reference is None:
            raise ComposerError("score 'typicality' needs reference inputs from the data (--reference FILE)")
        stats = typicality_reference(energy, reference, sigma, batch)
        return _typical(score(energy, x, "energy", sigma=sigma, batch=batch, progress=progress), stats)
    x = _as_inputs(energy, x)
    levels = [float(s) for s in (sigmas or DEFAULT_LEVELS)]
    out = []
    from tqdm import tqdm

    for i in tqdm(range(0, x.shape[0], batch), disable=not progress, desc=kind):
        xb = x[i:i + batch]
        if kind == "energy":
            with torch.no_grad():
                out.append(call_energy(energy, xb, sigma).detach())
        elif kind == "grad-norm":
            xb = xb.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(call_energy(energy, xb, sigma).sum(), xb)
            out.append(grad.flatten(1).norm(dim=1).detach())
        else:
            with torch.no_grad():
                out.append(sum(s * s * call_energy(energy, xb, s) for s in levels).detach())
    return torch.cat(out) if out else torch.zeros(0)


def typicality_reference(energy: Energy, reference: Tensor, sigma: float | None = None,
                         batch: int = 500) -> tuple[Tensor, Tensor]:
    """``(median, 1.4826 MAD)`` of the energies of ``reference: (M, *event_shape)``, as 0-d tensors.

    Raises:
        ComposerError: fewer than 10 reference inputs, or energies that do not vary.
    """
    if len(reference) < 10:
        raise ComposerError(f"score 'typicality' needs at least 10 reference inputs, got {len(reference)}")
    ref = score(energy, reference, "energy", sigma=sigma, batch=batch)
    centre = ref.median()
    spread = 1.4826 * (ref - centre).abs().median()
    if not (torch.isfinite(spread) and spread > 0):
        raise ComposerError("score 'typicality': the reference inputs' energies do not vary (spread 0)")
    return centre, spread


def _typical(energies: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:
    """The robust z-score ``|E - median| / spread`` of ``energies`` against ``typicality_reference`` stats."""
    centre, spread = stats
    return ((energies - centre) / spread).abs()


def _scorer(energy: Energy, name: str, spec: dict[str, Any], reference: Tensor | None
            ) -> Callable[[Tensor], Tensor]:
    """``x -> scores`` for one entry of ``auroc_table``'s specs (a typicality reference evaluated once)."""
    if spec.get("kind") != "typicality":
        return lambda x: score(energy, x, **spec)
    if reference is None:
        raise ComposerError(f"score '{name}' (typicality) needs reference inputs")
    stats = typicality_reference(energy, reference, spec.get("sigma"))
    as_energy = {**spec, "kind": "energy"}
    return lambda x: _typical(score(energy, x, **as_energy), stats)


def _as_inputs(energy: Energy, x: Tensor) -> Tensor:
    """``x`` as float (``uint8`` images mapped to ``[0, 1]``), checked against the energy's event shape."""
    x = torch.as_tensor(x)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    shape = energy.event_shape
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ComposerError(f"inputs of shape {tuple(x.shape[1:])} do not match the energy's {tuple(shape)}")
    return x


def auroc_table(energy: Energy, x_in: Tensor, sets: dict[str, Tensor], specs: dict[str, dict[str, Any]],
                reference: Tensor | None = None, echo: Callable[[str], None] | None = None
                ) -> dict[str, dict[str, float]]:
    """AUROC of in-distribution ``x_in`` against each OOD set, for each score: ``{score: {set: auroc}}``.

    Args:
        energy: the energy scored.
        x_in: in-distribution inputs ``(N, *event_shape)``.
        sets: name -> out-of-distribution inputs ``(M, *event_shape)``.
        specs: score name -> ``score`` keyword arguments (``kind``, ``sigma``, ``sigmas``).
        reference: in-distribution inputs other than ``x_in``, passed to the ``typicality`` scores.
        echo: called with one line per score as it finishes.
    """
    table: dict[str, dict[str, float]] = {}
    for name, spec in specs.items():
        t0 = time.time()
        scored = _scorer(energy, name, spec, reference)
        s_in = scored(x_in)
        table[name] = {k: round(auroc(s_in, scored(v)), 4) for k, v in sets.items()}
        if echo:
            echo(f"{name:16s} " + "  ".join(f"{k} {v:.3f}" for k, v in table[name].items())
                 + f"  ({time.time() - t0:.0f} s)")
    return table


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    """An ``auroc_table`` as Markdown (one row per score, one column per OOD set)."""
    sets = list(next(iter(table.values()), {}))
    lines = ["| score | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[s]:.3f}" for s in sets) + " |")
    return "\n".join(lines)


def auroc(in_scores: Tensor, out_scores: Tensor) -> float:
    """AUROC of separating ``out_scores`` (positives, expected higher) from ``in_scores``; ties count 1/2."""
    a = torch.as_tensor(in_scores, dtype=torch.float64).flatten()
    b = torch.as_tensor(out_scores, dtype=torch.float64).flatten()
    if a.numel() == 0 or b.numel() == 0:
        raise ComposerError("AUROC needs at least one score on each side")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ComposerError("AUROC of non-finite scores")
    both = torch.cat([a, b])
    order = torch.argsort(both, stable=True)
    ranks = torch.empty_like(both)
    sorted_vals = both[order]
    # average ranks of ties
    uniq, inverse, counts = torch.unique(sorted_vals, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    r_pos = ranks[a.numel():].sum().item()
    n_pos, n_neg = b.numel(), a.numel()
    value = (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(value) if math.isfinite(value) else float("nan")


