"""Metropolis-adjusted Langevin (MALA) with a per-chain accept/reject.

Target density ``pi(x) ∝ exp(-E(x) / T)``. Proposal
``x' = x - s * d(x) + sqrt(2 s T) * xi`` where ``d`` is the (optionally clipped, masked) energy
gradient, so ``q(x' | x) ∝ exp(-||x' - x + s d(x)||^2 / (4 s T))``, and each chain accepts with
probability ``min(1, pi(x') q(x | x') / (pi(x) q(x' | x)))``. Clipping keeps the chain exact
because ``d`` is a deterministic function of the position and the same ``d`` enters both
proposal densities. Observed (masked) entries do not move and contribute nothing to either
density. Proposals outside the domain, or with a NaN or ``+inf`` energy, are rejected: the
kernel samples the density truncated to the domain.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from composer.sampling.langevin import LangevinState, StepInfo, init_state
from composer.sampling.target import Target, as_target, axpy, axpy_, batch_view, sqrt


def squared_norm(v: Tensor) -> Tensor:
    """Per-chain squared L2 norm ``(B,)`` of ``v: (B, *event)``."""
    return v.reshape(v.shape[0], -1).square().sum(dim=1)


def metropolis_select(
    current: LangevinState,
    proposal: LangevinState,
    log_ratio: Tensor,
    target: Target,
    generator: torch.Generator | None,
) -> tuple[LangevinState, StepInfo]:
    """Accept or reject each chain's proposal independently.

    Args:
        current, proposal: states ``(x, energy, grad)`` with ``B`` chains.
        log_ratio: ``(B,)`` log Metropolis-Hastings ratio; NaN counts as a rejection.
        target: its domain (if any) rejects proposals outside it.
        generator: source of the uniform draws.

    Returns:
        The new state and ``StepInfo(acceptance=min(1, ratio), accepted)``.
    """
    inside = target.admissible(proposal.x)
    if inside is not None:
        log_ratio = log_ratio.masked_fill(~inside, float("-inf"))
    log_ratio = torch.nan_to_num(log_ratio, nan=float("-inf"), posinf=float("inf"))
    u = torch.rand(log_ratio.shape, generator=generator, dtype=log_ratio.dtype, device=log_ratio.device)
    accepted = torch.log(u) < log_ratio
    wide = batch_view(accepted, proposal.x)
    state = LangevinState(
        torch.where(wide, proposal.x, current.x),
        torch.where(accepted, proposal.energy, current.energy),
        torch.where(wide, proposal.grad, current.grad),
    )
    return state, StepInfo(acceptance=log_ratio.clamp(max=0.0).exp(), accepted=accepted)


class MALA:
    """Metropolis-adjusted Langevin; one energy-and-gradient evaluation per step.

    Reports the per-chain acceptance probability; the driver can adapt the step size toward
    ``target_accept`` (0.574, Roberts & Rosenthal 1998) during a warm-up.
    """

    name = "mala"
    metropolis = True
    target_accept = 0.574
    decoupled_noise = False

    def init(self, x: Tensor, energy_fn: Callable[[Tensor], Tensor] | Target) -> LangevinState:
        return init_state(x, energy_fn)

    def step(
        self,
        state: LangevinState,
        energy_fn: Callable[[Tensor], Tensor] | Target,
        *,
        step_size: float | Tensor,
        temperature: float | Tensor = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[LangevinState, StepInfo]:
        """Propose, evaluate, accept/reject per chain."""
        target = as_target(energy_fn)
        x, energy = state.x, state.energy
        drift = target.drift(state.grad)
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x_new = axpy_(axpy(x, -step_size, drift), sqrt(2.0 * step_size * temperature), xi)
        x_new = target.freeze(x_new, x)
        e_new, g_new = target.value_and_grad(x_new)
        forward = axpy(x_new - x, step_size, drift)  # x' - x + s d(x)
        backward = axpy(x - x_new, step_size, target.drift(g_new))  # x - x' + s d(x')
        scale = 4.0 * step_size * temperature
        if isinstance(scale, Tensor) and scale.dim() > 0:  # one step per chain, shape (B, 1, ..., 1)
            scale = scale.reshape(scale.shape[0], -1)[:, 0]
        log_q = (squared_norm(forward) - squared_norm(backward)) / scale
        log_ratio = (energy - e_new) / temperature + log_q
        return metropolis_select(state, LangevinState(x_new, e_new, g_new), log_ratio, target, generator)

    def __repr__(self) -> str:
        return "mala"


mala = MALA()
