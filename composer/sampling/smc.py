"""``sampler="smc"``: annealed importance sampling with resampling (a sequential Monte Carlo sampler).

Langevin chains do not cross between modes: the share of samples in each mode of a mixture is whatever
the initialisation gave. SMC gets the shares right. ``n`` particles start from a tractable reference
``p_0`` (``composer.sampling.population``: the domain's uniform box or a broad Gaussian) and follow the
path ``pi_beta ∝ exp(-beta E / T) p_0^(1 - beta)`` from ``beta = 0`` to ``1`` (Neal 2001; Del Moral,
Doucet & Jasra 2006). At each level:

1. the next ``beta`` is chosen by bisection so that the conditional ESS of the incremental weights is
   ``cess`` (Zhou, Johansen & Aston 2016), unless ``levels`` fixes a geometric ladder;
2. the particles are reweighted by ``exp(-(beta' - beta) U)``, ``U = E / T + log p_0``, and the running
   estimate of ``log Z`` gains ``log sum_i W_i exp(-(beta' - beta) U_i)``;
3. when the ESS falls below ``ess * m`` they are resampled (systematic resampling);
4. ``moves`` MALA (or HMC) steps at ``pi_beta'`` move them; the step size adapts toward the kernel's
   acceptance target.

For a noise-conditional composition with a noise ladder (``sigmas``) the path is the ladder itself:
``pi_k ∝ exp(-E(x, sigma_k) / T)``, from the driver's ``init`` (the chains' start, taken as draws from
the top level) down to the smallest noise; ``log_z`` is then ``log Z(sigma_min) - log Z(sigma_max)``.

The ``n`` particles form ``islands`` independent populations (each resampled on its own), so the
spread of the islands' estimates gives the standard error of ``log Z``; at the end all particles are
resampled to equal weights (the islands weighted by their ``Z``) and ``steps`` more kernel steps at
the target decorrelate the copies.

    >>> import torch, composer
    >>> two = composer.as_energy(lambda x: 0.5 * ((x.abs() - 2) / 0.3).pow(2).sum(-1), event_shape=(1,))
    >>> r = composer.sample(two, n=2000, sampler="smc", steps=10, seed=0)
    >>> round(float((r.x > 0).float().mean()), 1)         # two equal modes: half the samples each
    0.5
    >>> round(r.log_z, 1), round(math.log(2 * math.sqrt(2 * math.pi) * 0.3), 1)   # exact log Z
    (0.4, 0.4)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from composer.errors import CompositionError
from composer.sampling.population import (
    PopulationKernel,
    StepAdapter,
    Tempered,
    ess_fraction,
    move_kernel,
    plan_temperature,
    reference_for,
    systematic_resample,
)

OPTIONS = {
    "moves": "kernel steps per level (default 10)",
    "cess": "conditional ESS kept by each new level, in (0, 1) (default 0.98)",
    "ess": "resample an island when its ESS falls below this fraction (default 0.5)",
    "levels": "a fixed geometric ladder of this many levels instead of the adaptive one",
    "islands": "independent populations (default: up to 8 of at least 32 particles)",
    "kernel": "'mala' (default) or 'hmc'",
    "reference": "'uniform' (domain box; default with a domain) or 'gaussian'",
    "scale": "standard deviation of the Gaussian reference (default 3)",
    "mean": "centre of the Gaussian reference (default 0)",
    "max_levels": "give up (an error) after this many levels (default 10000)",
}


def islands_for(n: int, wanted: int | None = None) -> int:
    """The number of islands: ``wanted`` if given, else the largest ``k <= 8`` dividing ``n`` with
    ``n / k >= 32`` (1 if none)."""
    if wanted is not None:
        k = int(wanted)
        if k < 1 or n % k:
            raise CompositionError(f"smc: islands must divide n={n}, got {wanted}")
        return k
    for k in range(8, 0, -1):
        if n % k == 0 and n // k >= 32:
            return k
    return 1


def next_beta(beta: float, u: Tensor, log_w: Tensor, cess: float) -> float:
    """The largest ``beta' <= 1`` whose incremental weights ``exp(-(beta' - beta) u)`` keep a conditional
    ESS of at least ``cess`` (mean over islands), by bisection.

    Args:
        u: ``(K, m)`` the particles' ``U``; log_w: ``(K, m)`` their log-weights.
    """
    w = torch.softmax(log_w.double(), dim=1)
    u = u.double()
    u = u - u.min(dim=1, keepdim=True).values  # shift per island: the CESS does not change

    def conditional_ess(delta: float) -> float:
        g = torch.exp(-delta * u)
        return float(((w * g).sum(1).square() / (w * g.square()).sum(1)).mean())

    top = 1.0 - beta
    if conditional_ess(top) >= cess:
        return 1.0
    lo, hi = 0.0, top
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if conditional_ess(mid) >= cess:
            lo = mid
        else:
            hi = mid
    return beta + max(lo, 1e-12)


class SMC(PopulationKernel):
    """The SMC sampler; ``composer.sample(..., sampler="smc")`` runs ``run`` (see the module docstring).

    Used alone as a kernel (``init``/``step``), it is its move kernel at the target (MALA).
    """

    name = "smc"
    default_steps = 20
    options = OPTIONS

    def run(self, target: Any, x0: Tensor, plan: Any, generator: torch.Generator, options: dict[str, Any],
            *, domain: Any, event_shape: tuple[int, ...], progress: bool = False) -> dict[str, Any]:
        """Run SMC with ``n = x0.shape[0]`` particles.

        Args:
            target: the driver's ``Target`` (energy, clipping, mask, domain).
            x0: ``(n, *event)`` the driver's initial chains (used as the start only on a noise ladder).
            plan: the driver's ``Plan`` (``total`` final steps at the target, step sizes, temperature,
                noise levels).
            options: ``OPTIONS`` given as ``kernel_options``.

        Returns:
            ``x``, ``energy``, ``trace`` (per level: ``beta`` or ``sigma``, ``ess`` before resampling,
            ``resampled``, ``acceptance``, ``step_size``, ``log_z``; then ``final_acceptance``),
            ``log_z``, ``log_z_se``, ``steps``, ``step_size``.
        """
        opts = self.checked_options(target, options)
        n = x0.shape[0]
        k = islands_for(n, opts.pop("islands", None))
        m = n // k
        moves, cess, ess = int(opts.pop("moves", 10)), float(opts.pop("cess", 0.98)), float(opts.pop("ess", 0.5))
        levels, max_levels = opts.pop("levels", None), int(opts.pop("max_levels", 10000))
        kernel = move_kernel(opts.pop("kernel", "mala"))
        if moves < 0 or not 0 < cess < 1 or not 0 <= ess <= 1:
            raise CompositionError(f"smc: need moves >= 0, 0 < cess < 1, 0 <= ess <= 1; got {moves}, {cess}, {ess}")
        temperature = plan_temperature(plan, "smc")
        extra = {"n_leapfrog": 5} if kernel.name == "hmc" else {}
        self.generator, self.kernel, self.extra, self.k, self.m = generator, kernel, extra, k, m
        self.trace: dict[str, list[float]] = {"ess": [], "resampled": [], "acceptance": [], "step_size": [],
                                              "log_z": []}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None, desc="sampling (smc)", unit="level")
        try:
            if plan.sigmas is not None:
                out = self._ladder(target, x0, plan, temperature, moves, ess, bar)
            else:
                reference = reference_for(opts, domain, event_shape)
                out = self._tempering(target, x0, plan, reference, temperature, moves, cess, ess, levels,
                                      max_levels, bar)
        finally:
            if bar is not None:
                bar.close()
        return out

    # -- pieces ----------------------------------------------------------------------------------
    def _moves(self, state: Any, fn: Any, u: Tensor, steps: int, adapter: StepAdapter | None,
               step: float) -> tuple[Any, Tensor, float, float]:
        """``steps`` kernel steps; returns the state, ``U`` of its points, the mean acceptance and the step."""
        accs = []
        for _ in range(steps):
            if adapter is not None:
                step = float(adapter.step)
            state, info = self.kernel.step(state, fn, step_size=step, generator=self.generator, **self.extra)
            u = torch.where(info.accepted, fn.energy.last_u, u) if hasattr(fn.energy, "last_u") else state.energy
            accs.append(info.acceptance.mean())
            if adapter is not None:
                adapter.update(accs[-1])
        acc = float(torch.stack(accs).mean()) if accs else float("nan")
        return state, u, acc, step

    def _resample(self, state: Any, u: Tensor, log_w: Tensor) -> tuple[Any, Tensor, Tensor]:
        """Resample the islands whose ESS fell below the threshold; record the ESS."""
        frac = ess_fraction(log_w)
        low = frac < self.ess_threshold
        self.trace["ess"].append(float(frac.mean()))
        self.trace["resampled"].append(float(low.float().mean()))
        if not bool(low.any()):
            return state, u, log_w
        idx = systematic_resample(log_w, self.generator)
        keep = torch.arange(self.m, device=idx.device).expand(self.k, self.m)
        idx = torch.where(low[:, None], idx, keep)
        flat = (idx + self.m * torch.arange(self.k, device=idx.device)[:, None]).reshape(-1)
        state = type(state)(*(f[flat] if isinstance(f, Tensor) and f.dim() > 0 else f for f in state))
        log_w = torch.where(low[:, None], torch.zeros_like(log_w), log_w)
        return state, u[flat], log_w

    def _finish(self, state: Any, u: Tensor, log_w: Tensor, log_z: Tensor, fn: Any, plan: Any,
                step: float) -> dict[str, Any]:
        """Combine the islands (weights ``Z_k W_ki``), resample to equal weights, run the final steps."""
        k = self.k
        log_w_norm = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
        total = torch.logsumexp(log_z, 0) - math.log(k)
        se = float("nan")
        if k > 1:
            rel = torch.exp(log_z - total)  # Z_k / Z_hat, mean 1
            se = float(rel.std(unbiased=True) / math.sqrt(k))
        joint = (log_z[:, None] + log_w_norm).reshape(1, -1)
        idx = systematic_resample(joint, self.generator).reshape(-1)
        state = type(state)(*(f[idx] if isinstance(f, Tensor) and f.dim() > 0 else f for f in state))
        u = u[idx]
        final = []
        for _ in range(plan.total):
            state, info = self.kernel.step(state, fn, step_size=step, generator=self.generator, **self.extra)
            final.append(info.acceptance.mean())
        trace = {key: torch.tensor(v) for key, v in self.trace.items()}
        if final:
            trace["final_acceptance"] = torch.stack(final).cpu()
        return {"x": state.x, "energy": state.energy, "trace": trace, "log_z": float(total), "log_z_se": se,
                "steps": plan.total, "step_size": step}

    # -- the two paths -----------------------------------------------------------------------------
    def _tempering(self, target: Any, x0: Tensor, plan: Any, reference: Any, temperature: float, moves: int,
                   cess: float, ess: float, levels: Any, max_levels: int, bar: Any) -> dict[str, Any]:
        k, m, gen = self.k, self.m, self.generator
        self.ess_threshold = ess
        x = reference.draw(k * m, gen, x0.device, x0.dtype)
        tempered = Tempered(target.energy, target.sigma, temperature, reference, 0.0)
        fn = target.replace(energy=tempered, sigma=None)
        state = self.kernel.init(x, fn)
        u = tempered.last_u
        if not bool(torch.isfinite(u).all()):
            raise CompositionError("smc: the energy is not finite on the reference's samples")
        log_w = torch.zeros(k, m, dtype=x.dtype, device=x.device)
        log_z = torch.zeros(k, dtype=torch.float64, device=x.device)
        adapter = StepAdapter(reference.step_guess(), goal=self.kernel.target_accept)
        ladder = None
        if levels is not None:
            if int(levels) < 1:
                raise CompositionError(f"smc: levels must be >= 1, got {levels}")
            ladder = [1.0] if int(levels) == 1 else [10 ** (-4 * (1 - i / (int(levels) - 1)))
                                                      for i in range(int(levels))]
        self.trace["beta"] = []
        beta, level = 0.0, 0
        while beta < 1.0:
            if level >= max_levels:
                raise CompositionError(f"smc: did not reach the target in {max_levels} levels (beta = {beta:.3g}); "
                                       "raise max_levels or lower cess")
            new = ladder[level] if ladder is not None else next_beta(beta, u.view(k, m), log_w, cess)
            inc = (-(new - beta) * u).view(k, m)
            log_w_norm = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
            log_z = log_z + torch.logsumexp(log_w_norm + inc, dim=1).double()
            log_w = log_w + inc
            beta, level = new, level + 1
            self.trace["beta"].append(beta)
            state, u, log_w = self._resample(state, u, log_w)
            tempered.beta = beta
            state = self.kernel.init(state.x, fn)  # energies and gradients at the new level
            u = tempered.last_u
            state, u, acc, step = self._moves(state, fn, u, moves, adapter, float(adapter.step))
            self.trace["acceptance"].append(acc)
            self.trace["step_size"].append(float(adapter.step))
            self.trace["log_z"].append(float(torch.logsumexp(log_z, 0) - math.log(k)))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(beta=f"{beta:.3g}", refresh=False)
        # at beta = 1 the tempered energy is E / T: report the target's energies
        out = self._finish(state, u, log_w, log_z, fn, plan, float(adapter.step))
        out["energy"] = out["energy"] * temperature
        out["reference"] = reference.describe()
        return out

    def _ladder(self, target: Any, x0: Tensor, plan: Any, temperature: float, moves: int, ess: float,
                bar: Any) -> dict[str, Any]:
        k, m = self.k, self.m
        self.ess_threshold = ess
        sigmas = list(dict.fromkeys(plan.sigmas))
        first = {s: plan.sigmas.index(s) for s in sigmas}
        scaled = _Scaled(target.energy, temperature)
        fn = target.replace(energy=scaled, sigma=sigmas[0])
        state = self.kernel.init(x0, fn)
        log_w = torch.zeros(k, m, dtype=x0.dtype, device=x0.device)
        log_z = torch.zeros(k, dtype=torch.float64, device=x0.device)
        adapter = StepAdapter(float(plan.step_sizes[first[sigmas[0]]]), goal=self.kernel.target_accept)
        self.trace["sigma"] = []
        for i, sigma in enumerate(sigmas):
            if i > 0:
                previous = state.energy
                fn = fn.replace(sigma=sigma)
                state = self.kernel.init(state.x, fn)
                inc = (previous - state.energy).view(k, m)
                log_w_norm = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
                log_z = log_z + torch.logsumexp(log_w_norm + inc, dim=1).double()
                log_w = log_w + inc
                state, _, log_w = self._resample(state, state.energy, log_w)
                adapter.log_step = torch.log(torch.tensor(float(plan.step_sizes[first[sigma]]), dtype=torch.float64))
            self.trace["sigma"].append(sigma)
            state, _, acc, step = self._moves(state, fn, state.energy, moves, adapter, float(adapter.step))
            self.trace["acceptance"].append(acc)
            self.trace["step_size"].append(float(adapter.step))
            self.trace["log_z"].append(float(torch.logsumexp(log_z, 0) - math.log(k)))
            if i == 0:
                self.trace["ess"].append(1.0)
                self.trace["resampled"].append(0.0)
            if bar is not None:
                bar.update(1)
        out = self._finish(state, state.energy, log_w, log_z, fn, plan, float(adapter.step))
        out["energy"] = out["energy"] * temperature
        return out


class _Scaled:
    """``E(x, sigma) / T`` (the ladder path moves at temperature one)."""

    noise_conditional = True

    def __init__(self, energy: Any, temperature: float):
        self.energy, self.temperature = energy, temperature

    def __call__(self, x: Tensor, sigma: Any = None) -> Tensor:
        from composer.energy import call_energy

        e = call_energy(self.energy, x, sigma)
        return e if self.temperature == 1.0 else e / self.temperature


smc = SMC()
