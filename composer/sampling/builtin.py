"""Built-in sampler kernels, registered through the same hook a plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from composer.hookspecs import hookimpl
from composer.sampling.hmc import hmc
from composer.sampling.langevin import langevin
from composer.sampling.mala import mala


@hookimpl
def register_samplers(register: Callable[..., Any]) -> None:
    register("langevin", langevin, doc="unadjusted Langevin (exact or IGEBM-style decoupled noise)")
    register("mala", mala, doc="Metropolis-adjusted Langevin, per-chain accept/reject")
    register("hmc", hmc, doc="Hamiltonian Monte Carlo (leapfrog), per-chain accept/reject")
