"""The plugin registers dataset ``shapes`` through the public hook, as a third party would."""

from __future__ import annotations

import importlib.metadata
import json

import composer_shapes.plugin
import numpy as np
import pytest
from composer_shapes import ATTRIBUTES, HELDOUT_PAIRS, generate

import composer
from composer.plugins import PluginManager


@pytest.fixture()
def registry():
    pm = PluginManager(entry_points=False, builtins=False, disabled=())
    pm.register(composer_shapes.plugin, "shapes")
    return pm.build_registry()


def test_dataset_is_discoverable_through_the_hook(registry):
    assert not registry.failures
    info = registry.dataset("shapes")
    assert info.plugin == "shapes" and "shapes world" in info.doc
    data = info.obj(n=16, seed=2, split="heldout")
    expected = generate(16, "heldout", seed=2)
    assert set(data) == {"x", *ATTRIBUTES, "meta"}
    for k in expected:
        np.testing.assert_array_equal(data[k], expected[k])
    meta = json.loads(json.dumps(data["meta"]))  # JSON-serialisable, unchanged by a round trip
    assert meta == data["meta"]
    assert meta["attributes"] == ATTRIBUTES
    assert [tuple(p) for p in meta["heldout_pairs"]] == list(HELDOUT_PAIRS)
    assert (meta["split"], meta["seed"], meta["n"]) == ("heldout", 2, 16)


def test_loader_defaults_and_bad_split(registry):
    loader = registry.dataset("shapes").obj
    assert loader(n=4)["meta"]["split"] == "train"
    with pytest.raises(composer.ComposerError, match="unknown split 'validation'.*train, heldout, all"):
        loader(n=4, split="validation")


def test_entry_point_is_declared():
    try:
        dist = importlib.metadata.distribution("composer-shapes")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("composer-shapes is not installed (pip install -e plugins/shapes)")
    eps = [ep for ep in dist.entry_points if ep.group == "composer"]
    assert [(ep.name, ep.value) for ep in eps] == [("shapes", "composer_shapes.plugin")]
