"""Kernel protocol and the unadjusted Langevin kernel (ULA).

Kernels are stateless, in the style of blackjax: a ``NamedTuple`` state whose fields are
tensors with a leading chain dimension (at least ``x``, ``energy`` and ``grad``), and

* ``init(x, energy_fn) -> state``
* ``step(state, energy_fn, *, step_size, temperature=1.0, generator=None, **params) -> (state, info)``

``energy_fn`` is a ``composer.sampling.Target`` (or any callable ``x -> (B,)``, wrapped by
``as_target``). ``info`` may carry ``acceptance`` ``(B,)``, the per-chain acceptance
probability of Metropolis kernels. Kernels with ``metropolis = True`` reject proposals outside
the domain instead of clamping them, and can adapt their step size toward ``target_accept``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from composer.sampling.target import Target, as_target, axpy, axpy_, sqrt


class LangevinState(NamedTuple):
    """State shared by the built-in kernels.

    Attributes:
        x: current samples ``(B, *event)``.
        energy: their energies ``(B,)``.
        grad: the raw energy gradient at ``x``, ``(B, *event)``.
    """

    x: Tensor
    energy: Tensor
    grad: Tensor


class StepInfo(NamedTuple):
    """What a step reports besides the state.

    Attributes:
        acceptance: per-chain acceptance probability ``(B,)`` (Metropolis kernels), else ``None``.
        accepted: per-chain bool ``(B,)``: the proposal was taken (Metropolis kernels), else ``None``.
    """

    acceptance: Tensor | None = None
    accepted: Tensor | None = None


@runtime_checkable
class Kernel(Protocol):
    """What ``register_samplers`` expects: a stateless kernel object."""

    def init(self, x: Tensor, energy_fn: Callable[[Tensor], Tensor]) -> Any: ...

    def step(self, state: Any, energy_fn: Callable[[Tensor], Tensor], **params: Any) -> tuple[Any, Any]: ...


def init_state(x: Tensor, energy_fn: Callable[[Tensor], Tensor] | Target) -> LangevinState:
    """Evaluate energy and gradient at ``x``: the initial state of the built-in kernels."""
    energy, grad = as_target(energy_fn).value_and_grad(x)
    return LangevinState(x.detach(), energy, grad)


def noise_std(noise: str | float, step_size: float | Tensor, temperature: float | Tensor) -> float | Tensor:
    """The noise scale: ``sqrt(2 * step * T)`` for ``"exact"``, else ``noise * sqrt(T)``."""
    if isinstance(noise, str):
        if noise != "exact":
            raise ValueError(f"noise must be 'exact' or a float, got {noise!r}")
        return sqrt(2.0 * step_size * temperature)
    return noise if (not isinstance(temperature, Tensor) and temperature == 1.0) else noise * sqrt(temperature)


class Langevin:
    """Unadjusted Langevin: ``x <- x - step * grad + noise * xi``, ``xi ~ N(0, I)``.

    ``noise="exact"`` uses ``sqrt(2 * step * T)``: the chain targets ``exp(-E / T)`` as
    ``step -> 0`` (with a bias of order ``step``). A float gives the IGEBM-style decoupled
    noise scale (Du & Mordatch 2019: step 10, noise 0.005, element-wise clip 0.01, 60 steps,
    clamp to [0, 1]), multiplied by ``sqrt(T)``. After the move the state is clamped to the
    domain and observed entries are restored (see ``Target.constrain``). One energy-and-gradient
    evaluation per step.
    """

    name = "langevin"
    metropolis = False
    target_accept: float | None = None
    decoupled_noise = True
    final_evaluation_optional = True  # step(..., evaluate="energy" | "none") is supported

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
        noise: str | float = "exact",
        evaluate: str = "full",
    ) -> tuple[LangevinState, StepInfo]:
        """One move of every chain. Returns the new state and an empty ``StepInfo``.

        ``evaluate`` says what is computed at the new point: ``"full"`` energy and gradient (what
        the next step needs), ``"energy"`` the energy only (a last step: no backward pass), or
        ``"none"`` nothing (a last step whose energies nobody reads); what is not computed is ``None``.
        """
        target = as_target(energy_fn)
        x = state.x
        std = noise_std(noise, step_size, temperature)
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x_new = axpy(x, -step_size, target.drift(state.grad))
        x_new = target.constrain(axpy_(x_new, std, xi), x)
        if evaluate != "full":
            if evaluate == "none":
                return LangevinState(x_new, None, None), StepInfo()
            with torch.no_grad():
                return LangevinState(x_new, target(x_new).detach(), None), StepInfo()
        energy, grad = target.value_and_grad(x_new)
        return LangevinState(x_new, energy, grad), StepInfo()

    def __repr__(self) -> str:
        return "langevin"


langevin = Langevin()
