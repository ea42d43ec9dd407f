"""One evaluation, one call per network: results shared between parts of a composition.

Two parts of a composition sometimes need the same network on the same input, e.g. a concept family
built by Bayes' rule over class-conditional energies whose mixture is also part of the prior: the
prior's mixture and the value's likelihood both need every value's energy. The sampler's ``Target``
opens an ``evaluation()`` scope around each energy (and gradient) evaluation; inside it,
``shared(key, fn)`` computes ``fn()`` once per key and returns the same tensor to every part, so autograd
sums both parts' gradients through one backward pass of the network. The scope ends with the
evaluation, so nothing is kept from one evaluation to the next (no stale results, no retained graphs).
Outside a scope (a plain call of an energy, a compiled sampler step, or while ``torch.compile`` traces)
``shared`` just calls ``fn``.

    >>> import torch
    >>> calls = []
    >>> def energies():
    ...     calls.append(1)
    ...     return torch.ones(2)
    >>> x = torch.zeros(2)
    >>> with evaluation():
    ...     a = shared(("net", x), energies)
    ...     b = shared(("net", x), energies)
    >>> a is b, len(calls)
    (True, 1)

A key is a tuple of objects (modules, tensors, floats); tensors are matched by identity and version
(an in-place change is a different input), everything else by identity or equality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

_scope: ContextVar[dict | None] = ContextVar("composer_evaluation_scope", default=None)


@contextmanager
def evaluation() -> Iterator[None]:
    """A scope in which ``shared`` results are reused (one energy evaluation)."""
    token = open_scope()
    try:
        yield
    finally:
        close_scope(token)


def open_scope() -> Any:
    """Open a scope (what ``evaluation`` does, without a context manager: for hot paths); pass the
    result to ``close_scope``. (Code compiled with ``torch.compile`` should not open scopes: the sampler's
    compiled steps do not.)"""
    return _scope.set({})


def close_scope(token: Any) -> None:
    """Close the scope ``open_scope`` returned."""
    if token is not None:
        _scope.reset(token)


def _part(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return ("t", id(obj), obj._version)
    if isinstance(obj, (int, float, str, bool, type(None))):
        return obj
    return ("o", id(obj))


def shared(key: tuple, fn: Callable[[], Any]) -> Any:
    """``fn()``, computed once per ``key`` inside an ``evaluation()`` scope (see the module docstring)."""
    table = _scope.get()
    if table is None or torch.compiler.is_compiling():
        return fn()
    k = (tuple(_part(o) for o in key), torch.is_grad_enabled())
    hit = table.get(k)
    if hit is None:
        hit = table[k] = (key, fn())  # the key's objects stay referenced: their ids cannot be reused meanwhile
    return hit[1]
