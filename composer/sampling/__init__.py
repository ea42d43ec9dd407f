"""The shared sampler: stateless kernels, schedules, a replay buffer and the ``sample`` driver.

    >>> import composer
    >>> from composer.sampling import sample
    >>> g = composer.as_energy(lambda x: 0.5 * (x ** 2).sum(-1), event_shape=(2,))
    >>> sample(g, n=100, steps=10, seed=0).x.shape
    torch.Size([100, 2])

Kernels (``langevin``, ``mala``, ``hmc``, or any registered by a plugin) follow the protocol in
``composer.sampling.langevin``: ``init(x, energy_fn) -> state`` and
``step(state, energy_fn, *, step_size, temperature, generator, ...) -> (state, info)``. The population
samplers ``smc`` (sequential Monte Carlo: mode weights right, ``log Z``; ``composer.sampling.smc``) and ``pt``
(parallel tempering; ``composer.sampling.pt``) run whole populations through ``run`` and move them with MALA.
"""

from composer.sampling import schedules
from composer.sampling.buffer import ReplayBuffer
from composer.sampling.driver import SampleResult, sample
from composer.sampling.hmc import HMC, hmc
from composer.sampling.langevin import Kernel, Langevin, LangevinState, StepInfo, langevin
from composer.sampling.mala import MALA, mala
from composer.sampling.pt import ParallelTempering, pt
from composer.sampling.smc import SMC, smc
from composer.sampling.target import Target, as_target

__all__ = [
    "HMC",
    "MALA",
    "ParallelTempering",
    "SMC",
    "Kernel",
    "Langevin",
    "LangevinState",
    "ReplayBuffer",
    "SampleResult",
    "StepInfo",
    "Target",
    "as_target",
    "hmc",
    "langevin",
    "mala",
    "pt",
    "sample",
    "schedules",
    "smc",
]
