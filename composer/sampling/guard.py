"""The sampler's guard: no wrong samples with exit 0.

- **Non-finite values**: the driver notices non-finite energies or gradients when it flushes its
  trace (every ``check_every`` steps), replays the chunk from its snapshot one checked step at a time
  up to the first bad step, and calls ``diverged_error`` with the bad chains' states at that step.
- **Unbounded compositions**, before sampling (``check_bounded``): where the algebra says it can
  happen (a negation in the tree) and no domain keeps the chains in a box, a probe along rays from
  the origin looks for an energy that keeps falling faster and faster.
- **Runs gone wrong while finite**, after sampling, from the trace (``check_run``): Metropolis
  acceptance collapsed, energies exploding, or an energy constant everywhere (no distribution).
- **Broken experts**: ``naming_experts`` turns an expert's exception into an error naming it;
  ``check_inputs`` refuses inputs of the wrong dtype, shape, or outside the experts' domain.

False positives are worse than misses: each test's thresholds are documented where it is defined.
The experts are the leaves of the composition tree (``Energy.children_energies``), evaluated through
the scopes (``.on(view)``) above them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from composer.algebra import Negation, Scoped
from composer.energy import call_energy
from composer.errors import ComposerError, CompositionError, SamplingDivergedError, UnboundedEnergyError

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


# -- checks before the run ----------------------------------------------------------------------------
def check_experts(energy: nn.Module, x: Tensor, sigma: Any = None) -> None:
    """Evaluate every leaf expert on a few chains ``x: (k, *event)``; name the one that fails.

    A plugin's energy that raises (``KeyError``...) or returns anything but one energy per input
    (a scalar would be broadcast silently inside a product) is a ``CompositionError`` naming the expert.
    Costs one forward pass of each leaf on ``k`` inputs, once per run.
    """
    k = x.shape[0]
    with torch.no_grad():
        for leaf, view in leaves(energy):
            try:
                e = call_energy(leaf, view(x) if view is not None else x, sigma)
            except ComposerError:
                raise
            except Exception as exc:  # a plugin's bug: say which expert, not "internal error"
                raise CompositionError(
                    f"expert {_name(leaf)} failed on inputs of shape {tuple(x.shape[1:])}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(e, Tensor) or tuple(e.shape) != (k,):
                got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
                raise CompositionError(
                    f"expert {_name(leaf)} returned energies of shape {got} for {k} inputs; an expert must "
                    f"return one energy per input, shape ({k},)"
                )


@contextlib.contextmanager
def naming_experts(energy: nn.Module, x: Tensor, sigma: Any = None) -> Iterator[None]:
    """Run the block; if it fails with an unexpected exception, find the leaf expert that fails on
    ``x`` and raise ``check_experts``' error naming it instead (costs nothing unless it fails)."""
    try:
        yield
    except ComposerError:
        raise
    except Exception as exc:
        try:
            check_experts(energy, x, sigma)
        except CompositionError as named:
            raise named from exc
        raise


def has_negation(energy: nn.Module) -> bool:
    """Whether a negation (``~b``, a negative product coefficient or weight) appears anywhere in the tree."""
    if isinstance(energy, Negation) or any(c < 0 for c in getattr(energy, "coefficients", ())):
        return True
    if isinstance(getattr(energy, "weight", None), (int, float)) and energy.weight < 0:
        return True
    children = energy.children_energies() if hasattr(energy, "children_energies") else []
    return any(has_negation(c) for c in children)


PROBE_RADII = (1e1, 1e2, 1e3, 1e4)
"""Distances from the origin at which ``unbounded_direction`` evaluates the energy."""


def unbounded_direction(energy: nn.Module, event_shape: Any, device: Any, dtype: torch.dtype,
                        directions: int = 16) -> tuple[Tensor, list[float]] | None:
    """A direction along which the energy falls without bound, with its energies, or ``None``.

    Evaluates ``E(r u)`` for ``r`` in ``PROBE_RADII`` along the ``±`` coordinate axes and ``directions``
    fixed random unit vectors (one batch of at most ``4 (2 d + directions)`` points). A direction
    counts only when its energy falls strictly from each radius to the next AND the fall does not
    slow down (each drop at least as large as the previous one) AND the fall from the first radius to
    the last is more than 1000 units. A function bounded below cannot keep that up: its falls must
    shrink toward its infimum, so once the drops over radii 10, 100, 1000, 10000 grow, the energy
    falls at least linearly in ``r`` (a negation stronger than every positive expert gives a fall
    ``~ c r^2``, drops growing 100-fold per radius). Non-finite values never count. Only run for
    compositions with a negation (products and mixtures of experts bounded below are bounded below)
    and no domain (a box keeps the chains where the energy is finite).
    """
    d = 1
    for s in event_shape:
        d *= int(s)
    if d > 256:  # an image-sized event without a domain: the axes alone would be a batch of 8 d events
        return None
    g = torch.Generator().manual_seed(0)
    axes = torch.eye(d)
    rand = torch.randn(directions, d, generator=g)
    dirs = torch.cat([axes, -axes, rand / rand.norm(dim=1, keepdim=True)])
    radii = torch.tensor(PROBE_RADII)
    pts = (radii[None, :, None] * dirs[:, None, :]).reshape(-1, *event_shape).to(device=device, dtype=dtype)
    with torch.no_grad():
        try:
            e = call_energy(energy, pts).reshape(dirs.shape[0], len(PROBE_RADII)).double().cpu()
        except Exception:  # an energy that cannot be evaluated that far out: no verdict
            return None
    drops = e[:, :-1] - e[:, 1:]  # (D, 3), positive when the energy falls outward
    ok = torch.isfinite(e).all(dim=1) & (drops > 0).all(dim=1) & (drops[:, 1:] >= drops[:, :-1]).all(dim=1)
    ok &= (e[:, 0] - e[:, -1]) > 1000.0
    if not bool(ok.any()):
        return None
    i = int((e[:, -1] - e[:, 0]).masked_fill(~ok, float("inf")).argmin())
    return dirs[i], e[i].tolist()


def check_bounded(energy: nn.Module, event_shape: Any, domain: Any, device: Any, dtype: torch.dtype,
                  allow: bool = False) -> None:
    """Refuse (or, with ``allow``, warn about) a composition whose energy falls without bound.

    Checked only where the algebra says it can happen (a negation in the tree) and the chains are not
    kept in a box (no ``domain``); see ``unbounded_direction`` for the test and its thresholds.

    Raises:
        UnboundedEnergyError: unless ``allow``; then a ``UserWarning`` with the same message.
    """
    if domain is not None or event_shape is None or not has_negation(energy):
        return
    found = unbounded_direction(energy, tuple(event_shape), device, dtype)
    if found is None:
        return
    _, values = found
    shown = ", ".join(f"E(r={r:g})={v:.3g}" for r, v in zip(PROBE_RADII, values))
    msg = (f"the composition is unbounded below: its energy falls without limit away from the origin ({shown}), "
           "so there is no distribution to sample (each negation needs a stronger positive expert); "
           "pass --allow-unbounded (allow_unbounded=True) to sample anyway")
    if allow:
        warnings.warn(msg, UserWarning, stacklevel=3)
        return
    raise UnboundedEnergyError(msg)


# -- checks after the run -------------------------------------------------------------------------------
MIN_ACCEPTANCE = 0.01
"""Mean acceptance (after the warm-up) below which a Metropolis run is an error: at 1% a chain moves on
about one step in a hundred, so a typical run leaves the samples at their initialisation."""

EXPLOSION_FACTOR = 1000.0
"""How many times its initial magnitude the mean energy must have grown, with accelerating growth,
before ``check_run`` calls it an explosion."""


def final_step_size(runner: Any, plan: Any) -> float:
    """The step size of a run's last step (after adaptation), ``0.0`` for a run of no steps."""
    if plan.total < 1:
        return 0.0
    scale = runner.scale if isinstance(runner.scale, float) else float(runner.scale)
    return scale * float(plan.step_sizes[plan.total - 1])


def _is_constant(values: Any) -> bool:
    if isinstance(values, Tensor):
        return values.numel() == 0 or bool((values == values.reshape(-1)[0]).all())
    if hasattr(values, "value") and hasattr(values, "n"):  # schedules.Repeat
        return True
    return len(set(float(v) for v in values)) <= 1


def check_run(
    trace: dict[str, Tensor],
    warmup: int,
    kernel_name: str,
    step_size: float,
    temperatures: Any,
    sigmas: Any,
    domain_used: bool,
    masked: bool,
) -> None:
    """Fail a run that went wrong while staying finite (reads the trace once, on the host).

    Three tests, each designed never to fire on a run that is merely slow to converge:

    - **acceptance collapse** (Metropolis kernels): the mean acceptance after the warm-up is below
      ``MIN_ACCEPTANCE`` over at least 20 steps. The message gives the (adapted) step size.
    - **explosion** (constant temperature, no noise ladder, at least 40 steps after the warm-up):
      the mean energy of the four quarters of the run rises strictly, each rise at least twice the
      previous one, and the last quarter is more than ``EXPLOSION_FACTOR`` times ``1 + |first|``.
      Converging runs fall or level off, and a chain at equilibrium fluctuates around a constant, so
      growth that accelerates over three orders of magnitude is the unstable regime of a too-large
      step (``x <- (1 - s) x`` with ``|1 - s| > 1`` on a quadratic), never a property of the target.
    - **no distribution**: every traced energy is the same number and every gradient exactly zero
      (e.g. ``g & ~g``) with no domain to make that a uniform distribution: the chains did a
      random walk.

    Raises:
        SamplingDivergedError: with one line naming the problem and the remedy.
    """
    if not trace:  # nothing recorded (trace=False)
        return
    acc = trace.get("acceptance")
    if acc is not None and acc.numel() - warmup >= 20:
        mean = float(acc[warmup:].double().mean())
        if mean < MIN_ACCEPTANCE:
            raise SamplingDivergedError(
                f"{kernel_name} acceptance collapsed to {100 * mean:.2g}% (step size {step_size:.4g}"
                f"{' after adaptation' if warmup else ''}): the chains stayed where they started; use a smaller "
                "step size (--step-size) or a warm-up that adapts it"
            )
    energy = trace.get("energy_mean")
    if energy is None:
        return
    post = energy[warmup:].double()
    post = post[torch.isfinite(post)]
    if post.numel() >= 40 and sigmas is None and _is_constant(temperatures):
        q = post.numel() // 4
        m = [float(post[i * q:(i + 1) * q].mean()) for i in range(4)]
        rises = [b - a for a, b in zip(m, m[1:])]
        if all(r > 0 for r in rises) and rises[1] >= 2 * rises[0] and rises[2] >= 2 * rises[1] \
                and m[3] > EXPLOSION_FACTOR * (1 + abs(m[0])):
            raise SamplingDivergedError(
                f"sampling exploded: the mean energy grew from {m[0]:.3g} to {m[3]:.3g} with accelerating growth "
                f"(step size {step_size:.4g} is beyond the stable range); use a smaller step size (--step-size), "
                "clip_grad or a domain"
            )
    grad = trace.get("grad_norm")
    lo, hi = trace.get("energy_min"), trace.get("energy_max")
    if (not domain_used and not masked and grad is not None and lo is not None and hi is not None
            and grad.numel() > 0):
        g = grad[torch.isfinite(grad)]
        if g.numel() == grad.numel() and bool((g == 0).all()) and bool((lo == hi).all()) \
                and bool((lo == lo[0]).all()):
            raise SamplingDivergedError(
                f"the composition's energy is the constant {float(lo[0]):g} with zero gradient wherever the chains "
                "went: it defines no distribution (a negation cancels its positive expert?), so the samples are a "
                "random walk"
            )


# -- inputs to evaluate ---------------------------------------------------------------------------------
def check_inputs(array: Any, event_shape: Any, domain: Any, where: str) -> Tensor:
    """Inputs an expert can be evaluated on: ``(N, *event_shape)`` float32, finite, inside its domain.

    Args:
        array: a NumPy array (or anything ``numpy.asarray`` takes) from a user's file.
        event_shape: the expert's event shape (``None``: any).
        domain: the expert's box ``(low, high)`` or ``None``.
        where: the file name, for messages.

    Raises:
        CompositionError: wrong dtype (strings, objects, integers such as 8-bit images), wrong shape,
            non-finite values, or values outside the domain (beyond a tolerance of 1% of its width).
    """
    import numpy as np

    a = np.asarray(array)
    if a.dtype.kind in "iub":
        low_high = f"[{a.min()}, {a.max()}]" if a.size else "(empty)"
        raise CompositionError(
            f"'{where}' holds {a.dtype} values {low_high}; experts take floating-point inputs "
            "(8-bit images: divide by 255 to get values in [0, 1])"
        )
    if a.dtype.kind not in "f":
        raise CompositionError(f"'{where}' holds {a.dtype} values; experts take floating-point arrays")
    if a.ndim == 0 or (event_shape is not None and tuple(a.shape[1:]) != tuple(event_shape)):
        want = f"(N, {', '.join(str(s) for s in event_shape)})" if event_shape is not None else "(N, ...)"
        raise CompositionError(f"'{where}' holds an array of shape {tuple(a.shape)}; expected {want}")
    x = torch.as_tensor(a, dtype=torch.float32)
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        ids = bad.nonzero().flatten().tolist()
        shown = ", ".join(str(i) for i in ids[:8]) + (", ..." if len(ids) > 8 else "")
        raise CompositionError(f"'{where}' has NaN or infinite values in {len(ids)} of {x.shape[0]} inputs ({shown})")
    if domain is not None and x.numel():
        low, high = (torch.as_tensor(d, dtype=torch.float32).cpu() for d in domain)
        tol = 0.01 * (high - low).abs()
        outside = (x < low - tol) | (x > high + tol)
        if bool(outside.any()):
            raise CompositionError(
                f"'{where}' has values in [{float(x.min()):.4g}, {float(x.max()):.4g}], outside the experts' domain "
                f"[{float(low.min()):.4g}, {float(high.max()):.4g}]; rescale the inputs"
            )
    return x
