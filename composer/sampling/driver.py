"""``sample``: draw samples from any composition with a registered (or given) kernel.

    >>> import torch, composer
    >>> from composer.sampling import sample
    >>> a = composer.as_energy(lambda x: 0.5 * (x ** 2).sum(-1), event_shape=(2,))
    >>> b = composer.as_energy(lambda x: 0.5 * ((x - 2) ** 2).sum(-1), event_shape=(2,))
    >>> r = sample(a & b, n=2000, steps=300, sampler="mala", step_size=0.5, seed=0)
    >>> [round(v, 1) for v in r.x.mean(0).tolist()]   # the product is N(1, 1/2)
    [1.0, 1.0]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from composer.energy import Energy, as_energy, call_energy, device_of
from composer.errors import CompositionError
from composer.sampling.adapt import DualAveraging
from composer.sampling.buffer import ReplayBuffer, draw_noise
from composer.sampling.freeze import frozen
from composer.sampling.guard import check_bounded, check_run, final_step_size, naming_experts
from composer.sampling.recipe import resolve_options
from composer.sampling.resolve import (
    build_plan,
    check_initial,
    check_kernel_options,
    compile_contexts,
    owning_outputs,
    resolve_device,
    resolve_domain,
    resolve_dtype,
    resolve_event_shape,
    resolve_kernel,
)
from composer.sampling.runner import Runner
from composer.sampling.schedules import Schedule
from composer.sampling.strata import Strata, allocate, combinations, merge, strata_of, stratum_energy, stratum_seed
from composer.sampling.target import Target
from composer.sampling.trace import TraceRecorder


@dataclass
class SampleResult:
    """What ``sample`` returns.

    Attributes:
        x: samples ``(n, *event_shape)``, detached.
        energy: their energies ``(n,)`` (at the last noise level, if any); ``None`` with ``energies=False``.
        trace: per-step tensors of length ``steps_run.max()`` (empty with ``trace=False``):
            ``energy_mean``, ``energy_min``, ``energy_max`` (over the chains still running),
            ``grad_norm`` (root mean square over chains of the per-chain L2 norm of the energy
            gradient that drove the step, i.e. at its starting point) and, for Metropolis kernels,
            ``acceptance`` (mean acceptance probability).
            The first ``warmup`` entries are the warm-up.
        steps_run: ``(n,)`` steps each chain ran, warm-up included (fewer when it stopped early).
        step_size: the step size of the last step (after adaptation, if any).
        warmup: number of warm-up steps.
        sampler: name of the kernel.
        seed: the seed of the generator (``None`` when a generator was given).
        log_z: ``sampler="smc"``: the estimate of ``log Z = log ∫ exp(-E(x) / T) dx`` (on a noise ladder,
            ``log Z(sigma_min) - log Z(sigma_max)``); ``None`` for other samplers.
        log_z_se: its standard error (the spread of independent islands; NaN with one island).
    """

    x: Tensor
    energy: Tensor | None
    trace: dict[str, Tensor]
    steps_run: Tensor
    step_size: float
    warmup: int = 0
    sampler: str = ""
    seed: int | None = None
    log_z: float | None = None
    log_z_se: float | None = None

    @property
    def acceptance(self) -> float | None:
        """Mean acceptance probability after the warm-up (Metropolis kernels), else ``None``."""
        acc = self.trace.get("acceptance")
        if acc is None or acc.numel() <= self.warmup:
            return None
        return float(acc[self.warmup :].mean())

    def summary(self) -> str:
        """One line: sampler, shape, final mean energy, acceptance."""
        acc = self.acceptance
        parts = [
            f"{self.sampler}: {tuple(self.x.shape)} samples",
            f"mean energy {float(self.energy.mean()):.4g}" if self.energy is not None else "energies not evaluated",
            f"steps {int(self.steps_run.max()) if self.steps_run.numel() else 0}",
            f"step size {self.step_size:.4g}",
        ]
        if acc is not None:
            parts.append(f"acceptance {acc:.3f}")
        if self.log_z is not None:
            parts.append(f"log Z {self.log_z:.4f} +- {self.log_z_se:.4f}")
        return ", ".join(parts)


def sample(
    energy: Energy | Callable[[Tensor], Tensor],
    n: int | None = None,
    steps: int | None = None,
    *,
    sampler: str | Any = None,
    init: None | str | Tensor | ReplayBuffer | Callable[..., Tensor] = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    step_size: float | Schedule | Callable[[int, int], float] | None = None,
    noise: str | float | None = None,
    temperature: float | Schedule | Callable[[int, int], float] | None = None,
    clip_grad: float | None = None,
    clip_grad_norm: float | None = None,
    clamp: bool | None = None,
    mask: Tensor | None = None,
    sigmas: Sequence[float] | None = None,
    predictor: str | None = None,
    tol: float | None = None,
    patience: int = 10,
    warmup: int | None = None,
    adapt: bool = True,
    target_accept: float | None = None,
    kernel_options: dict[str, Any] | None = None,
    check_every: int = 100,
    trace: bool = True,
    energies: bool = True,
    compile: bool | str = False,
    graph: bool = False,
    autocast: torch.dtype | None = None,
    progress: bool = False,
    registry: Any = None,
    recipe: bool | dict[str, Any] = True,
    allow_unbounded: bool = False,
    guard: bool = True,
    stratify: bool = True,
) -> SampleResult:
    """Sample ``n`` chains of ``p(x) ∝ exp(-E(x) / T)`` for ``steps`` steps.

    Args:
        energy: an ``Energy`` (any composition) or a callable ``(B, *event) -> (B,)``. It is
            validated first (a product with no positive expert is a ``CompositionError``) and moved
            to ``device``.
        n: number of chains (default: the batch of an init tensor, else 1000).
        steps: steps after the warm-up; the samples are the chains' states after ``warmup + steps``
            steps (with ``sigmas``, the steps are split equally over the levels).
        sampler: ``"langevin"`` (unadjusted), ``"mala"``, ``"hmc"``, any name registered by a plugin,
            or a kernel object with ``init`` and ``step``.
        init: ``None`` (uniform over the energy's domain if it has one, else standard Gaussian),
            ``"uniform"``, ``"gaussian"``, a tensor ``(n, *event)``, a callable
            ``fn(n, generator=...)``, or a ``ReplayBuffer`` (chains are written back to it).
        seed, generator: randomness; the same seed gives the same samples on the same device.
            Without either, a seed is drawn from torch's global generator.
        device, dtype: where and in what precision to sample (default: from init, else the energy).
        step_size: a float or a schedule (``composer.sampling.schedules``); with ``sigmas`` it is the
            step at the smallest noise level and level ``i`` uses ``step_size * (sigma_i / sigma_min)^2``
            (Song & Ermon 2019).
        noise: ``"exact"`` (``sqrt(2 * step * T)``) or a float, the IGEBM-style decoupled noise scale
            (``"langevin"`` only).
        temperature: a float or a schedule.
        clip_grad: clip the gradient element-wise to ``[-clip_grad, clip_grad]``.
        clip_grad_norm: rescale each chain's gradient to L2 norm at most ``clip_grad_norm``.
        clamp: keep samples in the energy's domain (if it has one): ``"langevin"`` clamps,
            Metropolis kernels reject proposals outside it.
        mask: bool tensor broadcastable to ``(n, *event)``; ``True`` entries are observed: they keep
            the values of the ``init`` tensor bit for bit (inpainting, conditioning).
        sigmas: noise ladder (largest first) for noise-conditional energies (annealed Langevin):
            the expert receives ``sigma=``; the warm-up runs at ``sigmas[0]``.
        predictor: with ``sigmas``, how chains move from one level to the next before its Langevin
            steps (predictor-corrector, Song et al. 2021): ``None`` (plain annealed Langevin, NCSN) or
            ``"ddim"`` (the deterministic probability-flow step, ``composer.sampling.runner.predict``); it
            reuses the last gradient of the level, so it costs no extra evaluation.
        tol, patience: a chain stops once ``|E_t - E_{t-1}| <= tol`` for ``patience`` consecutive
            steps (checked every ``check_every`` steps; stopped chains leave the batch).
        warmup: extra leading steps not counted in ``steps``; Metropolis kernels adapt their step
            size during them (dual averaging toward ``target_accept``) when ``adapt`` is true.
        target_accept: target acceptance (default: the kernel's, 0.574 for MALA, 0.65 for HMC).
        kernel_options: extra keyword arguments of the kernel's ``step`` (e.g. ``n_leapfrog``).
        check_every: steps between the host synchronisations that check for divergence, show the
            energy next to the progress bar and retire converged chains.
        trace: record the per-step trace. With ``False`` no per-step work is added to the kernel's; the
            divergence guard then checks the chains' state every ``check_every`` steps (a chain that
            went non-finite stays so) and still names the step by replaying the chunk.
        energies: evaluate the returned samples. An unadjusted kernel computes only the energy (no
            gradient) at the end of its last step; with ``False`` not even that (as many evaluations
            as a hand-written loop: useful for short runs whose energies nobody reads, e.g.
            contrastive divergence), ``result.energy`` is ``None`` and the last step's energy trace
            entries are NaN.
            Metropolis kernels must evaluate every proposal, and a compiled step always evaluates
            fully (one graph for every step); for them this changes nothing.
        compile: wrap the step with ``torch.compile`` (``True`` or a mode such as ``"max-autotune"``).
        graph: the captured fixed-shape path: on CUDA the step is compiled with
            ``mode="reduce-overhead"``, so each step replays one CUDA graph (static buffers, no per-kernel
            launch cost: what a small expert's step is bound by); on a CPU, where no graphs exist, it is
            ``compile=True``. Samples agree with the eager path to float rounding.
        autocast: evaluate energies (and their gradients) under ``torch.autocast`` in this dtype, e.g.
            ``torch.bfloat16``; the chains, noise and update stay in ``dtype`` (float32 by default).
        progress: show a tqdm progress bar (on stderr).
        registry: where sampler names are looked up (default: ``composer.get_registry()``).
        recipe: arguments left at ``None`` (``steps``, ``sampler``, ``init``, ``step_size``,
            ``noise``, ``temperature``, ``clip_grad``, ``clip_grad_norm``, ``clamp``, ``sigmas``,
            ``warmup``, ``kernel_options``) come from the first ``sampling_recipe`` an expert of
            the composition carries (``True``), from this dict, or (``False``) from the built-in
            defaults alone: 500 steps of ``"langevin"``, step 0.01, exact noise, T = 1, clamped
            (``composer.sampling.recipe``).
        allow_unbounded: sample a composition found unbounded below (a warning instead of an
            ``UnboundedEnergyError``, see ``composer.sampling.guard.check_bounded``).
        guard: fail runs that went wrong while finite (collapsed acceptance, exploding energy, a
            constant energy; ``composer.sampling.guard.check_run``). Non-finite values always fail.
        stratify: when the composition's prior declares itself a mixture over a concept family that the
            composition leaves free (``composer.sampling.strata``), give each value its share of the fresh
            chains (``composition & family=value``) instead of leaving the shares to the dynamics. Only
            with fresh chains (no init tensor or replay buffer, no mask) and a seed rather than a generator.

    Returns:
        A ``SampleResult`` with ``x``, ``energy``, ``trace`` and ``steps_run``.

    Raises:
        CompositionError: invalid composition or arguments.
        UnboundedEnergyError: the composition's energy falls without bound (see ``allow_unbounded``).
        SamplingDivergedError: non-finite energies, gradients or samples, naming the step, the
            chains and the first expert with a non-finite value; or a run gone wrong while finite.
    """
    call = dict(locals())  # the arguments, for the strata's own runs
    if not isinstance(energy, Energy):
        if not callable(energy):
            raise CompositionError(f"sample() needs an Energy or a callable, got {type(energy).__name__}")
        energy = as_energy(energy)
    energy.validate()
    if stratify and generator is None and mask is None and not isinstance(init, (Tensor, ReplayBuffer)):
        strata = strata_of(energy)
        if strata:
            return _stratified(energy, strata, call)
    opts = resolve_options(energy, recipe, {
        "steps": steps, "sampler": sampler, "init": init, "step_size": step_size, "noise": noise,
        "temperature": temperature, "clip_grad": clip_grad, "clip_grad_norm": clip_grad_norm, "clamp": clamp,
        "sigmas": sigmas, "predictor": predictor, "warmup": warmup, "kernel_options": kernel_options,
    })
    steps, sampler, init, step_size = opts["steps"], opts["sampler"], opts["init"], opts["step_size"]
    noise, temperature, clamp, sigmas = opts["noise"], opts["temperature"], opts["clamp"], opts["sigmas"]
    clip_grad, clip_grad_norm = opts["clip_grad"], opts["clip_grad_norm"]
    warmup, kernel_options, predictor = opts["warmup"], opts["kernel_options"], opts["predictor"]
    if predictor not in (None, "ddim"):
        raise CompositionError(f"predictor must be 'ddim' or None, got {predictor!r}")
    if predictor is not None and not sigmas:
        raise CompositionError(f"predictor='{predictor}' moves chains between noise levels: give sigmas= too")
    kernel, name = resolve_kernel(sampler, registry)
    if autocast is not None and not (isinstance(autocast, torch.dtype) and autocast.is_floating_point):
        raise CompositionError(f"autocast must be a floating torch.dtype such as torch.bfloat16, got {autocast!r}")
    steps, warmup, check_every = int(steps), int(warmup), int(check_every)
    if steps < 0 or warmup < 0 or check_every < 1:
        raise CompositionError(f"need steps >= 0, warmup >= 0, check_every >= 1; got {steps}, {warmup}, {check_every}")

    dev = resolve_device(device, init, energy)
    if graph:
        if compile:
            raise CompositionError("give graph=True or compile=..., not both (graph=True is a compile mode)")
        compile = "reduce-overhead" if dev.type == "cuda" else True
    owner = device_of(energy)
    if owner is not None and owner != dev:
        energy.to(dev)
    dt = resolve_dtype(dtype, init, energy)
    event_shape = resolve_event_shape(energy, init)
    if isinstance(init, Tensor):
        if n is not None and int(n) != init.shape[0]:
            raise CompositionError(f"n={n} but the init tensor holds {init.shape[0]} chains")
        n = init.shape[0]
    n = 1000 if n is None else int(n)
    if n < 1:
        raise CompositionError(f"n must be >= 1, got {n}")

    if generator is not None and seed is not None:
        raise CompositionError("give seed or generator, not both")
    if generator is None:
        seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed)
        generator = torch.Generator(device=dev).manual_seed(seed)
    elif generator.device.type != dev.type:
        raise CompositionError(f"the generator is on {generator.device} but sampling runs on {dev}")
    domain = resolve_domain(energy, dev, dt)
    with frozen(energy):
        check_bounded(energy, event_shape, domain if clamp else None, dev, dt, allow_unbounded)

    slots = None
    if isinstance(init, Tensor):
        x0 = init.detach().to(device=dev, dtype=dt).clone()
    elif isinstance(init, ReplayBuffer):
        if init.data is not None and (init.data.device != dev or init.data.dtype != dt):
            init.data = init.data.to(device=dev, dtype=dt)  # the buffer follows the sampler
        x0, slots = init.sample(n, event_shape, domain, generator, dev, dt)
    else:
        x0 = draw_noise(init, n, event_shape, domain, generator, dev, dt)

    per_chain_mask = False
    if mask is not None:
        if not isinstance(init, Tensor):
            raise CompositionError("mask= needs an init tensor: its observed (True) entries are kept as given")
        mask = torch.as_tensor(mask, device=dev).to(torch.bool)
        try:
            ok = torch.broadcast_shapes(mask.shape, x0.shape) == x0.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise CompositionError(f"mask of shape {tuple(mask.shape)} does not broadcast to {tuple(x0.shape)}")
        per_chain_mask = mask.dim() == x0.dim() and mask.shape[0] == n and n > 1

    if noise != "exact":
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
            raise CompositionError(f"noise must be 'exact' or a non-negative float, got {noise!r}")
        if not getattr(kernel, "decoupled_noise", False):
            raise CompositionError(f"sampler '{name}' needs noise='exact' (its correctness depends on it)")
    extra = dict(kernel_options or {})
    population = getattr(kernel, "population", False)  # smc, pt: whole-population samplers
    if not population:
        check_kernel_options(kernel, name, extra)
    if getattr(kernel, "decoupled_noise", False):
        extra["noise"] = noise

    plan = build_plan(
        energy, steps, warmup, step_size, temperature, sigmas, check_every, tol, patience, compile, dev, dt
    )
    plan.predictor = predictor
    if getattr(kernel, "final_evaluation_optional", False) and not compile:  # the last gradient is never used
        plan.last_evaluation = "energy" if energies else "none"  # (compiled: one graph serves every step)
    adapter = None
    if warmup > 0 and adapt and getattr(kernel, "metropolis", False):
        goal = target_accept if target_accept is not None else getattr(kernel, "target_accept", None) or 0.574
        adapter = DualAveraging(goal, dev, dt)

    sigma0: Any = plan.sigmas[0] if plan.sigmas else None
    if sigma0 is not None and compile:
        sigma0 = torch.full((n,), sigma0, device=dev, dtype=dt)
    use_domain = clamp and domain is not None
    target = Target(
        energy,
        sigma=sigma0,
        clip_grad=clip_grad,
        clip_grad_norm=clip_grad_norm,
        mask=mask,
        low=domain[0] if use_domain else None,
        high=domain[1] if use_domain else None,
        autocast=autocast,
        memo=not compile,
    )
    if population:
        with frozen(energy):
            return population_result(kernel, target, x0, plan, generator, extra, domain, event_shape, progress,
                                     name, seed, warmup)
    step_fn = kernel.step
    contexts = contextlib.ExitStack()
    if compile:
        contexts = compile_contexts()
        mode = compile if isinstance(compile, str) else None
        step_fn = torch.compile(kernel.step, mode=mode)
        if mode is not None and ("reduce-overhead" in mode or "cudagraphs" in mode):
            step_fn = owning_outputs(step_fn)

    with contexts, frozen(energy):  # autograd builds only the graph for x (composer.sampling.freeze)
        with naming_experts(energy, x0, plan.sigmas[0] if plan.sigmas else None):  # a plugin's bug: name it
            state = kernel.init(x0, target)
        initial_ok = check_initial(state, energy, n)
        metropolis = bool(getattr(kernel, "metropolis", False))
        grad = getattr(state, "grad", None)
        recorder = TraceRecorder(plan.total, min(check_every, max(plan.total, 1)), n, metropolis, dev, dt,
                                 grad_numel=grad.numel() if isinstance(grad, Tensor) else None, enabled=trace)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=plan.total, desc=f"sampling ({name})", unit="step")
        runner = Runner(kernel, step_fn, energy, target, state, generator, plan, recorder, adapter, extra,
                        per_chain_mask=per_chain_mask, sigma_as_tensor=bool(compile), progress=bar,
                        initial_ok=initial_ok)
        try:
            runner.run()
        finally:
            if bar is not None:
                bar.close()
    if guard:  # runs gone wrong while finite (reads the trace once)
        check_run(recorder.result(runner.steps_done), warmup, name, final_step_size(runner, plan), plan.temperatures,
                  plan.sigmas, use_domain, mask is not None)
    x, e, steps_run = runner.outputs()
    if slots is not None:
        init.update(slots, x)
    last = plan.total - 1
    final_step = 0.0
    if last >= 0:
        scale = runner.scale if isinstance(runner.scale, float) else float(runner.scale)
        base = plan.step_sizes[last]
        final_step = scale * float(base)
    if domain is not None and not use_domain:  # chains moved freely: the samples are projected into the domain
        x = torch.maximum(torch.minimum(x, domain[1]), domain[0])
        if e is not None:
            with torch.no_grad():
                e = call_energy(energy, x, runner.sigma)
    return SampleResult(
        x=x.detach(),
        energy=e.detach() if e is not None else None,
        trace=recorder.result(runner.steps_done),
        steps_run=steps_run,
        step_size=final_step,
        warmup=warmup,
        sampler=name,
        seed=seed,
    )


def population_result(kernel: Any, target: Target, x0: Tensor, plan: Any, generator: torch.Generator,
                      options: dict[str, Any], domain: Any, event_shape: tuple[int, ...], progress: bool, name: str,
                      seed: int | None, warmup: int) -> SampleResult:
    """Run a population sampler (``composer.sampling.smc``, ``composer.sampling.pt``) and wrap its output."""
    out = kernel.run(target, x0, plan, generator, options, domain=domain, event_shape=event_shape,
                     progress=progress)
    x = out["x"]
    if domain is not None:
        x = torch.maximum(torch.minimum(x, domain[1]), domain[0])
    steps = torch.full((x.shape[0],), int(out["steps"]), dtype=torch.long, device=x.device)
    return SampleResult(x=x.detach(), energy=out["energy"].detach(), trace=out["trace"], steps_run=steps,
                        step_size=float(out["step_size"]), warmup=warmup, sampler=name, seed=seed,
                        log_z=out.get("log_z"), log_z_se=out.get("log_z_se"))


def _stratified(energy: Energy, strata: tuple[Strata, ...], call: dict[str, Any]) -> SampleResult:
    """``sample`` of each stratum of ``energy`` (``composer.sampling.strata``), merged into one result."""
    n = 1000 if call["n"] is None else int(call["n"])
    if n < 1:
        raise CompositionError(f"n must be >= 1, got {n}")
    seed = int(torch.randint(0, 2**62, (1,)).item()) if call["seed"] is None else int(call["seed"])
    cells = combinations(strata)
    counts = allocate(n, [w for _, w in cells])
    results, kept = [], []
    for index, ((values, _), count) in enumerate(zip(cells, counts)):
        if count == 0:
            continue
        options = dict(call, energy=stratum_energy(energy, strata, values), n=count,
                       seed=stratum_seed(seed, index), stratify=False)
        results.append(sample(**options))
        kept.append(count)
    return merge(results, kept, seed)
