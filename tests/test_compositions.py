"""Composition files: hierarchical definitions, cycles, unknown names, bad TOML, bad values.

Energies are compared in float64 with ``rtol=atol=1e-12``: the same few float64 operations
as the hand-written formulas, possibly in another order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from concept_helpers import close, concept_family, exact

from composer import CompositionError, CompositionSyntaxError, UnknownNameError
from composer.algebra import Mixture
from composer.compositions import find_cycle, load_compositions, read_definitions
from composer.language import parse
from composer.registry import Registry


@pytest.fixture
def reg() -> Registry:
    reg = Registry()
    for family, values in {"s.color": ["red", "blue"], "s.shape": ["triangle", "square"]}.items():
        reg.add_concept(family, values, concept_family(values), plugin="test")
    return reg


def write(tmp_path: Path, text: str, name: str = "scene.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SCENE = """
# hierarchical: scene uses definitions written after it
scene = "red_triangle | blue_square"
red_triangle = "s.color=red & s.shape=triangle"
blue_square = 'blue & square'
not_red = "~red"
tri_not_red = "triangle & 0.5 * not_red"
"""


def test_load_compositions_builds_every_definition_hierarchically(tmp_path, reg):
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    comps = load_compositions(write(tmp_path, SCENE), reg)
    assert list(comps) == ["scene", "red_triangle", "blue_square", "not_red", "tri_not_red"]
    rt, bs = exact("red", x) + exact("triangle", x), exact("blue", x) + exact("square", x)
    close(comps["red_triangle"](x), rt)
    close(comps["blue_square"](x), bs)
    close(comps["scene"](x), -torch.logsumexp(torch.stack([-rt, -bs]), 0))
    close(comps["tri_not_red"](x), exact("triangle", x) - 0.5 * exact("red", x))
    assert isinstance(comps["scene"], Mixture) and comps["scene"].components[0] is comps["red_triangle"]
    with pytest.raises(CompositionError, match="negation outside a product"):
        comps["not_red"].validate()  # a building block, built but not samplable alone


def test_read_definitions_feeds_parse(tmp_path, reg):
    x = torch.zeros(1, 2, dtype=torch.float64)
    defs = read_definitions(write(tmp_path, SCENE))
    assert defs["blue_square"] == "blue & square" and len(defs) == 5
    close(parse("scene & 2 * square", reg, defs)(x), parse("(red_triangle | blue_square) & 2 * square", reg, defs)(x))


def test_empty_file_has_no_definitions(tmp_path, reg):
    assert read_definitions(write(tmp_path, "# nothing\n")) == {}
    assert load_compositions(write(tmp_path, ""), reg) == {}


@pytest.mark.parametrize(
    "text, cycle",
    [
        ('a = "b & red"\nb = "blue | a"\n', "a -> b -> a"),
        ('a = "red & a"\n', "a -> a"),
        ('x = "red"\na = "x & b"\nb = "c"\nc = "(x | b)"\n', "b -> c -> b"),
    ],
)
def test_cycles_are_named_with_the_file(tmp_path, reg, text, cycle):
    path = write(tmp_path, text)
    for load in (read_definitions, lambda p: load_compositions(p, reg)):
        with pytest.raises(CompositionError, match=f"cycle in definitions: {cycle}") as info:
            load(path)
        assert str(info.value).startswith(f"{path}: ")


def test_unknown_names_name_the_file_and_definition(tmp_path, reg):
    path = write(tmp_path, 'ok = "red"\nscene = "ok & grean"\n')
    assert read_definitions(path) == {"ok": "red", "scene": "ok & grean"}  # names are not resolved here
    with pytest.raises(UnknownNameError) as info:
        load_compositions(path, reg)
    message = str(info.value)
    assert message.startswith(f"{path}: in definition 'scene': unknown name 'grean'")
    assert info.value.position == 5 and message.endswith("  ok & grean\n       ^")


def test_syntax_errors_name_the_file_and_definition(tmp_path):
    path = write(tmp_path, 'good = "red"\nbad = "red & & blue"\n')
    with pytest.raises(CompositionSyntaxError) as info:
        read_definitions(path)
    assert info.value.reason.startswith(f"{path}: in definition 'bad': expected an expert")
    assert info.value.position == 6 and info.value.text == "red & & blue"


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("a = 3\n", "the value of 'a' must be a composition string, got int 3"),
        ('a = ["red"]\n', "the value of 'a' must be a composition string, got list"),
        ('[compositions]\na = "red"\n', "'compositions' is a table"),
        ('"a b" = "red"\n', "definition name 'a b' must be an identifier"),
        ('a = "red\n', "invalid TOML"),
        ('a = "red"\na = "blue"\n', "invalid TOML"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, text, phrase):
    path = write(tmp_path, text)
    with pytest.raises(CompositionError) as info:
        read_definitions(path)
    assert str(info.value).startswith(f"{path}: ") and phrase in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(CompositionError, match="cannot read composition file"):
        read_definitions(tmp_path / "missing.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes('a = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(CompositionError, match="not a text file"):
        read_definitions(path)


def test_find_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None  # a diamond is not a cycle
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["c"], "b": ["b"], "c": []}) == ["b", "b"]
