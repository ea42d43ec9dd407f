"""``ReplayBuffer``: persistent chains for short-run sampling (Du & Mordatch 2019).

A fixed number of slots lives on the sampling device. ``sample(n)`` picks ``n`` slots at
random, re-initialises each picked chain with probability ``reinit_prob`` from noise, and
``update(slots, x)`` writes the chains back to their slots after sampling. Passing a buffer
as ``init`` to ``composer.sampling.sample`` does both::

    >>> import torch, composer
    >>> from composer.sampling import ReplayBuffer, sample
    >>> e = composer.as_energy(lambda x: 0.5 * (x ** 2).sum(-1), event_shape=(2,))
    >>> buf = ReplayBuffer(capacity=100)
    >>> r = sample(e, n=8, steps=5, init=buf, seed=0)
    >>> buf.data.shape
    torch.Size([100, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from composer.errors import CompositionError

NoiseSpec = str | Callable[..., Tensor] | None


def draw_noise(
    kind: NoiseSpec,
    n: int,
    event_shape: Sequence[int],
    domain: tuple[Tensor, Tensor] | None,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """``n`` fresh samples ``(n, *event_shape)``: ``"uniform"`` over ``domain``, ``"gaussian"``
    (standard normal), a callable ``fn(n, generator=...)``, or ``None`` (uniform if there is a
    domain, else Gaussian)."""
    shape = (n, *event_shape)
    if callable(kind):
        x = kind(n, generator=generator)
        if not isinstance(x, Tensor) or tuple(x.shape) != shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise CompositionError(f"the init function must return a tensor of shape {shape}, got {got}")
        return x.to(device=device, dtype=dtype)
    if kind is None:
        kind = "uniform" if domain is not None else "gaussian"
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if kind == "uniform":
        if domain is None:
            raise CompositionError(
                "init='uniform' needs an energy with a domain; use init='gaussian' or give an init tensor"
            )
        low, high = domain
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return low + (high - low) * u
    raise CompositionError(f"unknown init {kind!r}: use 'uniform', 'gaussian', a tensor or a ReplayBuffer")


class ReplayBuffer:
    """Device-resident replay buffer of persistent chains.

    Args:
        capacity: number of slots.
        reinit_prob: probability that a sampled chain restarts from noise (0.05 in IGEBM).
        init: noise for the initial fill and re-initialisation: ``"uniform"`` (over the energy's
            domain), ``"gaussian"``, a callable ``fn(n, generator=...) -> (n, *event)``, or
            ``None`` (uniform if the energy has a domain, else Gaussian).

    The storage ``data`` of shape ``(capacity, *event)`` is created on first use, on the
    sampling device, filled with noise.
    """

    def __init__(self, capacity: int = 10_000, reinit_prob: float = 0.05, init: NoiseSpec = None):
        if int(capacity) < 1:
            raise CompositionError(f"ReplayBuffer capacity must be >= 1, got {capacity}")
        if not 0.0 <= float(reinit_prob) <= 1.0:
            raise CompositionError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
        self.capacity = int(capacity)
        self.reinit_prob = float(reinit_prob)
        self.init = init
        self.data: Tensor | None = None

    def __len__(self) -> int:
        return self.capacity

    def __repr__(self) -> str:
        shape = None if self.data is None else tuple(self.data.shape[1:])
        return f"ReplayBuffer(capacity={self.capacity}, reinit_prob={self.reinit_prob}, event_shape={shape})"

    def sample(
        self,
        n: int,
        event_shape: Sequence[int],
        domain: tuple[Tensor, Tensor] | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` chains.

        Returns:
            ``x`` of shape ``(n, *event_shape)`` (a copy) and ``slots`` ``(n,)`` int64, the slots
            to pass to ``update``.
        """
        event_shape = tuple(event_shape)
        if self.data is None:
            device = torch.device(device) if device is not None else torch.device("cpu")
            dtype = dtype or torch.get_default_dtype()
            self.data = draw_noise(self.init, self.capacity, event_shape, domain, generator, device, dtype)
        elif tuple(self.data.shape[1:]) != event_shape:
            raise CompositionError(
                f"the replay buffer holds samples of shape {tuple(self.data.shape[1:])}, "
                f"but the energy samples shape {event_shape}"
            )
        data = self.data
        slots = torch.randint(self.capacity, (n,), generator=generator, device=data.device)
        x = data[slots]
        if self.reinit_prob > 0:
            fresh = draw_noise(self.init, n, event_shape, domain, generator, data.device, data.dtype)
            reinit = torch.rand(n, generator=generator, device=data.device) < self.reinit_prob
            x = torch.where(reinit.view(-1, *([1] * len(event_shape))), fresh, x)
        return x, slots

    def update(self, slots: Tensor, x: Tensor) -> None:
        """Write chains ``x: (n, *event)`` back to ``slots: (n,)``."""
        if self.data is None:
            raise CompositionError("update() before sample(): the replay buffer is empty")
        self.data[slots] = x.detach().to(device=self.data.device, dtype=self.data.dtype)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and settings, for checkpoints."""
        return {"capacity": self.capacity, "reinit_prob": self.reinit_prob, "data": self.data}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()``; the stored data must match the capacity."""
        data = state.get("data")
        if data is not None and data.shape[0] != self.capacity:
            raise CompositionError(f"buffer data has {data.shape[0]} slots, capacity is {self.capacity}")
        self.reinit_prob = float(state.get("reinit_prob", self.reinit_prob))
        self.data = None if data is None else data.clone()
