"""What the population samplers (``smc``, ``pt``) share: a reference density, tempered energies,
systematic resampling and step-size adaptation.

A path of densities joins a tractable, normalised *reference* ``p_0`` to the target
``pi(x) ∝ exp(-E(x) / T)``::

    pi_beta(x) ∝ exp(-beta * E(x) / T) * p_0(x)^(1 - beta),      beta in [0, 1]

so ``E_beta(x) = beta * U(x) + R(x)`` with ``U = E / T - R`` and ``R = -log p_0``; every
``pi_beta`` is proper (for ``beta < 1`` its tails are the reference's). The references are the
uniform box of the energy's domain and a broad isotropic Gaussian::

    >>> import torch
    >>> ref = Reference.gaussian(scale=2.0, event_shape=(1,))
    >>> round(float(ref.energy(torch.zeros(1, 1))), 4)    # -log N(0; 0, 4) = 0.5 log(8 pi)
    1.6121
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from composer.energy import call_energy
from composer.errors import CompositionError


def plan_temperature(plan: Any, name: str) -> float:
    """The one temperature of the driver's ``plan`` (population samplers take no temperature schedule)."""
    values = plan.temperatures
    if isinstance(values, Tensor):
        values = values.tolist()
    if len(values) == 0:
        return 1.0
    if len(set(float(v) for v in values[:2])) > 1 or float(values[0]) != float(values[len(values) - 1]):
        raise CompositionError(f"sampler '{name}' takes a constant temperature, not a schedule")
    return float(values[0])


class Reference:
    """A normalised reference density ``p_0``: uniform on a box or an isotropic Gaussian.

    Args:
        kind: ``"uniform"`` or ``"gaussian"``.
        low, high: the box (``"uniform"``), broadcastable to one sample.
        mean, scale: centre and standard deviation (``"gaussian"``).
        event_shape: shape of one sample.
    """

    def __init__(self, kind: str, event_shape: Sequence[int], low: Tensor | None = None, high: Tensor | None = None,
                 mean: float = 0.0, scale: float = 3.0):
        if kind not in ("uniform", "gaussian"):
            raise CompositionError(f"reference must be 'uniform' or 'gaussian', got {kind!r}")
        if kind == "uniform" and low is None:
            raise CompositionError("reference='uniform' needs an energy with a domain; use reference='gaussian'")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise CompositionError(f"the reference scale must be a positive number, got {scale!r}")
        self.kind, self.event_shape = kind, tuple(event_shape)
        self.low, self.high, self.mean, self.scale = low, high, float(mean), float(scale)
        self.dim = math.prod(self.event_shape)
        if kind == "uniform":
            width = torch.broadcast_to(high - low, self.event_shape)
            self.log_volume = float(torch.log(width.double()).sum())

    @classmethod
    def gaussian(cls, scale: float, event_shape: Sequence[int], mean: float = 0.0) -> Reference:
        return cls("gaussian", event_shape, mean=mean, scale=scale)

    def draw(self, n: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``n`` independent samples ``(n, *event_shape)``."""
        shape = (n, *self.event_shape)
        if self.kind == "uniform":
            u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            return self.low + (self.high - self.low) * u
        return self.mean + self.scale * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def energy(self, x: Tensor) -> Tensor:
        """``R(x) = -log p_0(x)``, ``(B,)`` (inside the box for ``"uniform"``)."""
        if self.kind == "uniform":
            return torch.full((x.shape[0],), self.log_volume, dtype=x.dtype, device=x.device)
        sq = (x - self.mean).reshape(x.shape[0], -1).square().sum(1)
        return 0.5 * sq / self.scale**2 + 0.5 * self.dim * math.log(2 * math.pi * self.scale**2)

    def step_guess(self) -> float:
        """A MALA step that moves well on the reference itself (adapted from there on)."""
        if self.kind == "uniform":
            return float((self.high - self.low).min()) ** 2 / 16
        return 0.5 * self.scale**2

    def describe(self) -> str:
        if self.kind == "uniform":
            return "uniform on the domain"
        return f"Gaussian(mean {self.mean:g}, std {self.scale:g})"


def reference_for(options: dict[str, Any], domain: tuple[Tensor, Tensor] | None,
                  event_shape: Sequence[int]) -> Reference:
    """The reference named by ``options`` (``reference``, ``scale``, ``mean``): by default the
    uniform box when the energy has a domain, else ``N(0, 3^2 I)``."""
    kind = options.pop("reference", None) or ("uniform" if domain is not None else "gaussian")
    scale = options.pop("scale", 3.0)
    mean = options.pop("mean", 0.0)
    low, high = domain if domain is not None else (None, None)
    return Reference(kind, event_shape, low, high, mean=mean, scale=scale)


class Tempered:
    """``E_beta(x) = beta * U(x) + R(x)`` with ``U = E / T - R``: the energy ``pi_beta`` a kernel moves on.

    ``beta`` is a float or a ``(B,)`` tensor (one inverse temperature per chain, parallel tempering).
    Each call keeps ``U`` of the points it evaluated in ``last_u`` (detached), so a kernel's step
    gives the samplers the target's energies of its proposals without another evaluation.
    """

    def __init__(self, energy: Any, sigma: Any, temperature: float, reference: Reference, beta: float | Tensor):
        self.energy, self.sigma, self.temperature = energy, sigma, float(temperature)
        self.reference, self.beta = reference, beta
        self.last_u: Tensor | None = None

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(U(x), R(x))``, each ``(B,)`` (differentiable)."""
        e = call_energy(self.energy, x, self.sigma)
        r = self.reference.energy(x)
        return e / self.temperature - r, r

    def __call__(self, x: Tensor) -> Tensor:
        u, r = self.split(x)
        self.last_u = u.detach()
        return self.beta * u + r


def systematic_resample(log_w: Tensor, generator: torch.Generator) -> Tensor:
    """Systematic resampling of each row: ``(K, m)`` log-weights -> ``(K, m)`` indices into the row.

    One uniform per row; particle ``i`` is copied ``floor`` or ``ceil`` of ``m * W_i`` times.
    """
    k, m = log_w.shape
    w = torch.softmax(log_w, dim=1)
    cdf = torch.cumsum(w, dim=1)
    cdf[:, -1] = 1.0
    u = (torch.rand((k, 1), generator=generator, device=log_w.device, dtype=log_w.dtype)
         + torch.arange(m, device=log_w.device, dtype=log_w.dtype)) / m
    return torch.searchsorted(cdf, u).clamp_max(m - 1)


def ess_fraction(log_w: Tensor) -> Tensor:
    """Effective sample size over the row's size, ``(K,)``, of ``(K, m)`` log-weights."""
    w = torch.softmax(log_w, dim=1)
    return 1.0 / (w.square().sum(1) * log_w.shape[1])


class StepAdapter:
    """Per-group MALA step sizes adapted toward an acceptance rate: ``log s += gain * (acc - goal)``.

    Args:
        step: initial step, a float or a ``(G,)`` tensor (one per group of chains).
        goal: target acceptance (0.574 for MALA).
        gain: adaptation gain per step.
    """

    def __init__(self, step: float | Tensor, goal: float = 0.574, gain: float = 1.5):
        self.log_step = torch.log(torch.as_tensor(step, dtype=torch.float64))
        self.goal, self.gain = goal, gain

    @property
    def step(self) -> Tensor:
        return self.log_step.exp()

    def update(self, acceptance: Tensor) -> None:
        acc = torch.nan_to_num(acceptance.double().cpu(), nan=0.0)
        self.log_step = (self.log_step + self.gain * (acc - self.goal)).clamp(-30.0, 10.0)


def move_kernel(name: str) -> Any:
    """The MCMC kernel that moves a population between (and at) temperatures: ``mala`` or ``hmc``."""
    from composer.sampling.hmc import hmc
    from composer.sampling.mala import mala

    kernels = {"mala": mala, "hmc": hmc}
    if name not in kernels:
        raise CompositionError(f"smc/pt move kernel must be 'mala' or 'hmc', got {name!r}")
    return kernels[name]


class PopulationKernel:
    """What the population samplers share. ``composer.sample`` hands them the whole run (``run``); used
    alone as a kernel (``init``/``step``) each is its move kernel at the target (MALA)."""

    name = "population"
    metropolis = True
    population = True
    target_accept = 0.574
    decoupled_noise = False

    def init(self, x: Tensor, energy_fn: Any) -> Any:
        return move_kernel("mala").init(x, energy_fn)

    def step(self, state: Any, energy_fn: Any, **params: Any) -> Any:
        return move_kernel("mala").step(state, energy_fn, **params)

    def __repr__(self) -> str:
        return self.name

    def checked_options(self, target: Any, options: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``options`` (``kernel_options``), after refusing a mask and options it does not take."""
        if target.mask is not None:
            raise CompositionError(f"sampler '{self.name}' draws its particles from a reference: it takes no "
                                   "mask= (use langevin or mala for inpainting)")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise CompositionError(f"sampler '{self.name}' has no option {', '.join(unknown)}; its options: "
                                   + "; ".join(f"{k}: {v}" for k, v in self.options.items()))
        return dict(options)
