"""Plugin lifecycle: local plugins, entry points, broken plugins, duplicates, disabling.

Every test builds a fresh ``PluginManager``. Entry-point tests "install" a distribution the
way pip does, as a ``NAME-VERSION.dist-info`` directory (``METADATA`` + ``entry_points.txt``)
on ``sys.path``, which the real ``importlib.metadata`` discovers; nothing is monkeypatched
inside ``importlib``. The fixture package ``tests/fixtures/fake_plugin`` provides the module
and its ``pyproject.toml`` provides the entry points.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
import torch

import composer
from composer import DuplicateNameError, UnknownNameError
from composer.plugins import DISABLE_ENV, PluginManager, get_registry, reset

FIXTURE = Path(__file__).parent / "fixtures" / "fake_plugin"


def well(center: float = 0.0, dim: int = 2) -> composer.Energy:
    """A quadratic well ``E(x) = ||x - center||^2``."""
    return composer.as_energy(lambda x: (x - center).pow(2).sum(-1), event_shape=(dim,), label="well")


def color(value: str) -> composer.Energy:
    return well(center={"red": 1.0, "blue": -1.0}[value])


class LocalPlugin:
    """A plugin object implementing every register hook, configured by its arguments."""

    def __init__(self, experts=(), concepts=None, samplers=(), datasets=(), raise_in: str | None = None):
        self.experts, self.concepts = experts, concepts or {}
        self.samplers, self.datasets, self.raise_in = samplers, datasets, raise_in

    def _check(self, hook: str) -> None:
        if hook == self.raise_in:
            raise RuntimeError(f"boom in {hook}")

    @composer.hookimpl
    def register_experts(self, register: Callable[..., None]) -> None:
        self._check("register_experts")
        for name in self.experts:
            register(name, well, doc=f"{name}: a quadratic well")

    @composer.hookimpl
    def register_concepts(self, register: Callable[..., None]) -> None:
        self._check("register_concepts")
        for name, values in self.concepts.items():
            register(name, values, color)

    @composer.hookimpl
    def register_samplers(self, register: Callable[..., None]) -> None:
        self._check("register_samplers")
        for name in self.samplers:
            register(name, SimpleNamespace(init=None, step=None), doc="a kernel")

    @composer.hookimpl
    def register_datasets(self, register: Callable[..., None]) -> None:
        self._check("register_datasets")
        for name in self.datasets:
            register(name, lambda **options: {"x": torch.zeros(3, 2).numpy()}, doc="zeros")


def hook_plugin(**hooks: Callable) -> SimpleNamespace:
    """A plugin whose hooks are the given functions (marked as hook implementations)."""
    return SimpleNamespace(**{name: composer.hookimpl(fn) for name, fn in hooks.items()})


def fresh() -> PluginManager:
    return PluginManager(entry_points=False, builtins=False, disabled=())


# -- local plugins ---------------------------------------------------------------------------
def test_local_plugins_register_through_every_hook():
    pm = fresh()
    pm.register(LocalPlugin(["a.well"], {"a.color": ["red", "blue"]}, ["a_kernel"], ["a_data"]), "a")
    pm.register(LocalPlugin(["b.well"]), "b")
    reg = pm.build_registry()
    assert pm.plugin_names() == ["a", "b"] and not reg.failures
    assert [(n, e.plugin, e.doc) for n, e in reg.experts.items()] == [
        ("a.well", "a", "a.well: a quadratic well"), ("b.well", "b", "b.well: a quadratic well")]
    assert reg.concepts["a.color"].values == ("red", "blue") and reg.concepts["a.color"].plugin == "a"
    assert reg.samplers["a_kernel"].doc == "a kernel" and reg.datasets["a_data"].plugin == "a"
    x = torch.tensor([[1.0, 2.0]])
    assert reg.make_expert("a.well", center=1.0)(x).item() == 1.0  # (1-1)^2 + (2-1)^2
    assert reg.make_concept("a.color", "blue")(x).item() == 13.0  # 2^2 + 3^2
    assert fresh().build_registry().experts == {}  # managers share nothing


def test_plugin_raising_in_a_hook_is_reported_by_name_and_contributes_nothing():
    pm = fresh()
    pm.register(LocalPlugin(["good.well"]), "good")
    pm.register(LocalPlugin(["bad.well"], {"bad.color": ["red"]}, raise_in="register_concepts"), "bad")
    reg = pm.build_registry()
    assert list(reg.experts) == ["good.well"]  # bad.well (from a hook that succeeded) is not kept
    assert [(f.plugin, f.stage, type(f.error)) for f in reg.failures] == [("bad", "register_concepts", RuntimeError)]
    assert str(reg.failures[0]) == "plugin 'bad' failed (register_concepts): RuntimeError: boom in register_concepts"
    with pytest.raises(UnknownNameError, match=r"unknown expert 'bad.well'.*note: plugin 'bad' failed"):
        reg.expert("bad.well")


@pytest.mark.parametrize(
    "hook, args, message",
    [
        ("register_experts", ("nodot", well), "name 'nodot' must be 'family.name'"),
        ("register_experts", ("a.b", 3), "factory of expert 'a.b' is not callable"),
        ("register_concepts", ("a.c", ["red", "red"], color), "needs distinct values"),
        ("register_concepts", ("a.c", ["dark red"], color), "value 'dark red' of concept 'a.c' is not an identifier"),
        ("register_samplers", ("bad-name", object()), "name 'bad-name' must be an identifier"),
        ("register_datasets", ("", dict), "name '' must be an identifier"),
    ],
)
def test_invalid_register_calls_make_the_plugin_fail(hook, args, message):
    pm = fresh()
    pm.register(hook_plugin(**{hook: lambda register: register(*args)}), "sloppy")
    pm.register(LocalPlugin(["ok.well"]), "ok")
    reg = pm.build_registry()
    assert list(reg.experts) == ["ok.well"]
    (failure,) = reg.failures
    assert failure.plugin == "sloppy" and failure.stage == hook and message in str(failure.error)


def test_one_plugin_registering_a_name_twice_fails_alone():
    pm = fresh()
    pm.register(hook_plugin(register_experts=lambda register: [register("t.w", well), register("t.w", well)]), "twice")
    reg = pm.build_registry()
    assert reg.experts == {} and "plugin 'twice' registers expert 't.w' twice" in str(reg.failures[0])


def test_bad_hook_signature_and_unknown_hook_are_reported():
    pm = fresh()
    pm.register(hook_plugin(register_experts=lambda reg: None), "badsig")
    pm.register(hook_plugin(register_expert=lambda register: register("t.w", well)), "typo")
    pm.register(LocalPlugin(["ok.well"]), "ok")
    assert pm.plugin_names() == ["ok"]
    reg = pm.build_registry()
    assert list(reg.experts) == ["ok.well"]
    failures = {f.plugin: str(f) for f in reg.failures}
    assert "'reg'" in failures["badsig"] and "(register)" in failures["badsig"] and "\n" not in failures["badsig"]
    assert "unknown hook 'register_expert' (did you mean: register_experts" in failures["typo"]


def test_hook_without_the_register_argument_is_allowed():
    pm = fresh()
    pm.register(hook_plugin(register_experts=lambda: None), "quiet")
    reg = pm.build_registry()
    assert not reg.failures and pm.plugin_names() == ["quiet"]


# -- duplicates ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "first, second, message",
    [
        (dict(experts=["dup.well"]), dict(experts=["dup.well"]), "plugins 'a' and 'b' both register expert 'dup.well'"),
        (dict(concepts={"dup.c": ["red"]}), dict(concepts={"dup.c": ["blue"]}), "both register concept 'dup.c'"),
        (dict(experts=["dup.c"]), dict(concepts={"dup.c": ["red"]}), "'a' and 'b' both register expert 'dup.c'"),
        (dict(samplers=["k"]), dict(samplers=["k"]), "plugins 'a' and 'b' both register sampler 'k'"),
        (dict(datasets=["d"]), dict(datasets=["d"]), "plugins 'a' and 'b' both register dataset 'd'"),
    ],
)
def test_duplicate_names_across_plugins_raise_naming_both(first, second, message):
    pm = fresh()
    pm.register(LocalPlugin(**first), "a")
    pm.register(LocalPlugin(**second), "b")
    with pytest.raises(DuplicateNameError, match=message):
        pm.build_registry()


def test_two_plugins_with_one_plugin_name_raise_naming_both():
    pm = fresh()
    pm.register(LocalPlugin(), "same")
    with pytest.raises(DuplicateNameError, match=r"two plugins are named 'same': object of class '.*LocalPlugin' and "
                                                 r"object of class 'types.SimpleNamespace'"):
        pm.register(SimpleNamespace(), "same")


# -- disabling -------------------------------------------------------------------------------
def test_disable_env_blocks_plugins_by_name(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, " blocked , other")
    pm = PluginManager(entry_points=False, builtins=False)
    assert pm.disabled == {"blocked", "other"}
    pm.register(LocalPlugin(["blocked.well"]), "blocked")
    pm.register(LocalPlugin(["kept.well"]), "kept")
    assert pm.plugin_names() == ["kept"] and list(pm.build_registry().experts) == ["kept.well"]
    explicit = PluginManager(entry_points=False, builtins=False, disabled=())  # the argument overrides the env
    explicit.register(LocalPlugin(["blocked.well"]), "blocked")
    assert explicit.plugin_names() == ["blocked"]


# -- real entry points -----------------------------------------------------------------------
def write_dist(site: Path, name: str, version: str, entry_points: dict[str, str]) -> Path:
    """Write what pip installs for a distribution's metadata: ``NAME-VERSION.dist-info``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[composer]\n{lines}")
    return info


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty site-packages directory on ``sys.path``; modules imported from it are forgotten after."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    yield site
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith((str(tmp_path), str(FIXTURE))):
            del sys.modules[name]


@pytest.fixture
def fake_installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Install tests/fixtures/fake_plugin: its metadata in ``site``, its source on ``sys.path``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((FIXTURE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["composer"] == {"fake": "composer_fake.plugin"}
    write_dist(site, project["name"], project["version"], project["entry-points"]["composer"])
    monkeypatch.syspath_prepend(str(FIXTURE))  # like an editable install
    return project


def test_entry_point_plugin_is_discovered_and_composes(fake_installed):
    pm = PluginManager(builtins=False)
    assert "fake" in pm.plugin_names()
    assert pm.sources["fake"] == "distribution 'composer-fake-plugin' (composer_fake.plugin)"
    reg = pm.build_registry()
    assert not [f for f in reg.failures if f.plugin == "fake"]
    assert reg.experts["fake.quadratic"].plugin == "fake" and reg.concepts["fake.side"].plugin == "fake"
    quad = reg.make_expert("fake.quadratic", center=[1.0, 2.0], scale=0.5)
    local = composer.as_energy(lambda x: x.pow(2).sum(-1), event_shape=(2,), label="local")
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    expected = 0.5 * (x - torch.tensor([1.0, 2.0])).pow(2).sum(-1) + x.pow(2).sum(-1)
    torch.testing.assert_close((quad & local)(x), expected)
    left = reg.make_concept("fake.side", "left")
    torch.testing.assert_close((left & ~local & quad)(x), left(x) - local(x) + quad(x))
    assert [c.name for c in reg.concepts_with_value("left")] == ["fake.side"]


def test_entry_point_plugin_composes_with_the_toy_plugin(fake_installed):
    pytest.importorskip("composer_toy", reason="the first-party toy plugin is not installed")
    reg = PluginManager(builtins=False).build_registry()
    quad = reg.make_expert("fake.quadratic", center=[0.0, 1.0])
    gauss = reg.make_expert("toy.gaussian", mean=[2.0, 0.0], std=0.5)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close((quad & gauss)(x), quad(x) + gauss(x))
    assert (quad & gauss).formula() == "fake.quadratic(center=[0, 1]) & toy.gaussian(mean=[2, 0], std=0.5)"


def test_entry_point_disabled_by_env_is_never_imported(fake_installed, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "fake")
    pm = PluginManager(builtins=False)
    assert "fake" not in pm.plugin_names() and "composer_fake.plugin" not in sys.modules
    assert "fake.quadratic" not in pm.build_registry().experts


def test_entry_points_failing_to_import_are_reported_by_name(fake_installed, site):
    (site / "composer_fake_raises.py").write_text("raise RuntimeError('fake import failure')\n")
    write_dist(site, "composer-broken", "1.0", {"raises": "composer_fake_raises",
                                                "missing": "composer_fake_missing_xyz.plugin"})
    pm = PluginManager(builtins=False)
    reg = pm.build_registry()
    failures = {f.plugin: (f.stage, type(f.error)) for f in reg.failures}
    assert failures["raises"] == ("import", RuntimeError) and failures["missing"] == ("import", ModuleNotFoundError)
    assert "fake.quadratic" in reg.experts  # the others still load
    assert "plugin 'raises' failed (import): RuntimeError: fake import failure" in [str(f) for f in reg.failures]


def test_two_distributions_claiming_one_plugin_name_raise_naming_both(site):
    (site / "composer_fake_empty.py").write_text("")
    write_dist(site, "composer-one", "1.0", {"clash": "composer_fake_empty"})
    write_dist(site, "composer-two", "1.0", {"clash": "composer_fake_empty"})
    with pytest.raises(DuplicateNameError, match="both provide plugin 'clash'") as info:
        PluginManager(builtins=False)
    assert "composer-one" in str(info.value) and "composer-two" in str(info.value)


def test_get_registry_sees_a_newly_installed_plugin_after_reset(fake_installed):
    reset()
    try:
        reg = get_registry()
        assert reg.experts["fake.quadratic"].plugin == "fake"
        assert get_registry() is reg  # built once per process
    finally:
        reset()


# -- commands --------------------------------------------------------------------------------
def test_plugins_add_cli_commands_and_a_failing_one_is_reported():
    def add_hello(cli: click.Group) -> None:
        @cli.command()
        def hello() -> None:
            """Say hello."""
            click.echo("hello")

    def broken(cli: click.Group) -> None:
        raise RuntimeError("no commands today")

    pm = fresh()
    pm.register(hook_plugin(register_commands=add_hello), "greeter")
    pm.register(hook_plugin(register_commands=broken), "grumpy")
    cli = click.Group("composer")
    pm.add_commands(cli)
    assert list(cli.commands) == ["hello"]
    assert [(f.plugin, f.stage) for f in pm.failures] == [("grumpy", "register_commands")]


def test_a_plugin_calling_sys_exit_on_import_is_isolated(fake_installed, site):
    (site / "composer_fake_exits.py").write_text("import sys\nsys.exit(3)\n")
    write_dist(site, "composer-exits", "1.0", {"exits": "composer_fake_exits"})
    reg = PluginManager(builtins=False).build_registry()
    failures = {f.plugin: (f.stage, type(f.error)) for f in reg.failures}
    assert failures["exits"] == ("import", SystemExit) and "fake.quadratic" in reg.experts


def test_disabling_a_clashing_plugin_name_is_the_fix_the_error_names(site, monkeypatch):
    (site / "composer_fake_empty.py").write_text("")
    write_dist(site, "composer-one", "1.0", {"clash": "composer_fake_empty"})
    write_dist(site, "composer-two", "1.0", {"clash": "composer_fake_empty"})
    monkeypatch.setenv(DISABLE_ENV, "clash")
    assert "clash" not in PluginManager(builtins=False).plugin_names()
