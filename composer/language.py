"""The composition language: text -> syntax tree (with positions) -> tree of ``Energy``.

Grammar, lowest precedence first (whitespace between tokens is ignored)::

    expr    := conj ("|" conj)*                     mixture (OR)
    conj    := prefix ("&" prefix)*                 product (AND)
    prefix  := ("~" | "!") prefix                   negation (NOT), only valid inside a product
             | NUMBER "*" prefix                    weight; on a negation it is alpha
             | atom
    atom    := "(" expr ")"
             | NAME "(" [KEY "=" VALUE ("," KEY "=" VALUE)*] ")"   expert with arguments
             | NAME "=" IDENT                       one value of a concept family
             | NAME                                 expert (dotted) or bare name (no dot)
    NAME    := IDENT ("." IDENT)*
    VALUE   := NUMBER | "-" NUMBER | STRING | "[" [VALUE ("," VALUE)*] "]"

A bare name (no dot) is, in this order: a definition (``definitions=``), the value of the
one concept family that has it, or an ``UnknownNameError`` listing the closest names.
``parse_ast`` needs no registry; ``parse`` resolves names and builds the energy::

    >>> parse_ast("red & 0.5 * ~s.shape=square | t.g(mean=[0, -1], std=1)")
    Or(terms=(And(terms=(Name(name='red'), Weight(weight=0.5, operand=Not(operand=Concept(family='s.shape', \
value='square'))))), Expert(name='t.g', args=(('mean', (0, -1)), ('std', 1)))))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from composer import plugins
from composer.algebra import Negation, mixture, product, scale
from composer.energy import Energy
from composer.errors import ComposerError, CompositionError, UnknownNameError
from composer.registry import Registry, suggest
from composer.syntax import (  # noqa: F401  (re-exported: the language's public syntax API)
    MAX_DEPTH,
    And,
    Concept,
    Expert,
    Name,
    Node,
    Not,
    Or,
    Token,
    Value,
    Weight,
    located,
    parse_ast,
    prefix_error,
    tokenize,
    unparse,
)

# -- building energies ----------------------------------------------------------------------


def parse(text: str, registry: Registry | None = None, definitions: Mapping[str, str | Energy] | None = None) -> Energy:
    """Parse ``text`` and build its ``Energy``, checked with ``validate()``.

    Args:
        text: a composition, e.g. ``"shapes.color=red & ~shapes.shape=square"``.
        registry: where names are looked up; default ``composer.plugins.get_registry()``.
        definitions: named sub-compositions (texts or energies) usable as bare names.

    Raises:
        CompositionSyntaxError: bad syntax (text with a caret at the position).
        UnknownNameError: a name nobody registered, with the closest names.
        CompositionError: bad arguments, incompatible shapes, a definition cycle, or an
            unsamplable composition such as ``~a`` alone.
    """
    node = parse_ast(text)
    registry = registry if registry is not None else plugins.get_registry()
    energy = _Builder(registry, definitions).build(node, text)
    energy.validate()
    return energy


def resolve_definitions(
    definitions: Mapping[str, str | Energy], registry: Registry | None = None
) -> dict[str, Energy]:
    """Build every definition (referring to each other by name); not validated one by one.

    A definition may be a building block that is not samplable alone (``"~a"``).
    """
    builder = _Builder(registry if registry is not None else plugins.get_registry(), definitions)
    return {name: builder.definition(name) for name in definitions}


class _Builder:
    """Turns syntax trees into energies; memoizes definitions and detects cycles."""

    def __init__(self, registry: Registry, definitions: Mapping[str, str | Energy] | None):
        self.registry = registry
        self.definitions = dict(definitions or {})
        self.memo: dict[str, Energy] = {}
        self.stack: list[str] = []

    def build(self, node: Node, text: str) -> Energy:
        if isinstance(node, (Or, And)):
            parts = [self.build(t, text) for t in node.terms]
            return self._call(mixture if isinstance(node, Or) else product, node, text, *parts)
        if isinstance(node, Not):
            return self._call(Negation, node, text, self.build(node.operand, text))
        if isinstance(node, Weight):
            return self._call(scale, node, text, self.build(node.operand, text), node.weight)
        if isinstance(node, Expert):
            kwargs = {k: _plain(v) for k, v in node.args or ()}
            return self._call(self.registry.make_expert, node, text, node.name, **kwargs)
        if isinstance(node, Concept):
            if node.family in self.registry.concepts:  # point at the value if only it is wrong
                node = Concept(node.family, node.value, pos=node.value_pos)
            return self._call(self.registry.make_concept, node, text, node.family, node.value)
        if isinstance(node, Name):
            return self.name(node, text)
        raise TypeError(f"not a syntax tree node: {node!r}")

    def _call(self, fn: Callable[..., Energy], node: Node, text: str, *args: Any, **kwargs: Any) -> Energy:
        try:
            return fn(*args, **kwargs)
        except ComposerError as exc:
            if getattr(exc, "position", None) is not None:
                raise
            raise located(type(exc), str(exc), text, node.pos) from exc
        except RecursionError:
            reason = ("the composition is nested too deeply to build (alternating & and | over hundreds of levels); "
                      "use fewer nested levels")
            raise located(CompositionError, reason, text, node.pos) from None
        except Exception as exc:  # a plugin's factory failing on the given arguments
            reason = f"{unparse(node)}: {type(exc).__name__}: {exc}"
            raise located(CompositionError, reason, text, node.pos) from exc

    def name(self, node: Name, text: str) -> Energy:
        if node.name in self.definitions:
            return self.definition(node.name, node, text)
        owners = self.registry.concepts_with_value(node.name)
        if len(owners) == 1:
            return self._call(self.registry.make_concept, node, text, owners[0].name, node.name)
        if owners:
            choices = ", ".join(f"{c.name}={node.name}" for c in owners)
            raise located(CompositionError, f"'{node.name}' is ambiguous; write one of {choices}", text, node.pos)
        pool = [*self.definitions, *self.registry.all_values(), *self.registry.experts, *self.registry.concepts]
        note = "".join(f"; note: {f}" for f in self.registry.failures)
        reason = f"unknown name '{node.name}'{suggest(node.name, pool)}{note}"
        raise located(UnknownNameError, reason, text, node.pos)

    def definition(self, name: str, node: Node | None = None, text: str | None = None) -> Energy:
        if name in self.memo:
            return self.memo[name]
        if not self.stack:  # outermost: first build what it uses, deepest first, so that nothing recurses deeply
            order, sizes = self._plan(name)
            if sizes.get(name, 0) > MAX_EXPERTS:
                reason = (f"definition '{name}' expands to {sizes[name]:,} experts (more than {MAX_EXPERTS:,}): "
                          "a definition that uses another several times copies it each time")
                raise CompositionError(reason) if node is None else located(CompositionError, reason, text or "",
                                                                           node.pos)
            try:
                for dep in order:
                    if dep != name and dep not in self.memo:
                        self._definition(dep)
            except ComposerError:  # a cycle or a bad definition: report it as met from `name`, below
                pass
        return self._definition(name, node, text)

    def _plan(self, name: str) -> tuple[list[str], dict[str, int]]:
        """Text definitions ``name`` uses (transitively) in post-order, and each one's expanded expert count.

        Iterative (a chain of thousands of definitions is fine); cycles are left to ``_definition``
        to report; a definition with bad syntax counts as one expert (its error comes when it is built).
        """
        refs: dict[str, list[str]] = {}
        leaves: dict[str, int] = {}
        order: list[str] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(name, False)]
        while stack:
            current, expanded = stack.pop()
            if expanded:
                order.append(current)
                continue
            if current in seen or not isinstance(self.definitions.get(current), str):
                continue
            seen.add(current)
            try:
                names, others = _references(parse_ast(self.definitions[current]))
            except ComposerError:
                names, others = [], 1
            refs[current] = [n for n in names if n in self.definitions]
            leaves[current] = others + sum(1 for n in names if n not in self.definitions)
            stack.append((current, True))
            stack.extend((r, False) for r in refs[current] if r not in seen)
        sizes: dict[str, int] = {}
        for d in order:  # post-order: references first (a reference on a cycle counts as 1)
            sizes[d] = leaves[d] + sum(sizes.get(r, 1) if isinstance(self.definitions[r], str) else 1
                                       for r in refs[d])
        return order, sizes

    def _definition(self, name: str, node: Node | None = None, text: str | None = None) -> Energy:
        if name in self.memo:
            return self.memo[name]
        if name in self.stack:
            cycle = " -> ".join([*self.stack[self.stack.index(name):], name])
            reason = f"cycle in definitions: {cycle}"
            raise CompositionError(reason) if node is None else located(CompositionError, reason, text or "", node.pos)
        value = self.definitions[name]
        if isinstance(value, Energy):
            energy = value
        elif isinstance(value, str):
            self.stack.append(name)
            try:
                energy = self.build(parse_ast(value), value)
            except ComposerError as exc:
                if getattr(exc, "definition", None) is not None:
                    raise
                new = prefix_error(exc, f"in definition '{name}': ")
                new.definition = name  # type: ignore[attr-defined]
                raise new from exc.__cause__
            finally:
                self.stack.pop()
        else:
            raise CompositionError(f"definition '{name}' must be a composition text or an Energy, got {value!r}")
        self.memo[name] = energy
        return energy


MAX_EXPERTS = 10_000
"""Most experts a definition may expand to (products and mixtures flatten, so each use of a definition
copies its experts): 40 definitions that each use the previous one twice would otherwise be 2^40."""


def _references(node: Node) -> tuple[list[str], int]:
    """The bare names used in ``node`` (with repeats) and its number of other leaves (experts, concepts)."""
    names: list[str] = []
    others = 0
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, Name):
            names.append(n.name)
        elif isinstance(n, (Or, And)):
            todo.extend(n.terms)
        elif isinstance(n, (Not, Weight)):
            todo.append(n.operand)
        else:
            others += 1
    return names, others


def _plain(v: Value) -> Any:
    return [_plain(x) for x in v] if isinstance(v, tuple) else v


__all__ = [
    "And", "Concept", "Expert", "MAX_DEPTH", "Name", "Node", "Not", "Or", "Token", "Weight",
    "located", "parse", "parse_ast", "prefix_error", "resolve_definitions", "tokenize", "unparse",
]
