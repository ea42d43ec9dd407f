"""The composition language: exact energies of parsed texts, precedence, errors with positions, fuzzing.

Energies are compared in float64 with ``torch.testing.assert_close(rtol=1e-12, atol=1e-12)``:
the parsed tree and the hand-written formula do the same few float64 operations, possibly in
another order, so they agree to a few ulps.
"""

from __future__ import annotations

import math

import pytest
import torch
from concept_helpers import close, concept_family, exact
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer import ComposerError, CompositionError, CompositionSyntaxError, UnknownNameError
from composer import plugins as plugins_module
from composer.algebra import Mixture, Product
from composer.energy import as_energy
from composer.language import (
    MAX_DEPTH,
    And,
    Concept,
    Expert,
    Name,
    Not,
    Or,
    Weight,
    parse,
    parse_ast,
    unparse,
)
from composer.registry import Registry


def gauss(mean, std=1.0):
    """E = 0.5 * ||(x - mean) / std||^2."""
    m = torch.as_tensor(mean, dtype=torch.float64)
    if m.dim() != 1:
        raise ValueError(f"mean must be a list of numbers, got {mean!r}")
    s = float(std)
    if not s > 0:
        raise ValueError(f"std must be positive, got {std!r}")
    return as_energy(lambda x: 0.5 * (((x - m) / s) ** 2).sum(-1), event_shape=(m.numel(),), label="gauss")


def make_registry() -> Registry:
    reg = Registry()
    reg.add_expert("t.gauss", gauss, plugin="test")
    reg.add_concept("t.color", ["red", "green"], concept_family(["red", "green"]), plugin="test")
    reg.add_concept("t.shape", ["triangle", "square"], concept_family(["triangle", "square"]), plugin="test")
    return reg


@pytest.fixture
def reg() -> Registry:
    return make_registry()


def mix(*energies: torch.Tensor) -> torch.Tensor:
    return -torch.logsumexp(-torch.stack(energies), dim=0)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2


# -- exact energies -------------------------------------------------------------------------


def test_expert_with_arguments_is_the_factory_energy(reg, x):
    e = parse("t.gauss(mean=[1, -2], std=0.5)", reg)
    close(e(x), 0.5 * (((x - torch.tensor([1.0, -2.0], dtype=torch.float64)) / 0.5) ** 2).sum(-1))
    assert e.formula() == "t.gauss(mean=[1, -2], std=0.5)"
    assert e.event_shape == (2,)


def test_product_with_weighted_negation(reg, x):
    close(parse("red & 0.5 * ~square", reg)(x), exact("red", x) - 0.5 * exact("square", x))
    a, b = gauss([0.0, 1.0]), gauss([2.0, 0.0], std=2.0)
    close(parse("a & 0.5 * ~b", reg, {"a": a, "b": b})(x), a(x) - 0.5 * b(x))
    close(parse("a & 0.5 * !b", reg, {"a": a, "b": b})(x), a(x) - 0.5 * b(x))
    close(parse("3 * a & ~b", reg, {"a": a, "b": b})(x), 3 * a(x) - b(x))


def test_or_binds_looser_than_and(reg, x):
    e = parse("red | green & square", reg)
    close(e(x), mix(exact("red", x), exact("green", x) + exact("square", x)))
    assert parse_ast("red | green & square") == Or((Name("red"), And((Name("green"), Name("square")))))
    grouped = parse("(red | green) & square", reg)
    close(grouped(x), mix(exact("red", x), exact("green", x)) + exact("square", x))


def test_weight_applies_to_the_following_prefix_expression(reg, x):
    close(parse("2 * (red | green) & square", reg)(x), 2 * mix(exact("red", x), exact("green", x)) + exact("square", x))
    close(parse("2 * red & square", reg)(x), 2 * exact("red", x) + exact("square", x))
    close(parse("2 * 3 * red", reg)(x), 6 * exact("red", x))
    assert parse_ast("0.5 * ~b & a") == And((Weight(0.5, Not(Name("b"))), Name("a")))
    assert parse_ast("~0.5 * b") == Not(Weight(0.5, Name("b")))


def test_chains_are_flat_and_concept_forms_agree(reg, x):
    p = parse("t.color=red & green & t.shape=square", reg)
    assert isinstance(p, Product) and len(p.terms) == 3
    close(p(x), exact("red", x) + exact("green", x) + exact("square", x))
    m = parse("red | green | t.gauss(mean=[0, 0])", reg)
    assert isinstance(m, Mixture) and len(m.components) == 3
    close(m(x), mix(exact("red", x), exact("green", x), 0.5 * (x**2).sum(-1)))
    close(parse("t.color=red", reg)(x), parse("red", reg)(x))


def test_whitespace_is_ignored():
    spaced = parse_ast("  t . color = red\n&\t( ~ 2 * t.gauss ( mean = [ 1 , 2 ] ) | green ) ")
    assert spaced == parse_ast("t.color=red&(~2*t.gauss(mean=[1,2])|green)")


def test_argument_values(reg):
    seen = {}

    def echo(**kwargs):
        seen.update(kwargs)
        return gauss([0.0])

    reg.add_expert("t.echo", echo, plugin="test")
    parse(r"""t.echo(a=1, b=-2.5, c=1e-3, d=-1E+2, e="x \"y\"", f='it\'s', g=[1, [2, -3.5], []], h=.5)""", reg)
    assert seen == {"a": 1, "b": -2.5, "c": 1e-3, "d": -100.0, "e": 'x "y"', "f": "it's", "g": [1, [2, -3.5], []],
                    "h": 0.5}
    assert isinstance(seen["a"], int) and isinstance(seen["c"], float)


def test_positions_in_the_tree():
    tree = parse_ast("a & (b | t.c=v)")
    assert (tree.pos, tree.end) == (0, 14)
    inner = tree.terms[1]
    assert isinstance(inner, Or) and inner.pos == 5
    assert isinstance(inner.terms[1], Concept) and inner.terms[1].pos == 9 and inner.terms[1].value_pos == 13


def test_default_registry_is_the_plugin_registry(reg, x, monkeypatch):
    monkeypatch.setattr(plugins_module, "get_registry", lambda: reg)
    close(parse("red")(x), exact("red", x))


# -- errors ---------------------------------------------------------------------------------


def caret(text: str, position: int) -> str:
    return f"at position {position}:\n  {text}\n  {' ' * position}^"


@pytest.mark.parametrize(
    "text, position, phrase",
    [
        ("", 0, "empty composition"),
        ("(a & b", 6, "expected ')' to close the '(' at position 0"),
        ("a & b)", 5, "unexpected ')' without a matching '('"),
        ("a & & b", 4, "after '&', got '&'"),
        ("2 *", 3, "after '2 *', got the end of the text"),
        ("t.color=", 8, "expected a value of concept 't.color' after '='"),
        ("a b", 2, "unexpected 'b' after a complete expression"),
        ("a $ b", 2, "unexpected character '$'"),
        ("t.g(s='ab)", 6, "unterminated string"),
        ("-2 * a", 0, "weight must be a positive number"),
        ("t.", 2, "expected a name after '.'"),
        ("2 a", 2, "expected '*' after the weight 2"),
        ("t.g(s=1, s=2)", 9, "argument 's' of 't.g' is given twice"),
        ("t.g(s=)", 6, "expected a number, a string or a list for 's'"),
        ("t.g(s=red)", 6, "quote strings"),
        ("t.g(s=[1, 2)", 11, "expected ',' or ']'"),
        ("t.g(s=1 t=2)", 8, "expected ',' or ')'"),
        ("t.g(1)", 4, "expected an argument name"),
        ("t.g(s 1)", 6, "expected '=' after the argument name 's'"),
        ("t.g(s=-x)", 7, "expected a number after '-'"),
        ("a | ", 4, "after '|', got the end"),
        ("()", 1, "got ')'"),
    ],
)
def test_syntax_errors_have_positions(text, position, phrase):
    with pytest.raises(CompositionSyntaxError) as info:
        parse_ast(text)
    err = info.value
    assert err.position == position and err.text == text
    assert phrase in err.reason
    assert str(err).endswith(caret(text, position))


def test_caret_stays_aligned_on_multiline_text():
    with pytest.raises(CompositionSyntaxError) as info:
        parse_ast("a &\n\t& b")
    assert info.value.position == 5
    assert str(info.value).endswith(caret("a &  & b", 5))


def test_nesting_is_bounded():
    with pytest.raises(CompositionSyntaxError, match="nested more than"):
        parse_ast("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert parse_ast("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH) == Name("a")


@pytest.mark.parametrize(
    "text, position, suggestion",
    [
        ("t.gaus(mean=[0, 0])", 0, "t.gauss"),
        ("red & rde", 6, "red"),
        ("t.color=gren", 8, "green"),
        ("t.colour=red", 0, "t.color"),
        ("square & gauss", 9, "t.gauss"),
    ],
)
def test_unknown_names_suggest_and_point(reg, text, position, suggestion):
    with pytest.raises(UnknownNameError) as info:
        parse(text, reg)
    err = info.value
    assert err.position == position
    assert "did you mean" in str(err) and suggestion in str(err).split("did you mean")[1]
    assert str(err).endswith(caret(text, position))


def test_unknown_bare_name_suggests_definitions(reg):
    with pytest.raises(UnknownNameError, match="did you mean: red_triangle"):
        parse("red_triangel", reg, {"red_triangle": "red & triangle"})


def test_ambiguous_bare_value_lists_candidates(reg, x):
    reg.add_concept("t.light", ["dark", "red"], concept_family(["dark", "red"], ["triangle", "red"]), plugin="test")
    with pytest.raises(CompositionError, match=r"'red' is ambiguous; write one of t\.color=red, t\.light=red") as e:
        parse("green & red", reg)
    assert e.value.position == 8
    close(parse("green & t.light=red", reg)(x), exact("green", x) + exact("red", x))
    close(parse("dark", reg)(x), exact("triangle", x))


@pytest.mark.parametrize(
    "text, position, phrase",
    [
        ("red & t.gauss(mean=[0, 0], sd=1)", 6, "unexpected argument 'sd' (did you mean: std?)"),
        ("t.gauss()", 0, "missing argument(s) mean"),
        ("t.gauss(mean='abc')", 0, "t.gauss: new(): invalid data type 'str'"),
        ("t.gauss(mean=[0, 0], std=-1)", 0, "std must be positive"),
        ("red & t.gauss(mean=[0, 0, 0])", 0, "incompatible event shapes"),
        ("red & 0 * green", 6, "a weight must be a positive finite number"),
        ("red & 1e999 * green", 6, "a weight must be a positive finite number"),
        ("t.color", 0, "'t.color' is a concept family, not an expert"),
        ("~~red & green", 0, "double negation"),
    ],
)
def test_bad_compositions_are_located(reg, text, position, phrase):
    with pytest.raises(CompositionError) as info:
        parse(text, reg)
    assert phrase in info.value.reason and info.value.position == position
    assert str(info.value).endswith(caret(text, position))


def test_a_failing_factory_becomes_a_composition_error(reg):
    def broken(n):
        raise RuntimeError("boom")

    reg.add_expert("t.broken", broken, plugin="test")
    with pytest.raises(CompositionError, match=r"t\.broken\(n=1\): RuntimeError: boom at position 6") as info:
        parse("red & t.broken(n=1)", reg)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("text", ["~red", "~red & ~green", "0.5 * ~red", "red | ~green", "(~red & ~green) | red"])
def test_unsamplable_compositions_fail_at_parse_time(reg, text):
    with pytest.raises(CompositionError, match="negation|no positive expert"):
        parse(text, reg)


def test_non_string_text(reg):
    with pytest.raises(CompositionError, match="must be a string, got int"):
        parse(3, reg)  # type: ignore[arg-type]


# -- definitions ----------------------------------------------------------------------------


def test_definitions_nest_and_are_built_once(reg, x):
    defs = {"rt": "red & triangle", "gs": "green & t.shape=square", "scene": "rt | gs", "not_red": "~red"}
    e = parse("scene & 0.5 * not_red", reg, defs)
    expected = mix(exact("red", x) + exact("triangle", x), exact("green", x) + exact("square", x)) - 0.5 * exact(
        "red", x
    )
    close(e(x), expected)
    p = parse("rt | rt", reg, defs)
    assert p.components[0] is p.components[1]


def test_definitions_shadow_concept_values(reg, x):
    close(parse("red", reg, {"red": "green"})(x), exact("green", x))


@pytest.mark.parametrize(
    "defs, cycle",
    [
        ({"a": "b & red", "b": "green | a"}, "a -> b -> a"),
        ({"a": "a & red"}, "a -> a"),
        ({"a": "b", "b": "c", "c": "b"}, "b -> c -> b"),
    ],
)
def test_definition_cycles_are_named(reg, defs, cycle):
    with pytest.raises(CompositionError, match=f"cycle in definitions: {cycle}"):
        parse("a", reg, defs)


def test_errors_inside_definitions_name_the_definition(reg):
    with pytest.raises(UnknownNameError) as info:
        parse("scene", reg, {"scene": "rt | red", "rt": "red & triangel"})
    assert info.value.reason.startswith("in definition 'rt': unknown name 'triangel'")
    assert info.value.position == 6 and info.value.text == "red & triangel"
    with pytest.raises(CompositionSyntaxError, match="in definition 'rt': expected an expert") as syn:
        parse("rt", reg, {"rt": "red & "})
    assert syn.value.position == 6
    with pytest.raises(CompositionError, match="definition 'rt' must be a composition text or an Energy"):
        parse("rt", reg, {"rt": 3})  # type: ignore[dict-item]


# -- properties -----------------------------------------------------------------------------

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ALLOWED = (CompositionSyntaxError, UnknownNameError, CompositionError)
SOUP = st.sampled_from(
    ["red", "green", "square", "t.color", "t.shape", "t.gauss", "=", "t.color=red", "(", ")", "&", "|", "~", "!",
     "*", "0.5", "2", "1e-3", "0", "-", ",", "[", "]", ".", "mean", "std", "'s'", '"', "x", "1", "-1", "[0, 0]",
     "(mean=[1, 2])", "(std=2, mean=[0,0])", " ", "\n", "ü", "$"]
)


def check_only_composer_errors(text: str, reg: Registry) -> None:
    try:
        tree = parse_ast(text)
    except ComposerError as exc:
        assert isinstance(exc, ALLOWED), repr(exc)
        assert 0 <= exc.position <= len(text)
        return
    assert parse_ast(unparse(tree)) == tree  # canonical text round-trips
    try:
        parse(text, reg)
    except ComposerError as exc:
        assert isinstance(exc, ALLOWED), repr(exc)


@FUZZ
@given(st.text(max_size=40))
def test_random_text_raises_only_composer_errors(text):
    check_only_composer_errors(text, make_registry())


@FUZZ
@given(st.lists(SOUP, max_size=14), st.sampled_from(["", " "]))
def test_token_soup_raises_only_composer_errors(tokens, sep):
    check_only_composer_errors(sep.join(tokens), make_registry())


VALUES = st.recursive(
    st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)
IDENT = st.from_regex(r"[a-z_][a-z0-9_]{0,4}", fullmatch=True)
ATOMS = (
    IDENT.map(Name)
    | st.builds(Concept, st.sampled_from(["t.color", "a.b.c"]), IDENT)
    | st.builds(
        Expert,
        st.sampled_from(["t.gauss", "x.y"]),
        st.none() | st.dictionaries(IDENT, VALUES, max_size=3).map(lambda d: tuple(d.items())),
    )
)
TREES = st.recursive(
    ATOMS,
    lambda sub: st.lists(sub, min_size=2, max_size=3).map(lambda t: Or(tuple(t)))
    | st.lists(sub, min_size=2, max_size=3).map(lambda t: And(tuple(t)))
    | sub.map(Not)
    | st.builds(Weight, st.floats(min_value=0, allow_infinity=False).map(abs), sub),
    max_leaves=10,
)


@settings(max_examples=250, deadline=None)
@given(TREES)
def test_unparse_round_trips(tree):
    assert parse_ast(unparse(tree)) == tree


def test_unparse_uses_minimal_parentheses():
    text = "(a | b) & ~(c & d) & 2.0 * (e | f) | g & 0.5 * ~h | t.x(v=[1, -2.5, \"q\\\"\"])"
    assert unparse(parse_ast(text)) == text
    assert unparse(Weight(math.inf, Name("a"))) == "1e999 * a"


REG_ATOMS = st.sampled_from(
    [Name("red"), Name("green"), Name("square"), Concept("t.shape", "triangle"),
     Expert("t.gauss", (("mean", (0.5, -1)),)), Expert("t.gauss", (("mean", (1, 2)), ("std", 2)))]
)
REG_TREES = st.recursive(
    REG_ATOMS,
    lambda sub: st.lists(sub, min_size=2, max_size=3).map(lambda t: Or(tuple(t)))
    | st.lists(sub, min_size=2, max_size=3).map(lambda t: And(tuple(t)))
    | sub.filter(lambda n: not isinstance(n, (Not, Weight))).map(Not)  # ~~a is rejected by design
    | st.builds(Weight, st.sampled_from([0.5, 2.0, 3.0]), sub),
    max_leaves=8,
)


def reference(node, x: torch.Tensor) -> torch.Tensor:
    """An independent interpreter of the tree: the energy formulas applied directly."""
    if isinstance(node, Or):
        return mix(*(reference(t, x) for t in node.terms))
    if isinstance(node, And):
        return sum(reference(t, x) for t in node.terms)
    if isinstance(node, Not):
        return -reference(node.operand, x)
    if isinstance(node, Weight):
        return node.weight * reference(node.operand, x)
    if isinstance(node, Expert):
        args = dict(node.args)
        mean = torch.tensor(args["mean"], dtype=torch.float64)
        return 0.5 * (((x - mean) / args.get("std", 1)) ** 2).sum(-1)
    return exact(node.name if isinstance(node, Name) else node.value, x)


@settings(max_examples=200, deadline=None)
@given(REG_TREES)
def test_parsed_energies_match_an_independent_interpreter(tree):
    """Whatever parses computes the formulas; whatever does not is a CompositionError (negation misuse)."""
    x = torch.linspace(-2, 2, 10, dtype=torch.float64).reshape(5, 2)
    try:
        energy = parse(unparse(tree), make_registry())
    except CompositionError as exc:
        assert "negation" in str(exc) or "no positive expert" in str(exc), str(exc)
        return
    torch.testing.assert_close(energy(x), reference(tree, x), rtol=1e-10, atol=1e-10)
