"""The sampling loop behind ``composer.sampling.sample``.

Steps run in chunks of ``check_every``. Within a chunk nothing is read back to the host:
parameters come from host-side lists, diagnostics go into device ring buffers
(``TraceRecorder``). At the end of a chunk one synchronisation reads whether everything was
finite and which chains have converged; converged chains are retired (their rows leave the
batch, so they stop costing work). On a non-finite value the chunk is replayed from its
snapshot (the state tuple and the generator state; kernels never modify a state in place) up to
the first bad step, and ``SamplingDivergedError`` names the step, the chains and the expert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from composer.errors import SamplingDivergedError
from composer.sampling.adapt import DualAveraging
from composer.sampling.guard import diverged_error
from composer.sampling.schedules import Repeat
from composer.sampling.target import Target
from composer.sampling.trace import TraceRecorder, bad_chains


@dataclass
class Plan:
    """Host-side per-step parameters of one run.

    Attributes:
        total: number of steps (warm-up included).
        warmup: leading steps that adapt the step size (if ``adapter``) and are not returned.
        step_sizes: base step size of each step (a sequence of floats, ``Repeat`` when constant, or a
            ``(total,)`` tensor when compiled).
        temperatures: temperature of each step (likewise).
        sigmas: noise level of each step, or ``None`` for energies that take no noise level.
        check_every: steps per chunk (between host synchronisations).
        tol, patience: per-chain stop when ``|E_t - E_{t-1}| <= tol`` for ``patience`` steps.
        last_evaluation: what the last step evaluates at its end point (``"full"``, ``"energy"`` or
            ``"none"``, see ``Langevin.step``); only kernels with ``final_evaluation_optional`` get
            anything but ``"full"``.
        predictor: the move between noise levels (``predict``), or ``None``.
    """

    total: int
    warmup: int
    step_sizes: Sequence[float] | Tensor
    temperatures: Sequence[float] | Tensor
    sigmas: list[float] | None
    check_every: int
    tol: float | None
    patience: int
    last_evaluation: str = "full"
    predictor: str | None = None


def predict(kind: str, x: Tensor, grad: Tensor, sigma_a: float, sigma_b: float) -> Tensor:
    """Move chains at noise level ``sigma_a`` to ``sigma_b < sigma_a`` along the learned score ``-grad``.

    ``"ddim"``: the deterministic probability-flow step of a variance-exploding diffusion (Song et al. 2021;
    DDIM with eta = 0) through the denoised estimate ``x - sigma_a^2 grad`` (Tweedie):
    ``x - sigma_a (sigma_a - sigma_b) grad``. It keeps the chains' noise matched to the level (exactly, for
    Gaussian data), so the Langevin steps at each level only correct (predictor-corrector).
    """
    if kind != "ddim":  # pragma: no cover - checked by the driver
        raise ValueError(f"unknown predictor {kind!r}")
    return x - (sigma_a * (sigma_a - sigma_b)) * grad


class Runner:
    """Runs a kernel for ``plan.total`` steps from ``state`` (see the module docstring).

    Args:
        kernel: the kernel (for ``init`` after a change of noise level).
        step_fn: ``kernel.step`` or its compiled version.
        energy: the composition (named in divergence errors).
        target: the ``Target`` of the first step.
        state: the initial kernel state, ``B`` chains.
        generator: the only source of randomness (so a chunk can be replayed).
        plan: per-step parameters.
        recorder: trace ring buffers.
        adapter: step-size adaptation during the warm-up, or ``None``.
        extra: additional keyword arguments of ``step_fn`` (``noise``, kernel options).
        per_chain_mask: the target's mask has one row per chain (subset on retirement).
        sigma_as_tensor: pass noise levels as ``(B,)`` tensors (compiled steps).
        progress: a tqdm bar or ``None``.
        initial_ok: 0-dim bool (device): the initial state is finite; read with the first chunk's flags.
    """

    def __init__(
        self,
        kernel: Any,
        step_fn: Callable[..., tuple[Any, Any]],
        energy: nn.Module,
        target: Target,
        state: Any,
        generator: torch.Generator,
        plan: Plan,
        recorder: TraceRecorder,
        adapter: DualAveraging | None,
        extra: dict[str, Any],
        per_chain_mask: bool = False,
        sigma_as_tensor: bool = False,
        progress: Any = None,
        initial_ok: Tensor | None = None,
    ):
        self.kernel, self.step_fn, self.energy = kernel, step_fn, energy
        self.target, self.state, self.generator = target, state, generator
        self.plan, self.recorder, self.adapter, self.extra = plan, recorder, adapter, extra
        self.per_chain_mask, self.sigma_as_tensor, self.progress = per_chain_mask, sigma_as_tensor, progress
        self.n = state.x.shape[0]
        device = state.x.device
        self.alive: Tensor | None = None  # original index of each running chain, once some have stopped
        self.x_out: Tensor | None = None
        self.e_out: Tensor | None = None
        self.steps_run: Tensor | None = None
        self.calm = torch.zeros(self.n, dtype=torch.long, device=device) if plan.tol is not None else None
        self.initial_ok = initial_ok
        self.scale: float | Tensor = 1.0 if adapter is None else adapter.current
        self.sigma = plan.sigmas[0] if plan.sigmas else None
        self.steps_done = 0
        self.constant = _constant(plan.step_sizes) and _constant(plan.temperatures)

    # -- one step ---------------------------------------------------------------------------------
    def _set_sigma(self, sigma: float) -> None:
        grad = getattr(self.state, "grad", None)
        if self.plan.predictor is not None and self.sigma is not None and hasattr(self.state, "_replace") \
                and grad is not None:
            x = predict(self.plan.predictor, self.state.x, grad, self.sigma, sigma)
            self.state = self.state._replace(x=self.target.constrain(x, self.state.x))
        self.sigma = sigma
        value: Any = sigma
        if self.sigma_as_tensor:
            value = torch.full((self.state.x.shape[0],), sigma, dtype=self.state.x.dtype, device=self.state.x.device)
        self.target = self.target.replace(sigma=value)
        self.state = self.kernel.init(self.state.x, self.target)

    def _step(self, i: int) -> None:
        """Step ``i`` with every feature (noise levels, adaptation, per-chain stop)."""
        plan = self.plan
        if plan.sigmas is not None and plan.sigmas[i] != self.sigma:
            self._set_sigma(plan.sigmas[i])
        scale, base = self.scale, plan.step_sizes[i]
        step_size = base if (isinstance(scale, float) and scale == 1.0) else scale * base
        previous, force = self.state.energy, getattr(self.state, "grad", None)
        last = plan.last_evaluation != "full" and i == plan.total - 1
        self.state, info = self.step_fn(
            self.state,
            self.target,
            step_size=step_size,
            temperature=plan.temperatures[i],
            generator=self.generator,
            **(dict(self.extra, evaluate=plan.last_evaluation) if last else self.extra),
        )
        if self.state.energy is None:  # a last step that evaluated nothing: trace its driving gradient only
            self.recorder.note_force(i, force)
            if self.progress is not None:
                self.progress.update(1)
            return
        acceptance = getattr(info, "acceptance", None)
        if self.adapter is not None and i < plan.warmup:
            if acceptance is None:
                raise TypeError(f"sampler {self.kernel!r} reports no acceptance; it cannot adapt its step size")
            self.scale = self.adapter.update(acceptance)
            if i == plan.warmup - 1:
                final = self.adapter.final()  # one host synchronisation, at the end of the warm-up
                self.scale = torch.tensor(final, device=previous.device) if self.sigma_as_tensor else final
        if self.calm is not None:
            close = (self.state.energy - previous).abs() <= plan.tol
            self.calm = (self.calm + 1) * close
        self.recorder.record(self.state.energy, force, acceptance)
        if self.progress is not None:
            self.progress.update(1)

    def _steps(self, start: int, stop: int) -> None:
        """Steps ``start .. stop - 1``; a lean loop when no per-step feature is on."""
        plan = self.plan
        if plan.sigmas is not None or self.adapter is not None or self.calm is not None:
            for i in range(start, stop):
                self._step(i)
            return
        step_fn, target, state, sizes, temps = self.step_fn, self.target, self.state, plan.step_sizes, plan.temperatures
        kw = dict(self.extra, generator=self.generator)
        constant = self.constant
        if constant:
            kw.update(step_size=sizes[0], temperature=temps[0])
        rec, bar = self.recorder, self.progress
        keep = rec.kept.append if rec.by_reference and rec.enabled else None
        record = rec.record if rec.enabled and keep is None else None
        skip = plan.last_evaluation != "full" and stop == plan.total  # the last step runs below
        for i in range(start, stop - 1 if skip else stop):
            force = getattr(state, "grad", None)  # traced: the gradient that drives this step
            if constant:
                state, info = step_fn(state, target, **kw)
            else:
                state, info = step_fn(state, target, step_size=sizes[i], temperature=temps[i], **kw)
            if keep is not None:
                keep((state.energy, force, getattr(info, "acceptance", None)))
            elif record is not None:
                record(state.energy, force, getattr(info, "acceptance", None))
            if bar is not None:
                bar.update(1)  # host-side counter: no synchronisation
        self.state = state
        if skip:
            self._step(stop - 1)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        plan, i = self.plan, 0
        if plan.total == 0 and self.initial_ok is not None and not bool(self.initial_ok):
            self._diverged(self._snapshot(), 0, 0)
        while i < plan.total:
            start, stop = i, min(i + plan.check_every, plan.total)
            snapshot = self._snapshot()
            self._steps(start, stop)
            i = self.steps_done = stop
            flags = [self.recorder.flush(start, self.state)]
            if self.initial_ok is not None:
                flags[0] = flags[0] & self.initial_ok
            if stop == plan.total and self.recorder.enabled:  # (a disabled recorder checks the state itself)
                flags.append(torch.isfinite(self.state.x).all())
            done = None
            if self.calm is not None:
                done = self.calm >= plan.patience
                flags.append(done.any())
            if self.progress is not None:  # shown next to the bar
                flags.append(self.recorder.table[0, stop - 1].to(flags[0].device))
            host = torch.stack([f.float() for f in flags]).tolist()  # the one synchronisation of this chunk
            if not host[0] or (stop == plan.total and self.recorder.enabled and not host[1]):
                self._diverged(snapshot, start, stop)
            self.initial_ok = None
            if self.progress is not None:
                self.progress.set_postfix(energy=f"{host.pop():.4g}", refresh=False)
            if done is not None and host[-1] and stop < plan.total:
                self._retire(done, stop)
                if self.state.x.shape[0] == 0:
                    break

    def _snapshot(self) -> tuple:
        adapter = self.adapter.state() if self.adapter is not None else None
        return (self.state, self.generator.get_state(), self.scale, adapter, self.calm, self.target, self.sigma)

    def _diverged(self, snapshot: tuple, start: int, stop: int) -> None:
        """Replay the chunk from its snapshot one checked step at a time; raise at the first bad step."""
        x_bad, bad, step = None, torch.zeros(0, dtype=torch.long), stop - 1
        try:
            self.state, gen_state, self.scale, adapter, self.calm, self.target, self.sigma = snapshot
            if self.initial_ok is not None:  # the first chunk: was the initial state already bad?
                found = bad_chains(self.state)
                if found.numel():
                    raise diverged_error(self.energy, self.state.x[found], self.sigma, None, self.plan.total,
                                         self._original(found), self.n)
            self.generator.set_state(gen_state)
            if adapter is not None and self.adapter is not None:
                self.adapter.restore(adapter)
            progress, self.progress = self.progress, None
            for i in range(start, stop):
                self.recorder.clear()
                self._steps(i, i + 1)
                found = bad_chains(self.state)
                if found.numel():  # one synchronisation per replayed step: this is the error path
                    step, bad, x_bad = i, found, self.state.x[found]
                    break
            self.progress = progress
        except SamplingDivergedError:
            raise
        except Exception:  # the diagnosis must not hide the divergence
            x_bad = None
        raise diverged_error(self.energy, x_bad, self.sigma, step, self.plan.total, self._original(bad), self.n)

    def _original(self, chains: Tensor) -> Tensor:
        """Indices in the caller's batch of running chains ``chains``."""
        return chains if self.alive is None else self.alive[chains.to(self.alive.device)]

    def _retire(self, done: Tensor, steps: int) -> None:
        """Move converged chains out of the batch (their rows stop costing work)."""
        if self.x_out is None:
            self.x_out = torch.empty_like(self.state.x)
            self.e_out = torch.empty_like(self.state.energy)
            self.alive = torch.arange(self.n, device=self.state.x.device)
            self.steps_run = torch.full((self.n,), self.plan.total, dtype=torch.long, device=self.state.x.device)
        gone, keep = done.nonzero().flatten(), (~done).nonzero().flatten()
        orig = self.alive[gone]
        self.x_out[orig] = self.state.x[gone]
        self.e_out[orig] = self.state.energy[gone]
        self.steps_run[orig] = steps
        b = self.state.x.shape[0]
        self.state = type(self.state)(
            *(f[keep] if isinstance(f, Tensor) and f.dim() > 0 and f.shape[0] == b else f for f in self.state)
        )
        self.alive, self.calm = self.alive[keep], self.calm[keep]
        changes: dict[str, Any] = {}
        if self.per_chain_mask:
            changes["mask"] = self.target.mask[keep]
        if self.sigma_as_tensor and isinstance(self.target.sigma, Tensor):
            changes["sigma"] = self.target.sigma[keep]
        if changes:
            self.target = self.target.replace(**changes)
        self.recorder.resize(keep.numel())

    def outputs(self) -> tuple[Tensor, Tensor | None, Tensor]:
        """Final samples ``(n, *event)``, energies ``(n,)`` (``None`` if not evaluated) and steps run
        per chain ``(n,)``."""
        if self.x_out is None:
            steps = torch.full((self.n,), self.steps_done, dtype=torch.long, device=self.state.x.device)
            return self.state.x, self.state.energy, steps
        self.x_out[self.alive] = self.state.x
        if self.state.energy is None:  # the last point was not evaluated
            return self.x_out, None, self.steps_run
        self.e_out[self.alive] = self.state.energy
        return self.x_out, self.e_out, self.steps_run


def _constant(values: Sequence[float] | Tensor) -> bool:
    """One value for every step (a tensor of values is treated as varying)."""
    if isinstance(values, Repeat):
        return len(values) > 0
    return isinstance(values, list) and len(values) > 0 and len(set(values)) == 1

