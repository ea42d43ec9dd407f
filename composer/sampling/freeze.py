"""Parameters frozen for the duration of a chain: autograd builds only the graph for ``x``.

A sampler differentiates the energy with respect to the samples only. While a parameter has
``requires_grad=True``, ``autograd.grad(E(x).sum(), x)`` still records everything a weight gradient
would need (transposed-weight nodes, saved inputs, gradient accumulators) and then throws it away.
``frozen(energy)`` sets ``requires_grad=False`` on every parameter reachable from the composition for
the duration of a ``with`` block and restores each flag exactly afterwards, also on an exception or
``KeyboardInterrupt``. The maths is unchanged: the same kernels compute ``dE/dx``.

Which parameters: those of every module of the composition (``energy.parameters()``: shared modules
counted once, a ``ConditionalEnergy``'s ``base``, a DDP wrapper's inner module), plus modules a module
keeps outside its registered children, in a plain attribute, list, tuple or dict value (e.g. the
trainer's ``BoundNetwork`` holds its network in a list so that it is not a child).

Concurrency: freezes are reference-counted per parameter under one lock. The first ``frozen`` to
reach a parameter records its flag and clears it; the last one to leave restores it. So two threads
sampling one composition (or compositions sharing an expert) never restore a flag while the other
still runs, and never record a flag the other had cleared. While any chain runs, the shared
parameters read ``requires_grad=False`` in every thread: do not train a module in one thread while
sampling it in another (the same holds for any sampler that freezes).

    >>> import torch, composer
    >>> net = torch.nn.Linear(2, 1)
    >>> energy = composer.as_energy(net, event_shape=(2,))
    >>> with frozen(energy):
    ...     net.weight.requires_grad
    False
    >>> net.weight.requires_grad
    True

``ENABLED = False`` (module attribute) turns freezing off, for comparisons.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

ENABLED = True
"""Freeze parameters while sampling (``False``: evaluate with the flags as they are)."""

_lock = threading.Lock()
_held: dict[int, list[Any]] = {}  # id(param) -> [param, count, original requires_grad]
_MODULE_INTERNALS = frozenset(nn.Module().__dict__)  # _parameters, _buffers, _modules, hook tables, ...


def sampling_parameters(root: Any) -> list[Tensor]:
    """Every parameter reachable from ``root`` (each once, in a stable order).

    Walks ``root.modules()`` and, for each module, modules held in plain attributes, lists, tuples
    and dict values that are not registered children (one level deep: the container itself, not
    containers inside it).
    """
    if not isinstance(root, nn.Module):
        return []
    seen_modules: set[int] = set()
    seen_params: set[int] = set()
    out: list[Tensor] = []
    stack = [root]
    while stack:
        top = stack.pop()
        for m in top.modules():
            if id(m) in seen_modules:
                continue
            seen_modules.add(id(m))
            for p in m._parameters.values():
                if p is not None and id(p) not in seen_params:
                    seen_params.add(id(p))
                    out.append(p)
            for key, value in m.__dict__.items():
                if key in _MODULE_INTERNALS:  # parameters, buffers, registered children, hooks
                    continue
                if isinstance(value, nn.Module):
                    stack.append(value)
                elif isinstance(value, (list, tuple)):
                    stack.extend(v for v in value if isinstance(v, nn.Module))
                elif isinstance(value, dict):
                    stack.extend(v for v in value.values() if isinstance(v, nn.Module))
    return out


def freeze(params: list[Tensor]) -> list[Tensor]:
    """Clear ``requires_grad`` on ``params`` (reference-counted); returns what ``thaw`` needs."""
    with _lock:
        for p in params:
            entry = _held.get(id(p))
            if entry is None:
                _held[id(p)] = [p, 1, p.requires_grad]
                if p.requires_grad:
                    p.requires_grad_(False)
            else:
                entry[1] += 1
    return params


def thaw(params: list[Tensor]) -> None:
    """Undo one ``freeze(params)``: the last holder of a parameter restores its original flag."""
    with _lock:
        for p in params:
            entry = _held.get(id(p))
            if entry is None:  # pragma: no cover - unbalanced call
                continue
            entry[1] -= 1
            if entry[1] == 0:
                del _held[id(p)]
                if entry[2]:
                    p.requires_grad_(True)


@contextmanager
def frozen(energy: Any) -> Iterator[None]:
    """Freeze every parameter reachable from ``energy`` (see the module docstring) inside the block."""
    if not ENABLED:
        yield
        return
    params = freeze(sampling_parameters(energy))
    try:
        yield
    finally:
        thaw(params)
