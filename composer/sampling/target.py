"""``Target``: the energy a kernel samples, with the driver's gradient and state transforms.

A kernel receives an ``energy_fn``. The driver passes a ``Target``, which evaluates the
composition (passing the noise level ``sigma`` to noise-conditional experts) and applies, when
asked, element-wise or per-chain gradient clipping, a mask of observed entries and the
domain box. A plain callable ``x -> (B,)`` is wrapped by ``as_target`` with no transforms,
so kernels can be used on their own::

    >>> import torch
    >>> from composer.sampling import langevin
    >>> state = langevin.init(torch.zeros(4, 2), lambda x: 0.5 * (x ** 2).sum(-1))
    >>> state.energy
    tensor([0., 0., 0., 0.])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from composer.energy import call_energy
from composer.sampling.memo import close_scope, open_scope

_FIELDS = ("energy", "sigma", "clip_grad", "clip_grad_norm", "mask", "low", "high", "autocast", "memo")


class Target:
    """An energy with the sampler's transforms; the ``energy_fn`` every kernel receives.

    Args:
        energy: callable ``x: (B, *event) -> (B,)`` (an ``Energy`` or any function).
        sigma: noise level passed to noise-conditional energies (``None``: not passed).
        clip_grad: clip every gradient entry to ``[-clip_grad, clip_grad]`` (IGEBM style).
        clip_grad_norm: rescale each chain's gradient to L2 norm at most ``clip_grad_norm``.
        mask: bool tensor broadcastable to ``x``; ``True`` marks observed entries, which
            get a zero drift and are kept bit-identical by ``constrain``/``freeze``.
        low, high: domain box broadcastable to one sample; ``None`` for unbounded.
        autocast: evaluate the energy under ``torch.autocast`` in this dtype (e.g. ``torch.bfloat16``);
            the energies are returned in the samples' dtype, and the gradient is with respect to the
            samples (in their dtype). ``None``: no autocast.
        memo: evaluate in a ``composer.sampling.memo`` scope (parts needing one network on one input share
            its call); ``False`` for steps compiled with ``torch.compile``.
    """

    __slots__ = ("energy", "sigma", "clip_grad", "clip_grad_norm", "mask", "low", "high", "autocast", "memo",
                 "_plain")

    def __init__(
        self,
        energy: Callable[..., Tensor],
        sigma: Any = None,
        clip_grad: float | None = None,
        clip_grad_norm: float | None = None,
        mask: Tensor | None = None,
        low: Tensor | None = None,
        high: Tensor | None = None,
        autocast: torch.dtype | None = None,
        memo: bool = True,
    ):
        self.energy = energy
        self.sigma = sigma
        self.clip_grad = clip_grad
        self.clip_grad_norm = clip_grad_norm
        self.mask = mask
        self.low = low
        self.high = high
        self.autocast = autocast
        self.memo = memo
        self._plain = clip_grad is None and clip_grad_norm is None and mask is None

    def replace(self, **changes: Any) -> Target:
        """A copy with some fields changed (e.g. ``sigma`` for the next noise level)."""
        fields = {k: getattr(self, k) for k in _FIELDS}
        fields.update(changes)
        return Target(**fields)

    # -- evaluation ---------------------------------------------------------------------------
    def __call__(self, x: Tensor) -> Tensor:
        """Energies ``(B,)`` of ``x: (B, *event)``, in one ``composer.sampling.memo`` scope (parts of the
        composition that need one network on one input share its call)."""
        if not self.memo:
            return self._evaluate(x)
        token = open_scope()
        try:
            return self._evaluate(x)
        finally:
            close_scope(token)

    def _evaluate(self, x: Tensor) -> Tensor:
        if self.autocast is None:
            return call_energy(self.energy, x, self.sigma)
        with torch.autocast(x.device.type, dtype=self.autocast):
            e = call_energy(self.energy, x, self.sigma)
        return e.to(x.dtype)

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Energies ``(B,)`` and the raw gradient ``dE/dx`` ``(B, *event)``, both detached.

        Exactly one autograd call for the whole composition. Only ``x`` is differentiated:
        nothing is accumulated into the experts' parameters.
        """
        if torch.is_grad_enabled():
            xr = x.detach().requires_grad_(True)
            e = self(xr)
            (g,) = torch.autograd.grad(e.sum(), xr)
        else:
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                e = self(xr)
                (g,) = torch.autograd.grad(e.sum(), xr)
        return e.detach(), g

    # -- transforms ---------------------------------------------------------------------------
    def drift(self, grad: Tensor) -> Tensor:
        """The gradient used to move: clipped, and zero on observed entries."""
        if self._plain:
            return grad
        if self.clip_grad is not None:
            grad = grad.clamp(-self.clip_grad, self.clip_grad)
        if self.clip_grad_norm is not None:
            norm = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1)
            factor = (self.clip_grad_norm / norm.clamp_min(1e-30)).clamp_max(1.0)
            grad = grad * factor.view(-1, *([1] * (grad.dim() - 1)))
        if self.mask is not None:
            grad = grad.masked_fill(self.mask, 0.0)
        return grad

    def freeze(self, x_new: Tensor, x: Tensor) -> Tensor:
        """``x_new`` with the observed entries copied bit-identically from ``x``."""
        return x_new if self.mask is None else torch.where(self.mask, x, x_new)

    def constrain(self, x_new: Tensor, x: Tensor) -> Tensor:
        """Clamp ``x_new`` to the domain (if any), then ``freeze`` the observed entries."""
        if self.low is not None:
            x_new = torch.clamp(x_new, self.low, self.high)
        return self.freeze(x_new, x)

    def admissible(self, x: Tensor) -> Tensor | None:
        """``(B,)`` bool: the chain's free entries lie inside the domain; ``None`` without a domain."""
        if self.low is None:
            return None
        inside = (x >= self.low) & (x <= self.high)
        if self.mask is not None:
            inside = inside | self.mask  # observed entries are given, not proposed
        return inside.reshape(x.shape[0], -1).all(dim=1)


def as_target(energy_fn: Callable[..., Tensor] | Target) -> Target:
    """``energy_fn`` itself if it is a ``Target``, else a ``Target`` with no transforms."""
    return energy_fn if isinstance(energy_fn, Target) else Target(energy_fn)


def axpy(x: Tensor, a: float | Tensor, y: Tensor) -> Tensor:
    """``x + a * y`` in one kernel for a float ``a``, or a 0-dim / broadcastable tensor ``a``."""
    if isinstance(a, Tensor):
        return torch.addcmul(x, a, y)
    return torch.add(x, y, alpha=a)


def axpy_(x: Tensor, a: float | Tensor, y: Tensor) -> Tensor:
    """In-place ``x += a * y`` (``x`` must be a fresh tensor owned by the caller); returns ``x``."""
    if isinstance(a, Tensor):
        return x.addcmul_(a, y)
    return x.add_(y, alpha=a)


def sqrt(v: float | Tensor) -> float | Tensor:
    """Square root of a float or a tensor."""
    return torch.sqrt(v) if isinstance(v, Tensor) else v ** 0.5


def batch_view(v: Tensor, like: Tensor) -> Tensor:
    """``v: (B,)`` viewed as ``(B, 1, ..., 1)`` to broadcast against ``like: (B, *event)``."""
    return v.view(-1, *([1] * (like.dim() - 1)))
