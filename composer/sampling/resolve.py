"""Turning ``sample()``'s arguments into what the loop needs: kernel, device, shapes, a plan.

Every check here raises ``CompositionError`` with one message naming the problem, before any
sampling work starts.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from composer.energy import Energy, device_of
from composer.errors import CompositionError
from composer.sampling.buffer import ReplayBuffer
from composer.sampling.runner import Plan
from composer.sampling.schedules import Repeat, Schedule, as_schedule, positive_values


def resolve_kernel(sampler: Any, registry: Any) -> tuple[Any, str]:
    """The kernel object and its name, from a registered name or a kernel object."""
    if isinstance(sampler, str):
        if registry is None:
            from composer.plugins import get_registry

            registry = get_registry()
        return registry.sampler(sampler).obj, sampler
    if callable(getattr(sampler, "init", None)) and callable(getattr(sampler, "step", None)):
        return sampler, getattr(sampler, "name", type(sampler).__name__)
    raise CompositionError(f"sampler must be a registered name or an object with init() and step(), got {sampler!r}")


def resolve_device(device: Any, init: Any, energy: Energy) -> torch.device:
    """``device``, else the init tensor's or buffer's device, else the energy's, else CPU."""
    if device is not None:
        dev = torch.device(device)
    elif isinstance(init, Tensor):
        dev = init.device
    elif isinstance(init, ReplayBuffer) and init.data is not None:
        dev = init.data.device
    else:
        dev = device_of(energy) or torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_dtype(dtype: Any, init: Any, energy: Energy) -> torch.dtype:
    """``dtype``, else the init tensor's, else the energy parameters', else torch's default."""
    if dtype is not None:
        return dtype
    if isinstance(init, Tensor) and init.is_floating_point():
        return init.dtype
    for p in energy.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def resolve_event_shape(energy: Energy, init: Any) -> tuple[int, ...]:
    """The shape of one sample: the energy's, else the init tensor's or buffer's; they must agree."""
    shape = energy.event_shape
    given = None
    if isinstance(init, Tensor):
        if init.dim() < 1:
            raise CompositionError("an init tensor needs a leading batch dimension: shape (n, *event_shape)")
        given = tuple(init.shape[1:])
    elif isinstance(init, ReplayBuffer) and init.data is not None:
        given = tuple(init.data.shape[1:])
    if shape is None and given is None:
        raise CompositionError(
            f"cannot tell the shape of a sample of `{energy.formula()}`: it has no event_shape; "
            "pass an init tensor of shape (n, *event_shape)"
        )
    if shape is not None and given is not None and tuple(shape) != given:
        raise CompositionError(f"init has samples of shape {given} but `{energy.formula()}` expects {tuple(shape)}")
    return tuple(shape) if shape is not None else given


def resolve_domain(energy: Energy, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
    """The energy's domain box on ``device`` in ``dtype``, or ``None``."""
    dom = energy.domain
    if dom is None:
        return None
    return dom[0].to(device=device, dtype=dtype), dom[1].to(device=device, dtype=dtype)


def compile_contexts() -> contextlib.ExitStack:
    """Settings for compiled steps: trace ``autograd.grad`` into the graph, eager random numbers."""
    stack = contextlib.ExitStack()
    dynamo = torch._dynamo.config
    if hasattr(dynamo, "trace_autograd_ops"):
        stack.enter_context(dynamo.patch(trace_autograd_ops=True))
    import torch._inductor.config as inductor

    if hasattr(inductor, "fallback_random"):
        stack.enter_context(inductor.patch(fallback_random=True))
    return stack


def owning_outputs(step_fn: Callable[..., tuple[Any, Any]]) -> Callable[..., tuple[Any, Any]]:
    """CUDA-graph modes reuse their output memory at the next call; the driver keeps states across
    steps (snapshots, early stop), so each step's outputs are copied out of the graph's pool."""

    def own(t: Any) -> Any:
        if isinstance(t, tuple) and hasattr(t, "_fields"):
            return type(t)(*(own(v) for v in t))
        return t.clone() if isinstance(t, Tensor) else t

    def step(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        torch.compiler.cudagraph_mark_step_begin()
        state, info = step_fn(*args, **kwargs)
        return own(state), own(info)

    return step


def build_plan(
    energy: Energy,
    steps: int,
    warmup: int,
    step_size: Any,
    temperature: Any,
    sigmas: Sequence[float] | None,
    check_every: int,
    tol: float | None,
    patience: int,
    compile: bool | str,
    device: torch.device,
    dtype: torch.dtype,
) -> Plan:
    """Per-step step sizes, temperatures and noise levels (host lists; tensors when compiled).

    With ``sigmas`` the main steps are split equally over the levels and level ``i`` scales the step
    by ``(sigma_i / sigma_min)^2`` (Song & Ermon 2019); the warm-up runs at the first level.
    """
    step_sched = as_schedule(step_size, "step_size")
    temp_sched = as_schedule(temperature, "temperature")
    if tol is not None and (not math.isfinite(tol) or tol < 0 or int(patience) < 1):
        raise CompositionError(f"need tol >= 0 and patience >= 1, got tol={tol}, patience={patience}")
    total = warmup + steps
    sig: list[float] | None = None
    if sigmas is None:
        step_all = _per_step(step_sched, steps, warmup, "step_size")
    else:
        levels = [float(s) for s in sigmas]
        if not levels or any(not math.isfinite(s) or s <= 0 for s in levels):
            raise CompositionError(f"sigmas must be a non-empty list of positive numbers, got {list(sigmas)}")
        if not getattr(energy, "noise_conditional", False):
            raise CompositionError(
                f"sigmas= given but `{energy.formula()}` is not noise-conditional (no expert takes a noise level)"
            )
        per_level = [levels[min(i * len(levels) // max(steps, 1), len(levels) - 1)] for i in range(steps)]
        sig = [levels[0]] * warmup + per_level
        base = list(_per_step(step_sched, steps, warmup, "step_size"))
        step_all = [s * (lv / levels[-1]) ** 2 for s, lv in zip(base, sig)]
    temp_all = _per_step(temp_sched, steps, warmup, "temperature")
    plan = Plan(total, warmup, step_all, temp_all, sig, check_every, tol, int(patience))
    if compile:  # varying Python floats would recompile the step at every new value
        if not isinstance(step_all, Repeat) and len(set(step_all)) > 1:
            plan.step_sizes = torch.tensor(step_all, device=device, dtype=dtype)
        if not isinstance(temp_all, Repeat) and len(set(temp_all)) > 1:
            plan.temperatures = torch.tensor(temp_all, device=device, dtype=dtype)
    return plan


def _per_step(schedule: Schedule, steps: int, warmup: int, name: str) -> Sequence[float]:
    """Values of ``warmup + steps`` steps: the first value during the warm-up, then the schedule."""
    if schedule.is_constant:
        return Repeat(positive_values(schedule, 1, name)[0], warmup + steps)
    values = positive_values(schedule, steps, name)
    first = values[0] if values else positive_values(schedule, 1, name)[0]
    return [first] * warmup + values


def check_initial(state: Any, energy: Energy, n: int) -> Tensor:
    """Check the energies' shape ``(n,)``; return (without synchronising) whether the state is finite."""
    e = state.energy
    if not isinstance(e, Tensor) or tuple(e.shape) != (n,):
        got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
        raise CompositionError(f"`{energy.formula()}` returned energies of shape {got}; expected ({n},), one per chain")
    ok = torch.isfinite(e).all()
    grad = getattr(state, "grad", None)
    if isinstance(grad, Tensor):
        ok = ok & torch.isfinite(grad).all()
    return ok


def check_kernel_options(kernel: Any, name: str, options: dict[str, Any]) -> None:
    """Every option must be a keyword of ``kernel.step`` (unless it takes ``**params``)."""
    if not options:
        return
    try:
        params = inspect.signature(kernel.step).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    reserved = {"state", "energy_fn", "step_size", "temperature", "generator", "noise"}
    accepted = [p for p in params if p not in reserved and p != "self"]
    for key in options:
        if key not in accepted or key in reserved:
            raise CompositionError(
                f"sampler '{name}' has no option '{key}'; its options: {', '.join(accepted) or 'none'}"
            )

