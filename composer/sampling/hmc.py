"""Hamiltonian Monte Carlo: leapfrog integration with a per-chain accept/reject.

Target ``pi(x) ∝ exp(-E(x) / T)``, unit mass, momentum ``p ~ N(0, I)``, Hamiltonian
``H = E(x) / T + ||p||^2 / 2``. Each step draws a fresh momentum, runs ``n_leapfrog`` leapfrog
steps of size ``step_size`` (one energy-and-gradient evaluation each) and accepts the end point
with probability ``min(1, exp(H_0 - H_1))`` per chain. Leapfrog with any position-dependent force
is volume-preserving and reversible, so gradient clipping keeps the chain exact (it only lowers
acceptance). Observed (masked) entries get no momentum and no force; proposals ending outside
the domain are rejected.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from composer.sampling.langevin import LangevinState, StepInfo, init_state
from composer.sampling.mala import metropolis_select, squared_norm
from composer.sampling.target import Target, as_target, axpy, axpy_


class HMC:
    """Hamiltonian Monte Carlo; ``n_leapfrog`` energy-and-gradient evaluations per step.

    The driver can adapt the step size toward ``target_accept`` (0.65, Neal 2011) during a
    warm-up. Pass ``kernel_options={"n_leapfrog": L}`` to ``composer.sampling.sample``.
    """

    name = "hmc"
    metropolis = True
    target_accept = 0.65
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
        n_leapfrog: int = 10,
    ) -> tuple[LangevinState, StepInfo]:
        """One Hamiltonian trajectory per chain, then accept/reject per chain."""
        if n_leapfrog < 1:
            raise ValueError(f"n_leapfrog must be >= 1, got {n_leapfrog}")
        target = as_target(energy_fn)
        x = state.x
        p = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if target.mask is not None:
            p = p.masked_fill(target.mask, 0.0)
        kinetic0 = 0.5 * squared_norm(p)
        half = 0.5 * step_size / temperature
        full = step_size / temperature
        p = axpy(p, -half, target.drift(state.grad))
        x_new, e_new, g_new = x, state.energy, state.grad
        for i in range(n_leapfrog):
            x_new = axpy(x_new, step_size, p)
            e_new, g_new = target.value_and_grad(x_new)
            p = axpy_(p, -(full if i < n_leapfrog - 1 else half), target.drift(g_new))
        x_new = target.freeze(x_new, x)
        log_ratio = (state.energy - e_new) / temperature + kinetic0 - 0.5 * squared_norm(p)
        return metropolis_select(state, LangevinState(x_new, e_new, g_new), log_ratio, target, generator)

    def __repr__(self) -> str:
        return "hmc"


hmc = HMC()
