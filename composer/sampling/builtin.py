"""Built-in sampler kernels, registered through the same hook a plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from composer.hookspecs import hookimpl
from composer.sampling.hmc import hmc
from composer.sampling.langevin import langevin
from composer.sampling.mala import mala
from composer.sampling.pt import pt
from composer.sampling.smc import smc


@hookimpl
def register_samplers(register: Callable[..., Any]) -> None:
    register("langevin", langevin, doc="unadjusted Langevin (exact or IGEBM-style decoupled noise)")
    register("mala", mala, doc="Metropolis-adjusted Langevin, per-chain accept/reject")
    register("hmc", hmc, doc="Hamiltonian Monte Carlo (leapfrog), per-chain accept/reject")
    register("smc", smc, doc="sequential Monte Carlo: tempering from a reference with resampling and MALA moves; "
             "mode weights right, log Z with its error")
    register("pt", pt, doc="parallel tempering: replicas on a temperature ladder with neighbour swaps (long chains)")
