"""The toy plugin registers through the public hooks and its installed entry point."""

from __future__ import annotations

import importlib.metadata

import composer_toy.plugin
import pytest
import torch
from composer_toy import EXPERTS

import composer
from composer.plugins import PluginManager

NAMES = ["toy.gaussian", "toy.mixture", "toy.ring", "toy.moons", "toy.box", "toy.halfspace", "toy.student_t"]


@pytest.fixture
def registry():
    pm = PluginManager(entry_points=False, builtins=False, disabled=())
    pm.register(composer_toy.plugin, "toy")
    return pm.build_registry()


def test_registers_every_expert_with_its_formula(registry):
    assert list(registry.experts) == NAMES == list(EXPERTS)
    assert not registry.failures
    for name in NAMES:
        info = registry.experts[name]
        assert info.plugin == "toy" and info.factory is EXPERTS[name]
        assert "E(x) =" in info.doc, name  # `composer list` shows the formula


def test_installed_entry_point_names_the_plugin_module():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="composer")}
    assert "toy" in eps, "composer-toy is not installed: pip install -e plugins/toy"
    assert eps["toy"].value == "composer_toy.plugin"
    assert eps["toy"].load() is composer_toy.plugin


def test_entry_point_discovery_and_disable(monkeypatch):
    monkeypatch.delenv("COMPOSER_DISABLE_PLUGINS", raising=False)
    found = PluginManager(builtins=False).build_registry()
    assert found.experts["toy.ring"].plugin == "toy"
    monkeypatch.setenv("COMPOSER_DISABLE_PLUGINS", "shapes, toy")
    blocked = PluginManager(builtins=False).build_registry()
    assert not any(name.startswith("toy.") for name in blocked.experts)


def test_make_expert_from_language_values(registry):
    e = registry.make_expert("toy.gaussian", mean=[0, 2], std=0.5)
    assert e.formula() == "toy.gaussian(mean=[0, 2], std=0.5)"
    torch.testing.assert_close(e(torch.tensor([[1.0, 2.0]])), torch.tensor([2.0]))  # 0.5 * (1 / 0.5)^2
    mix = registry.make_expert("toy.mixture", means=[[0, 0], [1, 1]], weights=[1, 1])
    assert mix.event_shape == (2,)


def test_bad_parameters_through_the_registry_are_one_clear_line(registry):
    with pytest.raises(composer.CompositionError) as info:
        registry.make_expert("toy.gaussian", mean=[0, 0], std=-1)
    assert str(info.value) == "toy.gaussian: std must be > 0, got -1"  # named once, no traceback-like text
    with pytest.raises(composer.CompositionError, match=r"unexpected argument 'sd' \(did you mean: std\?\)"):
        registry.make_expert("toy.gaussian", mean=[0, 0], sd=1)
    with pytest.raises(composer.CompositionError, match="missing argument"):
        registry.make_expert("toy.box", low=[0, 0])


def test_registered_experts_compose(registry):
    g = registry.make_expert("toy.gaussian", mean=[0, 0], std=1)
    h = registry.make_expert("toy.halfspace", normal=[1, 0], offset=0.5)
    x = torch.randn(9, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close((g & h)(x), g(x) + h(x))
    assert (g & h).formula() == "toy.gaussian(mean=[0, 0], std=1) & toy.halfspace(normal=[1, 0], offset=0.5)"
