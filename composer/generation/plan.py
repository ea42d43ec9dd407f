"""Generation plans: which compositions to sample, how many samples each, and their integer labels.

A plan is one composition (``composer generate EXPR -n N``) or a TOML file::

    # plan.toml
    count = 8                                   # samples per composition (default of every entry)

    [labels]                                    # integer labels written next to x: name -> values
    shape = ["circle", "square", "triangle"]
    color = ["red", "green", "blue", "yellow"]

    [[grid]]                                    # one composition per combination of the label values
    expr = "{color} & {shape}"                  # (in the order of [labels]; `over` picks some labels)

    [[compositions]]                            # or one composition at a time
    expr = "red & triangle"
    count = 16
    labels = { shape = "triangle", color = "red" }

Every composition sets every label (by value name or index); a sample's label is the index of
its composition's value in ``[labels]``. The samples of the dataset are the compositions' samples in
plan order (composition 0's ``count`` samples first), and the plan with its counts is part of the
dataset's identity (``index.json``).
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.errors import ComposerError

#: array names a shard always holds (labels may not take them)
RESERVED = ("x", "energy", "composition")


class PlanError(ComposerError):
    """A plan that cannot be generated (unknown value, count below 1, bad TOML...)."""


@dataclass(frozen=True)
class Item:
    """One composition of a plan.

    Attributes:
        expr: the composition, in the composition language.
        count: number of samples (>= 1).
        labels: label name -> value index into ``Plan.labels[name]``.
    """

    expr: str
    count: int
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Compositions with counts and labels.

    Attributes:
        items: the compositions, in dataset order.
        labels: label name -> value names (the vocabulary of the integer labels).
        definitions: named sub-compositions usable in the expressions (``--defs``).
    """

    items: tuple[Item, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of samples of the whole dataset."""
        return sum(item.count for item in self.items)

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON data (what ``index.json`` records and resumes compare)."""
        out: dict[str, Any] = {
            "compositions": [{"expr": i.expr, "count": i.count, "labels": dict(i.labels)} for i in self.items],
            "labels": {k: list(v) for k, v in self.labels.items()},
            "total": self.total,
        }
        if self.definitions:
            out["definitions"] = dict(self.definitions)
        return out


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"{where}: count must be an integer, got {value!r}")
    if value < 1:
        raise PlanError(f"{where}: count must be >= 1, got {value}")
    return value


def plan_from_expr(expr: str, n: int, definitions: dict[str, str] | None = None) -> Plan:
    """The plan of one composition with ``n`` samples and no labels."""
    if not isinstance(expr, str) or not expr.strip():
        raise PlanError("the composition is empty")
    return Plan((Item(expr, _count(n, f"'{expr}'")),), {}, dict(definitions or {}))


def _label_index(labels: dict[str, list[str]], name: str, value: Any, where: str) -> int:
    if name not in labels:
        known = ", ".join(labels) or "none (add a [labels] table)"
        raise PlanError(f"{where}: unknown label '{name}'; labels: {known}")
    values = labels[name]
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(values):
            raise PlanError(f"{where}: {name} index {value} out of range 0..{len(values) - 1}")
        return value
    if value not in values:
        raise PlanError(f"{where}: unknown {name} '{value}'; values: {', '.join(map(str, values))}")
    return values.index(value)


def _labels_table(data: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(data, dict):
        raise PlanError(f"{where}: [labels] must be a table of name = [values]")
    out = {}
    for name, values in data.items():
        if not name.isidentifier() or name in RESERVED:
            raise PlanError(f"{where}: label name '{name}' must be an identifier other than {', '.join(RESERVED)}")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise PlanError(f"{where}: label '{name}' must list its values as strings")
        if len(set(values)) != len(values):
            raise PlanError(f"{where}: label '{name}' lists a value twice")
        out[name] = list(values)
    return out


def _expand_grid(grid: dict[str, Any], labels: dict[str, list[str]], default: Any, where: str) -> list[Item]:
    unknown = sorted(set(grid) - {"expr", "over", "count", "labels"})
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {', '.join(unknown)}; a grid has expr, over, count, labels")
    expr = grid.get("expr")
    if not isinstance(expr, str):
        raise PlanError(f"{where}: needs expr = \"...\" with {{label}} placeholders")
    over = grid.get("over", list(labels))
    if not isinstance(over, list) or not over:
        raise PlanError(f"{where}: over must be a non-empty list of label names")
    for name in over:
        _label_index(labels, name, 0, where)
    fields = {f for _, f, _, _ in string.Formatter().parse(expr) if f}
    missing = sorted(fields - set(over))
    if missing:
        raise PlanError(f"{where}: expr uses {{{missing[0]}}}, which is not among the grid's labels {over}")
    fixed = {k: _label_index(labels, k, v, where) for k, v in dict(grid.get("labels", {})).items()}
    count = _count(grid.get("count", default), where)
    items = []
    for combo in itertools.product(*(range(len(labels[name])) for name in over)):
        values = {name: labels[name][k] for name, k in zip(over, combo)}
        items.append(Item(expr.format(**values), count, {**fixed, **dict(zip(over, combo))}))
    return items


def read_plan(path: str | Path, n: int | None = None, definitions: dict[str, str] | None = None) -> Plan:
    """Read a plan TOML file (see the module docstring).

    Args:
        path: the file.
        n: the count of entries that give none (``-n``), overriding the file's top-level ``count``.
        definitions: named sub-compositions usable in the expressions.

    Raises:
        PlanError: unreadable file or TOML, an unknown label or value, a count below 1, a composition
            missing a label, no composition at all.
    """
    from composer.tomlfile import read_toml

    path = Path(path)
    data = read_toml(path, "plan", PlanError)
    unknown = sorted(set(data) - {"count", "labels", "grid", "compositions"})
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {', '.join(unknown)}; a plan has count, labels, grid, compositions")
    labels = _labels_table(data.get("labels", {}), str(path))
    default = n if n is not None else data.get("count")
    items: list[Item] = []
    for k, grid in enumerate(data.get("grid", [])):
        items += _expand_grid(grid, labels, default, f"{path}: grid {k}")
    for k, entry in enumerate(data.get("compositions", [])):
        where = f"{path}: composition {k}"
        if not isinstance(entry, dict) or not isinstance(entry.get("expr"), str):
            raise PlanError(f"{where}: needs expr = \"...\"")
        bad = sorted(set(entry) - {"expr", "count", "labels"})
        if bad:
            raise PlanError(f"{where}: unknown key(s) {', '.join(bad)}; an entry has expr, count, labels")
        where = f"{where} ('{entry['expr']}')"
        given = entry.get("labels", {})
        if not isinstance(given, dict):
            raise PlanError(f"{where}: labels must be a table, e.g. {{ color = \"red\" }}")
        idx = {name: _label_index(labels, name, value, where) for name, value in given.items()}
        items.append(Item(entry["expr"], _count(entry.get("count", default), where), idx))
    if not items:
        raise PlanError(f"{path}: the plan lists no composition (add [[compositions]] or [[grid]])")
    ordered = []
    for k, item in enumerate(items):
        missing = [name for name in labels if name not in item.labels]
        if missing:
            raise PlanError(f"{path}: composition {k} ('{item.expr}') sets no {missing[0]} label "
                            f"(every composition sets every label)")
        ordered.append(Item(item.expr, item.count, {name: item.labels[name] for name in labels}))
    return Plan(tuple(ordered), labels, dict(definitions or {}))
