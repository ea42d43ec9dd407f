"""Schedules: a value per sampling step (step size, temperature).

A schedule maps step ``i`` of ``total`` to a float; ``t = i / (total - 1)`` runs from 0 to 1::

    >>> linear(1.0, 0.0).values(5)
    [1.0, 0.75, 0.5, 0.25, 0.0]
    >>> [round(v, 3) for v in geometric(1.0, 0.01).values(3)]
    [1.0, 0.1, 0.01]

Anywhere a schedule is accepted, a plain number means ``constant(number)`` and a callable
``fn(i, total) -> float`` is used as is. Values are computed on the host once per run, so a
schedule never causes a device synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from composer.errors import CompositionError


class Schedule:
    """Base class: ``schedule(i, total) -> float``."""

    def __call__(self, i: int, total: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def values(self, total: int) -> list[float]:
        """The values of steps ``0 .. total - 1``."""
        return [float(self(i, total)) for i in range(total)]

    @property
    def is_constant(self) -> bool:
        return False


def _progress(i: int, total: int) -> float:
    return i / (total - 1) if total > 1 else 0.0


@dataclass(frozen=True)
class Constant(Schedule):
    value: float

    def __call__(self, i: int, total: int) -> float:
        return self.value

    @property
    def is_constant(self) -> bool:
        return True


@dataclass(frozen=True)
class Linear(Schedule):
    start: float
    end: float

    def __call__(self, i: int, total: int) -> float:
        return self.start + (self.end - self.start) * _progress(i, total)


@dataclass(frozen=True)
class Geometric(Schedule):
    start: float
    end: float

    def __post_init__(self) -> None:
        if self.start <= 0 or self.end <= 0:
            raise CompositionError(f"a geometric schedule needs positive ends, got {self.start} and {self.end}")

    def __call__(self, i: int, total: int) -> float:
        return self.start * (self.end / self.start) ** _progress(i, total)


@dataclass(frozen=True)
class Cosine(Schedule):
    start: float
    end: float

    def __call__(self, i: int, total: int) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * _progress(i, total)))


@dataclass(frozen=True)
class Levels(Schedule):
    """Piecewise constant: the ``total`` steps are split into ``len(levels)`` equal blocks."""

    levels: tuple[float, ...]

    def __call__(self, i: int, total: int) -> float:
        return self.levels[min(i * len(self.levels) // max(total, 1), len(self.levels) - 1)]


@dataclass(frozen=True)
class FunctionSchedule(Schedule):
    fn: Callable[[int, int], float]

    def __call__(self, i: int, total: int) -> float:
        return float(self.fn(i, total))


def constant(value: float) -> Constant:
    """The same value at every step."""
    return Constant(float(value))


def linear(start: float, end: float) -> Linear:
    """From ``start`` to ``end`` in equal increments."""
    return Linear(float(start), float(end))


def geometric_ladder(top: float, bottom: float, levels: int) -> list[float]:
    """``levels`` noise levels from ``top`` down to ``bottom``, equally spaced in log (``[bottom]`` for one)::

        >>> [round(s, 6) for s in geometric_ladder(8.0, 0.5, 5)]
        [8.0, 4.0, 2.0, 1.0, 0.5]
    """
    if levels == 1:
        return [float(bottom)]
    ratio = math.log(bottom / top) / (levels - 1)
    return [float(top * math.exp(ratio * i)) for i in range(levels)]


def geometric(start: float, end: float) -> Geometric:
    """From ``start`` to ``end`` with a constant ratio (both positive)."""
    return Geometric(float(start), float(end))


def cosine(start: float, end: float) -> Cosine:
    """From ``start`` to ``end`` along half a cosine period (slow at both ends)."""
    return Cosine(float(start), float(end))


def levels(values: Sequence[float]) -> Levels:
    """Piecewise constant over equal blocks of steps (e.g. a noise ladder)."""
    values = tuple(float(v) for v in values)
    if not values:
        raise CompositionError("levels() needs at least one value")
    return Levels(values)


def as_schedule(value: float | Schedule | Callable[[int, int], float], name: str = "value") -> Schedule:
    """A ``Schedule`` from a number, a schedule, or a callable ``fn(i, total)``."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool):
        raise CompositionError(f"{name} must be a number or a schedule, got {value!r}")
    if isinstance(value, (int, float)):
        return constant(value)
    if callable(value):
        return FunctionSchedule(value)
    raise CompositionError(f"{name} must be a number, a schedule or a callable fn(step, total), got {value!r}")


class Repeat(Sequence[float]):
    """``value`` repeated ``n`` times, in O(1) memory (a constant schedule's per-step values)."""

    __slots__ = ("value", "n")

    def __init__(self, value: float, n: int):
        self.value, self.n = float(value), int(n)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.value] * len(range(*i.indices(self.n)))
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.value

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Repeat({self.value}, {self.n})"


def positive_values(schedule: Schedule, total: int, name: str) -> list[float]:
    """``schedule.values(total)``, checked to be finite and positive."""
    values = schedule.values(total)
    for i, v in enumerate(values):
        if not math.isfinite(v) or v <= 0:
            raise CompositionError(f"{name} must be positive and finite at every step, got {v} at step {i}")
    return values
