"""``sampler="pt"``: parallel tempering (replica exchange) for long chains on multi-modal compositions.

Each of the ``n`` chains has ``replicas`` copies at inverse temperatures ``1 = beta_0 > ... > beta_{K-1}``
on the path ``pi_beta ∝ exp(-beta E / T) p_0^(1 - beta)`` of ``composer.sampling.population`` (so every
replica's density is proper, even for a composition that is improper when merely heated). Every step
moves all replicas with one MALA step (one batched call; each replica's step size adapts toward 0.574
during the adaptation steps and is then frozen), then proposes swaps between neighbouring replicas,
even pairs and odd pairs on alternate steps (Okabe et al. 2001; deterministic even-odd scheme),
accepted with probability ``min(1, exp((beta_k - beta_{k+1}) (U_k - U_{k+1})))``, ``U = E / T + log p_0``.
The hot replicas cross between modes and hand the crossings down the ladder, so the ``beta = 1``
chains (the returned samples) visit the modes in their proportions. The trace has the per-step
``acceptance`` and ``energy_mean`` of the ``beta = 1`` replica, and ``swap_rate`` (one per neighbouring
pair), ``betas`` and ``step_size`` (one per replica).

    >>> import torch, composer
    >>> two = composer.as_energy(lambda x: 0.5 * ((x.abs() - 2) / 0.3).pow(2).sum(-1), event_shape=(1,))
    >>> r = composer.sample(two, n=500, sampler="pt", steps=400, seed=0)
    >>> round(float((r.x > 0).float().mean()), 1)
    0.5
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from composer.errors import CompositionError
from composer.sampling.population import (
    PopulationKernel,
    StepAdapter,
    Tempered,
    move_kernel,
    plan_temperature,
    reference_for,
)

OPTIONS = {
    "replicas": "number of temperatures (default 8)",
    "beta_min": "the hottest replica's inverse temperature, in (0, 1) (default 0.01; geometric ladder)",
    "betas": "an explicit ladder, starting at 1 and decreasing",
    "adapt_steps": "steps that adapt the replicas' step sizes (default: warm-up, else a quarter, at most 200)",
    "reference": "'uniform' (domain box; default with a domain) or 'gaussian'",
    "scale": "standard deviation of the Gaussian reference (default 3)",
    "mean": "centre of the Gaussian reference (default 0)",
}


def ladder(replicas: int, beta_min: float) -> list[float]:
    """``replicas`` inverse temperatures, geometric from 1 down to ``beta_min``."""
    if replicas == 1:
        return [1.0]
    return [beta_min ** (i / (replicas - 1)) for i in range(replicas)]


class ParallelTempering(PopulationKernel):
    """Replica exchange; ``composer.sample(..., sampler="pt")`` runs ``run``. Used alone as a kernel it is
    MALA at the target."""

    name = "pt"
    default_steps = 1000
    options = OPTIONS

    def run(self, target: Any, x0: Tensor, plan: Any, generator: torch.Generator, options: dict[str, Any],
            *, domain: Any, event_shape: tuple[int, ...], progress: bool = False) -> dict[str, Any]:
        """Run ``plan.total`` steps of ``n = x0.shape[0]`` chains, each with its replicas."""
        opts = self.checked_options(target, options)
        if plan.sigmas is not None:
            raise CompositionError("sampler 'pt' tempers the energy itself: it takes no noise ladder (sigmas)")
        betas = opts.pop("betas", None)
        if betas is None:
            replicas, beta_min = int(opts.pop("replicas", 8)), float(opts.pop("beta_min", 0.01))
            if replicas < 1 or not 0 < beta_min < 1:
                raise CompositionError(f"pt: need replicas >= 1 and 0 < beta_min < 1, got {replicas}, {beta_min}")
            betas = ladder(replicas, beta_min)
        betas = [float(b) for b in betas]
        if not betas or betas[0] != 1.0 or any(not 0 <= b < a for a, b in zip(betas, betas[1:])):
            raise CompositionError(f"pt: betas must start at 1 and decrease, got {betas}")
        reference = reference_for(opts, domain, event_shape)
        n, k = x0.shape[0], len(betas)
        temperature = plan_temperature(plan, "pt")
        adapt_steps = opts.pop("adapt_steps", None)
        if adapt_steps is None:
            adapt_steps = plan.warmup if plan.warmup > 0 else min(200, plan.total // 4)
        dev, dt = x0.device, x0.dtype
        beta_rows = torch.tensor(betas, device=dev, dtype=dt).repeat_interleave(n)  # (K n,)
        tempered = Tempered(target.energy, target.sigma, temperature, reference, beta_rows)
        fn = target.replace(energy=tempered, sigma=None)
        x = reference.draw(k * n, generator, dev, dt)
        kernel = move_kernel("mala")
        state = kernel.init(x, fn)
        u = tempered.last_u
        adapter = StepAdapter(torch.full((k,), reference.step_guess()), goal=kernel.target_accept)
        swaps = torch.zeros(max(k - 1, 0), dtype=torch.float64)
        tries = torch.zeros(max(k - 1, 0), dtype=torch.float64)
        acc_trace, energy_trace = [], []
        shape = (k * n,) + (1,) * (x.dim() - 1)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=plan.total, desc="sampling (pt)", unit="step")
        for i in range(plan.total):
            steps = adapter.step.to(device=dev, dtype=dt).repeat_interleave(n).view(shape)
            state, info = kernel.step(state, fn, step_size=steps, generator=generator)
            u = torch.where(info.accepted, tempered.last_u, u)
            per_replica = info.acceptance.view(k, n).mean(1)
            if i < adapt_steps:
                adapter.update(per_replica)
            acc_trace.append(per_replica[0])
            energy_trace.append(state.energy[:n].mean() * temperature)
            if k > 1:
                state, u, accepted, pairs = self._swap(state, u, betas, n, i % 2, generator, fn, kernel)
                if i >= adapt_steps:
                    swaps[pairs] += accepted.double().cpu()
                    tries[pairs] += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        trace = {"acceptance": torch.stack(acc_trace).cpu() if acc_trace else torch.zeros(0),
                 "energy_mean": torch.stack(energy_trace).cpu() if energy_trace else torch.zeros(0),
                 "swap_rate": (swaps / tries.clamp(min=1)).float(), "betas": torch.tensor(betas),
                 "step_size": adapter.step.float()}
        return {"x": state.x[:n], "energy": state.energy[:n] * temperature, "trace": trace, "steps": plan.total,
                "step_size": float(adapter.step[0]), "reference": reference.describe()}

    @staticmethod
    def _swap(state: Any, u: Tensor, betas: list[float], n: int, parity: int, generator: torch.Generator,
              fn: Any, kernel: Any) -> tuple[Any, Tensor, Tensor, list[int]]:
        """Propose swaps between replicas ``(k, k + 1)`` for ``k = parity, parity + 2, ...``."""
        k = len(betas)
        pairs = list(range(parity, k - 1, 2))
        if not pairs:
            return state, u, torch.zeros(0), pairs
        uk = u.view(k, n)
        lo = torch.tensor(pairs, device=u.device)
        d_beta = torch.tensor([betas[p] - betas[p + 1] for p in pairs], device=u.device, dtype=u.dtype)
        log_a = d_beta[:, None] * (uk[lo] - uk[lo + 1])  # (P, n)
        accept = torch.log(torch.rand(log_a.shape, generator=generator, device=u.device, dtype=u.dtype)) < log_a
        perm = torch.arange(k * n, device=u.device).view(k, n)
        a_rows, b_rows = perm[lo].clone(), perm[lo + 1].clone()
        perm[lo] = torch.where(accept, b_rows, a_rows)
        perm[lo + 1] = torch.where(accept, a_rows, b_rows)
        flat = perm.reshape(-1)
        x = state.x[flat]
        new = kernel.init(x, fn)  # the swapped points' energies and gradients at their new temperatures
        return new, fn.energy.last_u, accept.double().mean(1), pairs


pt = ParallelTempering()
