"""Syntax of the composition language: tokens, the syntax tree (with positions), the parser.

``parse_ast(text)`` needs no registry; ``composer.language.parse`` resolves the names of the
tree and builds the energy. The grammar is in ``composer.language``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from composer.errors import ComposerError, CompositionError, CompositionSyntaxError

MAX_DEPTH = 100  # nesting limit of parentheses, prefixes and lists (keeps recursion bounded)

Value = int | float | str | tuple["Value", ...]

# -- errors with positions ------------------------------------------------------------------


def _location(text: str, position: int) -> str:
    display = re.sub(r"\s", " ", text)  # one line; every character keeps its column
    return f" at position {position}:\n  {display}\n  {' ' * position}^"


def located(cls: type[ComposerError], reason: str, text: str, position: int) -> ComposerError:
    """An error of class ``cls`` whose message draws ``text`` with a caret at ``position``.

    The error carries ``reason``, ``text`` and ``position`` attributes, like
    ``CompositionSyntaxError``.
    """
    if issubclass(cls, CompositionSyntaxError):
        exc: ComposerError = CompositionSyntaxError(reason, text, position)
    else:
        exc = _rebuilt(cls, reason)
    exc.args = (reason + _location(text, position),)
    exc.reason, exc.text, exc.position = reason, text, position  # type: ignore[attr-defined]
    return exc


def prefix_error(exc: ComposerError, prefix: str) -> ComposerError:
    """A copy of ``exc`` (same class, same position) whose message starts with ``prefix``."""
    if getattr(exc, "position", None) is not None:
        new = located(type(exc), prefix + exc.reason, exc.text, exc.position)  # type: ignore[attr-defined]
    else:
        new = _rebuilt(type(exc), prefix + str(exc))
    new.__cause__ = exc.__cause__
    return new


def _rebuilt(cls: type[ComposerError], message: str) -> ComposerError:
    try:
        return cls(message)
    except TypeError:  # a subclass with another constructor
        return CompositionError(message)


# -- tokens ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
      | (?P<ident>[^\W\d]\w*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>[&|~!*()\[\],=.\-])""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "ident", "string", "op" or "eof"
    text: str
    pos: int

    @property
    def end(self) -> int:
        return self.pos + len(self.text)

    def describe(self) -> str:
        return "the end of the text" if self.kind == "eof" else repr(self.text)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens (whitespace dropped), ending with an ``eof`` token."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos] in "\"'":
                raise located(CompositionSyntaxError, "unterminated string", text, pos)
            raise located(CompositionSyntaxError, f"unexpected character {text[pos]!r}", text, pos)
        if m.lastgroup != "ws":
            tokens.append(Token(m.lastgroup or "", m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


# -- syntax tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A node of the syntax tree; ``pos``/``end`` are character offsets (not compared)."""

    pos: int = field(default=0, compare=False, repr=False, kw_only=True)
    end: int = field(default=0, compare=False, repr=False, kw_only=True)

    def __str__(self) -> str:
        return unparse(self)


@dataclass(frozen=True)
class Or(Node):
    """``a | b | ...``: a mixture."""

    terms: tuple[Node, ...]


@dataclass(frozen=True)
class And(Node):
    """``a & b & ...``: a product of experts."""

    terms: tuple[Node, ...]


@dataclass(frozen=True)
class Not(Node):
    """``~a`` (or ``!a``): a negation."""

    operand: Node


@dataclass(frozen=True)
class Weight(Node):
    """``w * a``: a weight (alpha when ``a`` is a negation)."""

    weight: float
    operand: Node


@dataclass(frozen=True)
class Expert(Node):
    """``family.expert`` (``args is None``) or ``family.expert(key=value, ...)``."""

    name: str
    args: tuple[tuple[str, Value], ...] | None = None


@dataclass(frozen=True)
class Concept(Node):
    """``family.concept=value``; ``value_pos`` is the offset of the value."""

    family: str
    value: str
    value_pos: int = field(default=0, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Name(Node):
    """A bare name: a definition or a concept value."""

    name: str


def unparse(node: Node) -> str:
    """Canonical text of ``node`` (minimal parentheses); ``parse_ast(unparse(n)) == n``."""
    return _unparse(node, 0)


def _unparse(node: Node, min_level: int) -> str:
    if isinstance(node, Or):
        level, text = 0, " | ".join(_unparse(t, 1) for t in node.terms)
    elif isinstance(node, And):
        level, text = 1, " & ".join(_unparse(t, 2) for t in node.terms)
    elif isinstance(node, Not):
        level, text = 2, "~" + _unparse(node.operand, 2)
    elif isinstance(node, Weight):
        level, text = 2, f"{_format_value(node.weight)} * {_unparse(node.operand, 2)}"
    elif isinstance(node, Expert):
        args = "" if node.args is None else "(" + ", ".join(f"{k}={_format_value(v)}" for k, v in node.args) + ")"
        level, text = 3, node.name + args
    elif isinstance(node, Concept):
        level, text = 3, f"{node.family}={node.value}"
    elif isinstance(node, Name):
        level, text = 3, node.name
    else:
        raise TypeError(f"not a syntax tree node: {node!r}")
    return f"({text})" if level < min_level else text


def _format_value(v: Value) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(_format_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "1e999" if v > 0 else "-1e999"
    return repr(v)


# -- parser ---------------------------------------------------------------------------------


def parse_ast(text: str) -> Node:
    """Parse ``text`` into a syntax tree (no registry needed).

    Raises:
        CompositionSyntaxError: with the text, a caret and the 0-based position.
    """
    if not isinstance(text, str):
        raise CompositionError(f"a composition must be a string, got {type(text).__name__}")
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def at(self, op: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text == op

    def error(self, reason: str, tok: Token) -> CompositionSyntaxError:
        return located(CompositionSyntaxError, reason, self.text, tok.pos)  # type: ignore[return-value]

    def enter(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", tok)

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise self.error("empty composition", self.peek())
        node = self.expr(None)
        tok = self.peek()
        if tok.kind != "eof":
            if tok.text == ")":
                raise self.error("unexpected ')' without a matching '('", tok)
            raise self.error(
                f"unexpected {tok.describe()} after a complete expression; expected '&', '|' or the end", tok
            )
        return node

    def expr(self, after: str | None) -> Node:
        return self._chain("|", Or, self.conj, after)

    def conj(self, after: str | None) -> Node:
        return self._chain("&", And, self.prefix, after)

    def _chain(self, op: str, cls: type, sub: Callable[[str | None], Node], after: str | None) -> Node:
        terms = [sub(after)]
        while self.at(op):
            self.advance()
            terms.append(sub(op))
        if len(terms) == 1:
            return terms[0]
        return cls(tuple(terms), pos=terms[0].pos, end=terms[-1].end)

    def prefix(self, after: str | None) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in "~!":
            self.enter(tok)
            self.advance()
            operand = self.prefix(tok.text)
            self.depth -= 1
            return Not(operand, pos=tok.pos, end=operand.end)
        if tok.kind == "number":
            self.enter(tok)
            self.advance()
            if not self.at("*"):
                raise self.error(f"expected '*' after the weight {tok.text}, got {self.peek().describe()}", self.peek())
            self.advance()
            operand = self.prefix(f"{tok.text} *")
            self.depth -= 1
            return Weight(float(tok.text), operand, pos=tok.pos, end=operand.end)
        if tok.kind == "op" and tok.text == "-":
            raise self.error("unexpected '-': a weight must be a positive number (negate with ~)", tok)
        return self.atom(after)

    def atom(self, after: str | None) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "(":
            self.enter(tok)
            self.advance()
            node = self.expr("(")
            if not self.at(")"):
                close = self.peek()
                raise self.error(f"expected ')' to close the '(' at position {tok.pos}, got {close.describe()}", close)
            self.advance()
            self.depth -= 1
            return node
        if tok.kind != "ident":
            where = f" after '{after}'" if after else ""
            raise self.error(f"expected an expert, a concept or '('{where}, got {tok.describe()}", tok)
        name, end = self.name()
        if self.at("("):
            args, end = self.arguments(name)
            return Expert(name, args, pos=tok.pos, end=end)
        if self.at("="):
            self.advance()
            val = self.peek()
            if val.kind != "ident":
                raise self.error(f"expected a value of concept '{name}' after '=', got {val.describe()}", val)
            self.advance()
            return Concept(name, val.text, pos=tok.pos, end=val.end, value_pos=val.pos)
        if "." in name:
            return Expert(name, None, pos=tok.pos, end=end)
        return Name(name, pos=tok.pos, end=end)

    def name(self) -> tuple[str, int]:
        tok = self.advance()
        parts, end = [tok.text], tok.end
        while self.at("."):
            self.advance()
            part = self.peek()
            if part.kind != "ident":
                raise self.error(f"expected a name after '.', got {part.describe()}", part)
            self.advance()
            parts.append(part.text)
            end = part.end
        return ".".join(parts), end

    def arguments(self, name: str) -> tuple[tuple[tuple[str, Value], ...], int]:
        self.advance()  # "("
        args: dict[str, Value] = {}
        if not self.at(")"):
            while True:
                key = self.peek()
                if key.kind != "ident":
                    raise self.error(f"expected an argument name of '{name}', got {key.describe()}", key)
                self.advance()
                if not self.at("="):
                    raise self.error(f"expected '=' after the argument name '{key.text}'", self.peek())
                self.advance()
                if key.text in args:
                    raise self.error(f"argument '{key.text}' of '{name}' is given twice", key)
                args[key.text] = self.value(key.text)
                if self.at(")"):
                    break
                if not self.at(","):
                    raise self.error(
                        f"expected ',' or ')' in the arguments of '{name}', got {self.peek().describe()}", self.peek()
                    )
                self.advance()
        end = self.advance().end  # ")"
        return tuple(args.items()), end

    def value(self, key: str) -> Value:
        tok = self.advance()
        if tok.kind == "number":
            return self.number(tok, 1)
        if tok.kind == "op" and tok.text == "-":
            num = self.advance()
            if num.kind != "number":
                raise self.error(f"expected a number after '-', got {num.describe()}", num)
            return self.number(num, -1)
        if tok.kind == "string":
            return re.sub(r"\\(.)", r"\1", tok.text[1:-1], flags=re.DOTALL)
        if tok.kind == "op" and tok.text == "[":
            self.enter(tok)
            items: list[Value] = []
            if not self.at("]"):
                while True:
                    items.append(self.value(key))
                    if self.at("]"):
                        break
                    if not self.at(","):
                        raise self.error(f"expected ',' or ']' in a list, got {self.peek().describe()}", self.peek())
                    self.advance()
            self.advance()  # "]"
            self.depth -= 1
            return tuple(items)
        hint = "; quote strings" if tok.kind == "ident" else ""
        raise self.error(f"expected a number, a string or a list for '{key}', got {tok.describe()}{hint}", tok)

    def number(self, tok: Token, sign: int) -> int | float:
        if tok.text.isdigit():
            try:
                return sign * int(tok.text)
            except ValueError:  # more digits than int() converts
                raise self.error("number has too many digits", tok) from None
        return sign * float(tok.text)
