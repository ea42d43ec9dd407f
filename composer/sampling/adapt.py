"""Step-size adaptation toward a target acceptance rate, entirely on the device.

Nesterov dual averaging of the log step size (Hoffman & Gelman 2014, Algorithm 5), driven by
the mean over chains of the per-step acceptance probability. Used by the driver during a
warm-up only: after the warm-up the step size is frozen to the averaged value, so the chain
that produces the returned samples is an exact Metropolis chain.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class DualAveraging:
    """Adapt a multiplier ``c`` of the step size toward ``target`` acceptance.

    Args:
        target: target mean acceptance probability (0.574 for MALA, 0.65 for HMC).
        device, dtype: where the adaptation state lives (no host synchronisation per update).
        gamma, t0, kappa: dual averaging constants (defaults of Hoffman & Gelman 2014).
    """

    def __init__(
        self,
        target: float,
        device: torch.device,
        dtype: torch.dtype,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ):
        if not 0.0 < target < 1.0:
            raise ValueError(f"target acceptance must be in (0, 1), got {target}")
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.mu = math.log(10.0)  # explore up to 10x the initial multiplier
        self.t = 0
        self.h = torch.zeros((), device=device, dtype=dtype)
        self.log_c = torch.zeros((), device=device, dtype=dtype)
        self.log_c_bar = torch.zeros((), device=device, dtype=dtype)

    @property
    def current(self) -> Tensor:
        """The multiplier to use for the next warm-up step (0-dim tensor)."""
        return self.log_c.exp()

    def update(self, acceptance: Tensor) -> Tensor:
        """Update with the per-chain acceptance probabilities ``(B,)``; returns ``current``."""
        self.t += 1
        t = self.t
        w = 1.0 / (t + self.t0)
        self.h = (1.0 - w) * self.h + w * (self.target - acceptance.mean())
        self.log_c = self.mu - (math.sqrt(t) / self.gamma) * self.h
        eta = t ** (-self.kappa)
        self.log_c_bar = eta * self.log_c + (1.0 - eta) * self.log_c_bar
        return self.current

    def final(self) -> float:
        """The averaged multiplier (one host synchronisation, at the end of the warm-up)."""
        return float(self.log_c_bar.exp().item()) if self.t else 1.0

    def state(self) -> tuple:
        return (self.t, self.h, self.log_c, self.log_c_bar)

    def restore(self, state: tuple) -> None:
        self.t, self.h, self.log_c, self.log_c_bar = state
