"""Stratified sampling over a mixture a model declares: the right share of samples for each component.

A prior that is a mixture over the values of a concept family, ``p(x) = sum_v w_v p(x | v)``, is usually
written as one energy ``-log sum_v w_v exp(-E(x | v))``. Two things then go wrong when it is sampled
with Langevin dynamics: chains do not cross between components, so each component gets the share that
the initialisation and the first noisy steps happened to give it; and unless every ``E(. | v)`` is
normalised, the energy's own mixture weights are ``w_v Z_v``, not ``w_v``. Both are avoided by sampling
the mixture as it is defined: draw the component, then sample it.

A prior declares the mixture with the attribute ``strata`` (a ``Strata``, or a tuple of them for independent
families: the strata are then the combinations, weighted by the products of the weights): the family, its
weights and a function that builds the energy of ``family=value``. ``composer.sample`` of a composition
whose shared base (or which itself) declares strata, and which has **no term of that family** (the family is
free), gives ``round(n w_v)`` chains (largest remainder) to ``composition & family=value`` for each value, samples each
stratum with the composition's recipe and a seed derived from the run's, and returns the chains in one
seeded random order. This is exact for the family's marginal when the other terms of the composition do
not see the family (the shapes world's layout experts are colour-blind by construction): then
``p(v | composition) = w_v``. A composition that names the family (``red & circle``, ``~red & circle``) is
sampled as before. ``sample(..., stratify=False)`` turns it off.

    >>> allocate(10, [0.25, 0.25, 0.25, 0.25])
    [3, 3, 2, 2]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from composer.energy import Energy
from composer.errors import CompositionError


@dataclass(frozen=True)
class Strata:
    """A mixture over the values of ``family`` that an energy declares (its attribute ``strata``).

    Attributes:
        family: the concept family whose values are the components (e.g. ``"shapes.color"``).
        weights: value -> mixture weight (positive; normalised here).
        make: ``value -> Energy`` of ``family=value`` (in Bayes form over the declaring energy).
    """

    family: str
    weights: Mapping[str, float]
    make: Callable[[str], Energy] = field(compare=False)

    def __post_init__(self) -> None:
        if not self.weights:
            raise CompositionError(f"strata of {self.family}: no values")
        bad = {v: w for v, w in self.weights.items()
               if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0}
        if bad:
            raise CompositionError(f"strata of {self.family}: weights must be positive numbers, got {bad}")

    def shares(self) -> dict[str, float]:
        """The normalised weights."""
        total = float(sum(self.weights.values()))
        return {v: float(w) / total for v, w in self.weights.items()}


def allocate(n: int, weights: list[float]) -> list[int]:
    """``n`` chains over strata in proportion to ``weights`` (largest remainder; ties to the first)."""
    total = float(sum(weights))
    exact = [n * w / total for w in weights]
    counts = [int(math.floor(e)) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def declared(energy: Energy) -> tuple[Strata, ...]:
    """The strata ``energy`` declares (its attribute ``strata``: one ``Strata`` or a tuple), as a tuple."""
    strata = getattr(energy, "strata", None)
    if isinstance(strata, Strata):
        return (strata,)
    if isinstance(strata, (tuple, list)) and all(isinstance(s, Strata) for s in strata):
        return tuple(strata)
    return ()


def strata_of(energy: Energy) -> tuple[Strata, ...]:
    """The strata ``sample`` uses for ``energy``: those its shared base (or itself) declares whose family no
    term of the composition names (empty: sample in one run). A term names the family of its ``family``
    attribute (a concept value) and those of its ``families`` (a term conditioned on several families)."""
    from composer.algebra import split_base

    strata = declared(energy)
    if not strata:
        base, _ = split_base(energy)
        strata = declared(base) if base is not None else ()
    named: set[str] = set()
    for term in energy.walk():
        named.add(getattr(term, "family", None))
        named.update(getattr(term, "families", ()))  # a term that conditions on several families at once
    return tuple(s for s in strata if s.family not in named)


def combinations(strata: tuple[Strata, ...]) -> list[tuple[dict[str, str], float]]:
    """Every combination of values, ``({family: value}, weight)``, weights the products of the shares."""
    out: list[tuple[dict[str, str], float]] = [({}, 1.0)]
    for s in strata:
        out = [({**values, s.family: v}, w * share) for values, w in out for v, share in s.shares().items()]
    return out


def stratum_energy(energy: Energy, strata: tuple[Strata, ...], values: dict[str, str]) -> Energy:
    """``energy & family=value & ...`` (without ``energy`` when it is the declaring prior itself)."""
    from composer.algebra import product

    terms = [s.make(values[s.family]) for s in strata]
    if declared(energy):
        return terms[0] if len(terms) == 1 else product(*terms)
    return product(energy, *terms)


def stratum_seed(seed: int, index: int) -> int:
    """A seed for stratum ``index`` of a run seeded ``seed``, in ``[0, 2^63)``."""
    return (int(seed) * 1_000_003 + 7_919 * (index + 1)) % (2**63)


def merge(results: list[Any], counts: list[int], seed: int) -> Any:
    """One ``SampleResult`` from the strata's, chains in a random order seeded by ``seed``.

    Trace entries combine over strata (chain-weighted means, extremes, root mean square of ``grad_norm``),
    cut to the shortest stratum's trace; ``log_z`` is not defined for the whole and is ``None``.
    """
    from composer.sampling.driver import SampleResult

    n = sum(counts)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).to(results[0].x.device)
    x = torch.cat([r.x for r in results])[order]
    energy = None if any(r.energy is None for r in results) else torch.cat([r.energy for r in results])[order]
    steps_run = torch.cat([r.steps_run for r in results])[order.to(results[0].steps_run.device)]
    weights = [c / n for c in counts]
    trace: dict[str, Tensor] = {}
    for key in results[0].trace:
        if not all(key in r.trace for r in results):
            continue
        length = min(r.trace[key].shape[0] for r in results)
        rows = torch.stack([r.trace[key][:length].double() for r in results])
        w = torch.tensor(weights, dtype=torch.float64, device=rows.device)[:, None]
        if key.endswith("_min"):
            trace[key] = rows.amin(0)
        elif key.endswith("_max"):
            trace[key] = rows.amax(0)
        elif key == "grad_norm":
            trace[key] = (w * rows.square()).sum(0).sqrt()
        else:
            trace[key] = (w * rows).sum(0)
        trace[key] = trace[key].to(results[0].trace[key].dtype)
    first = results[0]
    return SampleResult(x=x, energy=energy, trace=trace, steps_run=steps_run, step_size=first.step_size,
                        warmup=first.warmup, sampler=first.sampler, seed=seed)
