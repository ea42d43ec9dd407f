"""Parameter checking shared by the toy experts, and their common base class.

Parameters arrive as written in the composition language (numbers and lists of numbers)
or from Python (also tensors). Each is turned into a floating tensor of a fixed rank, or
rejected with a ``ToyParameterError`` naming the expert and the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from composer import CompositionError, Energy


class ToyParameterError(CompositionError, ValueError):
    """A bad parameter of a toy expert (both a ``CompositionError`` and a ``ValueError``)."""


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, Real):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_numeric(v) for v in value)
    return False


def tensor_param(expert: str, name: str, value: Any, ranks: Sequence[int], what: str) -> Tensor:
    """``value`` as a floating tensor whose rank is one of ``ranks``.

    Args:
        expert: the expert's registered name, for the error message.
        name: the parameter's name, for the error message.
        value: a number, a (nested) list of numbers, or a tensor.
        ranks: the accepted numbers of dimensions (0 scalar, 1 vector, 2 matrix).
        what: the accepted form in words, e.g. ``"a number or a list of numbers"``.

    Returns:
        A tensor of the default dtype (a floating tensor keeps its dtype and device).
    """
    if isinstance(value, Tensor):
        t = value.detach().clone()
        if not t.is_floating_point():
            if t.dtype == torch.bool or t.is_complex():
                raise ToyParameterError(f"{expert}: {name} must be {what}, got a {t.dtype} tensor")
            t = t.to(torch.get_default_dtype())
    elif _is_numeric(value):
        try:
            t = torch.tensor(value, dtype=torch.get_default_dtype())
        except (TypeError, ValueError) as exc:  # ragged nested lists
            raise ToyParameterError(f"{expert}: {name} must be {what}, got {value!r} ({exc})") from None
    else:
        raise ToyParameterError(f"{expert}: {name} must be {what}, got {value!r}")
    if t.dim() not in ranks:
        raise ToyParameterError(f"{expert}: {name} must be {what}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ToyParameterError(f"{expert}: {name} must not be empty")
    if not torch.isfinite(t).all():
        raise ToyParameterError(f"{expert}: {name} must be finite, got {fmt(t)}")
    return t


def positive(expert: str, name: str, t: Tensor, allow_zero: bool = False) -> Tensor:
    """``t`` unchanged if every entry is > 0 (>= 0 with ``allow_zero``)."""
    bad = (t < 0) if allow_zero else (t <= 0)
    if bad.any():
        bound = ">= 0" if allow_zero else "> 0"
        raise ToyParameterError(f"{expert}: {name} must be {bound}, got {fmt(t)}")
    return t


def scalar_param(expert: str, name: str, value: Any, allow_zero: bool = False) -> Tensor:
    """A positive (or non-negative) finite number as a 0-d tensor."""
    t = tensor_param(expert, name, value, (0,), "a number")
    return positive(expert, name, t, allow_zero)


def int_param(expert: str, name: str, value: Any, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (an integral float such as ``2.0`` is accepted)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value == int(value)
    if not ok or int(value) < minimum:
        raise ToyParameterError(f"{expert}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def broadcast_vectors(expert: str, named: dict[str, Tensor]) -> tuple[int, dict[str, Tensor]]:
    """Broadcast scalars and vectors to one length ``D`` (the vectors must agree).

    Returns:
        ``D`` (1 if every value is a scalar) and the values expanded to shape ``(D,)``.
    """
    lengths = {k: v.shape[0] for k, v in named.items() if v.dim() == 1}
    if len(set(lengths.values())) > 1:
        parts = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ToyParameterError(f"{expert}: the parameters must have one length (the dimension): {parts}")
    dim = next(iter(lengths.values()), 1)
    return dim, {k: v.expand(dim).clone() for k, v in named.items()}


def fmt(value: Any) -> str:
    """A parameter written as in the composition language: ``[0, 2.5]``, ``1``."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ToyEnergy(Energy):
    """Base of the toy experts: vectors ``x`` of shape ``(B, D)``, checked on every call.

    Args:
        name: the registered name (``"toy.gaussian"``).
        dim: the dimension ``D``.
        params: the parameters shown in the label, e.g. ``{"mean": tensor, "std": 1.0}``.
    """

    def __init__(self, name: str, dim: int, params: dict[str, Any]):
        label = f"{name}({', '.join(f'{k}={fmt(v)}' for k, v in params.items())})"
        super().__init__(event_shape=(dim,), domain=None, label=label)
        self.dim = dim

    def check_input(self, x: Tensor) -> None:
        """Raise ``CompositionError`` unless ``x`` has shape ``(B, D)``."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise CompositionError(f"{self.label}: expected x of shape (B, {self.dim}), got {tuple(x.shape)}")
