"""The registry: names, concept families, bare values, lookups with "did you mean", construction."""

from __future__ import annotations

import pytest
import torch

import composer
from composer import CompositionError, PluginError, UnknownNameError
from composer.registry import PluginFailure, Registry, suggest


def well(center: float = 0.0, dim: int = 2) -> composer.Energy:
    """Quadratic well E(x) = ||x - center||^2.

    More text that is not shown by `composer list`.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return composer.as_energy(lambda x: (x - center).pow(2).sum(-1), event_shape=(dim,))


def shape_factory(value: str) -> composer.Energy:
    return well(center={"square": 1.0, "circle": 2.0, "red": 3.0}[value])


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.add_expert("toyish.gaussian", well, plugin="p")
    r.add_expert("toyish.ring", well, plugin="p", doc="a ring")
    r.add_concept("shapes.shape", ["square", "circle"], shape_factory, plugin="s")
    r.add_concept("shapes.color", ["red", "blue"], shape_factory, plugin="s", doc="colours")
    r.add_concept("paint.color", ["red", "green"], shape_factory, plugin="q")
    r.add_sampler("ula", object(), plugin="builtin", doc="unadjusted Langevin")
    r.add_dataset("blobs", dict, plugin="p", doc="blobs")
    return r


def test_docs_are_the_first_docstring_line_or_given(reg):
    assert reg.experts["toyish.gaussian"].doc == "Quadratic well E(x) = ||x - center||^2."
    assert reg.experts["toyish.ring"].doc == "a ring" and reg.concepts["shapes.color"].doc == "colours"
    assert reg.concepts["shapes.shape"].doc == ""  # no docstring, no doc


def test_expert_lookup_suggests_close_names(reg):
    assert reg.expert("toyish.ring").plugin == "p"
    with pytest.raises(UnknownNameError, match=r"unknown expert 'toyish.gausian' \(did you mean: toyish.gaussian"):
        reg.expert("toyish.gausian")
    with pytest.raises(UnknownNameError) as info:
        reg.expert("zzz.qqq")
    assert str(info.value) == "unknown expert 'zzz.qqq'"  # nothing close: no empty suggestion


def test_concept_family_used_as_an_expert_says_how_to_write_it(reg):
    with pytest.raises(UnknownNameError, match=r"'shapes.shape' is a concept family, not an expert: write "
                                               r"shapes.shape=VALUE with VALUE one of square, circle"):
        reg.expert("shapes.shape")


def test_concept_lookup_and_values(reg):
    assert reg.concept("shapes.color").values == ("red", "blue")
    with pytest.raises(UnknownNameError, match=r"unknown concept 'shapes.colour' \(did you mean: shapes.color"):
        reg.concept("shapes.colour")
    with pytest.raises(UnknownNameError, match=r"'sqare' is not a value of concept 'shapes.shape' "
                                               r"\(did you mean: square\?\); values: square, circle"):
        reg.make_concept("shapes.shape", "sqare")


def test_bare_values_resolve_to_the_families_that_have_them(reg):
    assert [c.name for c in reg.concepts_with_value("square")] == ["shapes.shape"]
    assert [c.name for c in reg.concepts_with_value("red")] == ["shapes.color", "paint.color"]  # ambiguous
    assert reg.concepts_with_value("purple") == []
    assert reg.all_values() == ["blue", "circle", "green", "red", "square"]


def test_make_concept_builds_a_labelled_expert(reg):
    e = reg.make_concept("shapes.shape", "circle")
    assert e.formula() == "shapes.shape=circle"
    assert e(torch.tensor([[2.0, 2.0]])).item() == 0.0  # the circle well is centred at 2


def test_make_expert_labels_and_checks_arguments(reg):
    e = reg.make_expert("toyish.gaussian", center=1.5, dim=3)
    assert e.formula() == "toyish.gaussian(center=1.5, dim=3)" and e.event_shape == (3,)
    assert e(torch.tensor([[1.5, 1.5, 2.5]])).item() == 1.0
    assert reg.make_expert("toyish.ring").formula() == "toyish.ring"
    with pytest.raises(CompositionError, match=r"toyish.gaussian: unexpected argument 'centre' "
                                               r"\(did you mean: center\?\); accepts: center, dim"):
        reg.make_expert("toyish.gaussian", centre=1.0)
    with pytest.raises(CompositionError, match="toyish.gaussian: dim must be >= 1, got 0"):  # factory's ValueError
        reg.make_expert("toyish.gaussian", dim=0)


def test_make_expert_reports_missing_arguments_and_non_energies():
    r = Registry()
    r.add_expert("a.needs", lambda mean, std=1.0: well(), plugin="p")
    r.add_expert("a.bad", lambda: torch.nn.Linear(2, 1), plugin="p")
    r.add_expert("a.kw", lambda **params: well(dim=len(params) or 1), plugin="p")
    with pytest.raises(CompositionError, match="a.needs: missing argument"):
        r.make_expert("a.needs")
    with pytest.raises(PluginError, match="the factory of 'a.bad' returned Linear, not a composer.Energy"):
        r.make_expert("a.bad")
    assert r.make_expert("a.kw", x=1, y="s", z=[1, 2]).formula() == 'a.kw(x=1, y="s", z=[1, 2])'


def test_a_composer_error_naming_the_expert_passes_through_unchanged():
    class Picky(composer.CompositionError, ValueError):
        pass

    def picky(width: float = 1.0) -> composer.Energy:
        raise Picky(f"a.picky: width must be > 0, got {width}")

    r = Registry()
    r.add_expert("a.picky", picky, plugin="p")
    with pytest.raises(Picky) as info:
        r.make_expert("a.picky", width=-1)
    assert str(info.value) == "a.picky: width must be > 0, got -1"  # not "a.picky: a.picky: ..."


@pytest.mark.parametrize("name", ["nodot", "a..b", "1a.b", "a.b-c", "a.", ".a", "", "a b.c"])
def test_bad_expert_and_concept_names_are_rejected(name):
    r = Registry()
    with pytest.raises(PluginError, match=r"plugin 'p': name .* must be 'family.name'"):
        r.add_expert(name, well, plugin="p")
    with pytest.raises(PluginError, match=r"plugin 'p': name .* must be 'family.name'"):
        r.add_concept(name, ["red"], shape_factory, plugin="p")


def test_bad_names_of_samplers_and_datasets_are_rejected():
    r = Registry()
    for bad in ["has space", "1st", "", "dash-ed"]:
        with pytest.raises(PluginError, match="must be an identifier"):
            r.add_sampler(bad, object(), plugin="p")
        with pytest.raises(PluginError, match="must be an identifier"):
            r.add_dataset(bad, dict, plugin="p")


@pytest.mark.parametrize(
    "values, message",
    [([], "needs distinct values"), (["red", "red"], "needs distinct values"),
     (["dark red"], "value 'dark red' of concept 'a.c' is not an identifier"), (["1st"], "is not an identifier")],
)
def test_bad_concept_values_are_rejected(values, message):
    with pytest.raises(PluginError, match=message):
        Registry().add_concept("a.c", values, shape_factory, plugin="p")


def test_factories_must_be_callable():
    with pytest.raises(PluginError, match="factory of expert 'a.b' is not callable"):
        Registry().add_expert("a.b", 42, plugin="p")
    with pytest.raises(PluginError, match="factory of concept 'a.c' is not callable"):
        Registry().add_concept("a.c", ["x"], None, plugin="p")


def test_sampler_and_dataset_lookups_list_what_is_registered(reg):
    assert reg.sampler("ula").doc == "unadjusted Langevin" and reg.dataset("blobs").plugin == "p"
    with pytest.raises(UnknownNameError, match=r"unknown sampler 'ulaa' \(did you mean: ula\?\); registered: ula"):
        reg.sampler("ulaa")
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'moons'; registered: blobs"):
        reg.dataset("moons")
    with pytest.raises(UnknownNameError, match="registered: none"):
        Registry().sampler("ula")


def test_unknown_names_mention_broken_plugins():
    r = Registry(failures=[PluginFailure("shapes", "import", ImportError("no module named 'pillow'\nsecond line"))])
    with pytest.raises(UnknownNameError) as info:
        r.expert("shapes.color")
    assert str(info.value) == ("unknown expert 'shapes.color'; note: plugin 'shapes' failed (import): "
                               "ImportError: no module named 'pillow' second line")


def test_suggest():
    assert suggest("gausian", ["gaussian", "ring", "moons"]) == " (did you mean: gaussian?)"
    assert suggest("xyz", ["gaussian"]) == ""
