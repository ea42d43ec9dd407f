"""Sampling recipes carried by experts: found in the tree, overridden by explicit arguments."""

from __future__ import annotations

import pytest
import torch

import composer
from composer import CompositionError
from composer.sampling.recipe import DEFAULTS, recipe_of, resolve_options


def bowl(label):
    return composer.as_energy(lambda x: 0.5 * (x ** 2).sum(-1), event_shape=(2,), label=label)


def test_recipe_is_found_depth_first_and_first_wins():
    a, b, c = bowl("a"), bowl("b"), bowl("c")
    b.sampling_recipe = {"steps": 7}
    c.sampling_recipe = {"steps": 9}
    assert recipe_of(a) == ({}, None)
    assert recipe_of(a & (b | c)) == ({"steps": 7}, "b")
    assert recipe_of(c & b)[0] == {"steps": 9}


def test_explicit_arguments_win_and_defaults_fill_the_rest():
    a = bowl("a")
    a.sampling_recipe = {"steps": 7, "sampler": "mala"}
    opts = resolve_options(a, True, {"steps": 3, "sampler": None, "step_size": None})
    assert opts == {"steps": 3, "sampler": "mala", "step_size": DEFAULTS["step_size"]}
    assert resolve_options(a, False, {"steps": None})["steps"] == DEFAULTS["steps"]
    assert resolve_options(a, {"steps": 11}, {"steps": None})["steps"] == 11


def test_sample_uses_the_recipe():
    a = bowl("a")
    a.sampling_recipe = {"steps": 13, "sampler": "mala", "step_size": 0.2}
    res = composer.sample(a, n=64, seed=0)
    assert res.sampler == "mala" and int(res.steps_run.max()) == 13 and res.trace["acceptance"].shape == (13,)
    res = composer.sample(a, n=64, steps=5, sampler="langevin", seed=0)
    assert res.sampler == "langevin" and int(res.steps_run.max()) == 5
    res = composer.sample(a, n=64, seed=0, recipe=False)
    assert int(res.steps_run.max()) == DEFAULTS["steps"]


def test_bad_recipes_are_named():
    a = bowl("a")
    a.sampling_recipe = {"stepz": 3}
    with pytest.raises(CompositionError, match="sampling_recipe of a sets unknown argument.*stepz"):
        composer.sample(a, n=4)
    a.sampling_recipe = [("steps", 3)]
    with pytest.raises(CompositionError, match="must be a dict"):
        composer.sample(a & bowl("b"), n=4)
    assert torch.is_tensor(composer.sample(a, n=4, steps=1, recipe=False).x)
