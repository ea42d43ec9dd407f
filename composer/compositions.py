"""Composition files: TOML files that name reusable sub-compositions.

Every top-level key of the file is a definition: an identifier bound to a string in the
composition language. A definition may use any other definition of the file by its bare
name, before or after it in the file (hierarchical composition); a cycle is an error that
names it (``a -> b -> a``). Tables (``[section]``) and non-string values are rejected::

    # scene.toml
    red_triangle = "shapes.color=red & shapes.shape=triangle"
    blue_square  = "shapes.color=blue & shapes.shape=square"
    scene        = "red_triangle | blue_square"

A definition shadows a concept value of the same name. ``load_compositions`` builds every
definition; one that is only a building block (``not_red = "~shapes.color=red"``) is not
checked on its own, it is checked (``validate()``) wherever it is sampled or parsed.
The command line's ``--defs FILE`` passes ``read_definitions(FILE)`` to ``composer.parse``.
"""

from __future__ import annotations

import os
from pathlib import Path

from composer.energy import Energy
from composer.errors import ComposerError, CompositionError
from composer.language import Name, Node, parse_ast, prefix_error, resolve_definitions
from composer.registry import Registry
from composer.tomlfile import read_toml


def read_definitions(path: str | os.PathLike[str]) -> dict[str, str]:
    """The definitions of the TOML file ``path``: name -> composition text.

    Every text is checked for syntax, and the references between definitions for cycles;
    names are not resolved (no registry needed).

    Raises:
        CompositionError: unreadable file, invalid TOML, a name that is not an identifier,
            a value that is not a string, or a cycle; the message starts with the file name.
        CompositionSyntaxError: a definition with bad syntax (file and definition named).
    """
    path = Path(path)
    data = read_toml(path, "composition file", CompositionError)
    definitions: dict[str, str] = {}
    graph: dict[str, list[str]] = {}
    for name, text in data.items():
        if isinstance(text, dict):
            raise CompositionError(
                f"{path}: '{name}' is a table; write each definition as a top-level `name = \"composition\"`"
            )
        if not isinstance(text, str):
            raise CompositionError(
                f"{path}: the value of '{name}' must be a composition string, got {type(text).__name__} {text!r}"
            )
        if not name.isidentifier():
            raise CompositionError(f"{path}: definition name {name!r} must be an identifier (letters, digits, _)")
        try:
            tree = parse_ast(text)
        except ComposerError as exc:
            raise prefix_error(exc, f"{path}: in definition '{name}': ") from None
        definitions[name] = text
        graph[name] = list(dict.fromkeys(_names(tree)))
    cycle = find_cycle({n: [m for m in refs if m in graph] for n, refs in graph.items()})
    if cycle:
        raise CompositionError(f"{path}: cycle in definitions: {' -> '.join(cycle)}")
    return definitions


def load_compositions(path: str | os.PathLike[str], registry: Registry | None = None) -> dict[str, Energy]:
    """Build every definition of the TOML file ``path``: name -> ``Energy``.

    Definitions used by several others are built once and shared.

    Args:
        path: the composition file.
        registry: where names are looked up; default ``composer.plugins.get_registry()``.

    Raises:
        ComposerError: as ``read_definitions``, plus unknown names and bad arguments, with
            the file and definition named.
    """
    definitions = read_definitions(path)
    try:
        return resolve_definitions(definitions, registry)
    except ComposerError as exc:
        raise prefix_error(exc, f"{Path(path)}: ") from exc


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """The first cycle of ``graph`` (node -> successors) as ``[a, b, ..., a]``, or ``None``."""
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path, on_path = [start], {start}
        iters = [iter(graph.get(start, ()))]
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                iters.pop()
                continue
            if nxt in on_path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                iters.append(iter(graph.get(nxt, ())))
    return None


def _names(node: Node) -> list[str]:
    """Bare names used in ``node``, in order of appearance."""
    if isinstance(node, Name):
        return [node.name]
    children = getattr(node, "terms", None) or ([node.operand] if hasattr(node, "operand") else [])
    return [n for child in children for n in _names(child)]


__all__ = ["find_cycle", "load_compositions", "read_definitions"]
