"""The plugin manager: entry points, built-in plugins, isolation of broken plugins.

``build_registry()`` loads every plugin of the entry-point group ``composer`` (except those
named in ``COMPOSER_DISABLE_PLUGINS``, comma-separated), plus the engine's built-ins, and
calls their ``register_*`` hooks one plugin at a time: a plugin that fails to import or
register (or implements a hook that does not exist) is recorded in ``Registry.failures`` by
name and contributes nothing, while the others load. Two plugins claiming one name (a plugin
name, or an expert/concept/sampler/dataset name) raise ``DuplicateNameError`` naming both.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from composer import hookspecs
from composer.errors import DuplicateNameError, PluginError
from composer.registry import PluginFailure, Registry, suggest

ENTRY_POINT_GROUP = "composer"
DISABLE_ENV = "COMPOSER_DISABLE_PLUGINS"

#: engine modules that register built-in components through the same hooks as plugins
BUILTIN_PLUGINS = ("composer.sampling.builtin", "composer.training.builtin", "composer.observe")

_REGISTER_HOOKS = {
    "register_experts": "add_expert",
    "register_concepts": "add_concept",
    "register_samplers": "add_sampler",
    "register_datasets": "add_dataset",
    "register_networks": "add_network",
}


#: what a broken plugin may raise and still be isolated: everything but Ctrl-C (a plugin calling
#: ``sys.exit()`` on import must not end every command silently)
_ISOLATED = (Exception, SystemExit, GeneratorExit)


def disabled_plugins() -> set[str]:
    """Names listed in ``COMPOSER_DISABLE_PLUGINS``."""
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class PluginManager:
    """A pluggy manager for the ``composer`` hooks that remembers which plugins failed.

    Args:
        entry_points: discover plugins of the ``composer`` entry-point group.
        builtins: register the engine's built-in plugins (samplers, ...).
        disabled: plugin names to skip; default from ``COMPOSER_DISABLE_PLUGINS``.

    Attributes:
        failures: plugins that failed to import or register, by name.
        sources: plugin name -> where it came from (distribution and module, built-in...).
    """

    def __init__(self, entry_points: bool = True, builtins: bool = True, disabled: Iterable[str] | None = None):
        self.pm = pluggy.PluginManager("composer")
        self.pm.add_hookspecs(hookspecs)
        self.disabled = set(disabled_plugins() if disabled is None else disabled)
        self.failures: list[PluginFailure] = []
        self.sources: dict[str, str] = {}
        if builtins:
            for module_name in BUILTIN_PLUGINS:
                if module_name not in self.disabled:
                    self.register(importlib.import_module(module_name), module_name, source="built-in")
        if entry_points:
            self.load_entry_points()

    def register(self, plugin: Any, name: str | None = None, source: str | None = None) -> None:
        """Register a plugin object or module under ``name`` (unless disabled).

        A plugin whose hooks pluggy rejects (bad signature) or that implements a hook that
        does not exist is recorded in ``failures`` and left out.

        Raises:
            DuplicateNameError: another plugin is already registered under ``name``.
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in self.disabled:
            return
        source = source or _describe(plugin)
        if self.pm.has_plugin(name):
            raise DuplicateNameError(f"two plugins are named '{name}': {self.sources.get(name)} and {source}")
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validation errors: bad hook signatures...
            if self.pm.get_plugin(name) is plugin:  # older pluggy may leave it half-registered
                self.pm.unregister(plugin)
            self.failures.append(PluginFailure(name, "register", exc))
            return
        unknown = [
            impl_name for impl_name, hook in vars(self.pm.hook).items()
            if not impl_name.startswith("_") and not hook.has_spec()
            and any(i.plugin is plugin and not i.optionalhook for i in hook.get_hookimpls())
        ]
        if unknown:
            self.pm.unregister(plugin)
            hooks = [h for h in vars(hookspecs) if h.startswith("register_")]
            detail = "; ".join(f"'{u}'{suggest(u, hooks)}" for u in unknown)
            self.failures.append(PluginFailure(name, "register", PluginError(f"unknown hook {detail}")))
            return
        self.sources[name] = source

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Import every entry point of ``group``; import failures are recorded, not raised.

        Raises:
            DuplicateNameError: two distributions provide an entry point of the same name.
        """
        seen: dict[str, str] = {}
        for ep in importlib.metadata.entry_points(group=group):
            dist = getattr(ep.dist, "name", None) or "an unknown distribution"
            if ep.name in seen and ep.name not in self.disabled:
                if seen[ep.name] == dist:  # one distribution found twice on sys.path
                    continue
                raise DuplicateNameError(
                    f"distributions '{seen[ep.name]}' and '{dist}' both provide plugin '{ep.name}' "
                    f"(entry-point group '{group}'); uninstall one or block it with {DISABLE_ENV}"
                )
            if ep.name in self.disabled:  # a disabled plugin is skipped before it can clash with another
                continue
            seen[ep.name] = dist
            try:
                plugin = ep.load()
            except _ISOLATED as exc:
                self.failures.append(PluginFailure(ep.name, "import", exc))
                continue
            self.register(plugin, ep.name, source=f"distribution '{dist}' ({ep.value})")

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, in registration order."""
        return [name for name, _ in self.pm.list_name_plugin()]

    def build_registry(self) -> Registry:
        """Call the ``register_*`` hooks one plugin at a time and collect the results.

        A plugin whose hook raises, or whose calls of ``register`` are invalid, is recorded in
        ``Registry.failures`` and contributes nothing (not even what its other hooks registered).

        Raises:
            DuplicateNameError: two plugins register the same name.
        """
        registry = Registry(failures=list(self.failures))
        for name in self.plugin_names():
            calls = self._collect(name, registry.failures)
            for method, args, kwargs in calls or ():  # DuplicateNameError across plugins propagates
                getattr(registry, method)(*args, plugin=name, **kwargs)
        return registry

    def _collect(self, name: str, failures: list[PluginFailure]) -> list[tuple[str, tuple, dict]] | None:
        """Run plugin ``name``'s register hooks; its validated calls, or ``None`` if it failed."""
        staged = Registry()  # validates this plugin's calls before any is committed
        calls: list[tuple[str, tuple, dict]] = []
        for hook_name, method in _REGISTER_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                register, hook_calls = _recorder()
                try:
                    impl.function(**({"register": register} if "register" in impl.argnames else {}))
                    for args, kwargs in hook_calls:
                        getattr(staged, method)(*args, plugin=name, **kwargs)
                except _ISOLATED as exc:
                    failures.append(PluginFailure(name, hook_name, exc))
                    return None
                calls.extend((method, args, kwargs) for args, kwargs in hook_calls)
        return calls

    def add_commands(self, cli: Any) -> None:
        """Let every plugin add subcommands to ``cli``; failures are recorded."""
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(**({"cli": cli} if "cli" in impl.argnames else {}))
            except _ISOLATED as exc:
                self.failures.append(PluginFailure(impl.plugin_name, "register_commands", exc))


def _describe(plugin: Any) -> str:
    """Where a plugin object comes from, for error messages."""
    if inspect.ismodule(plugin):
        return f"module '{plugin.__name__}'"
    cls = plugin if inspect.isclass(plugin) else type(plugin)
    return f"{'class' if plugin is cls else 'object of class'} '{cls.__module__}.{cls.__qualname__}'"


def _recorder() -> tuple[Callable[..., None], list[tuple[tuple, dict]]]:
    """A ``register`` callback and the list of the calls it receives."""
    calls: list[tuple[tuple, dict]] = []

    def register(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))

    return register, calls


_DEFAULT: tuple[PluginManager, Registry] | None = None


def default_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    return _default()[0]


def get_registry() -> Registry:
    """The process-wide registry of every installed, enabled plugin (built on first use)."""
    return _default()[1]


def _default() -> tuple[PluginManager, Registry]:
    global _DEFAULT
    if _DEFAULT is None:
        pm = PluginManager()
        _DEFAULT = (pm, pm.build_registry())
    return _DEFAULT


def reset() -> None:
    """Forget the process-wide manager and registry (tests, or after installing a plugin)."""
    global _DEFAULT
    _DEFAULT = None


__all__ = ["PluginManager", "build_registry", "get_registry", "default_manager", "reset", "DuplicateNameError"]


def build_registry(plugins: Iterable[Any] = (), entry_points: bool = True, builtins: bool = True) -> Registry:
    """A registry from ``plugins`` (objects or modules) plus entry points and built-ins."""
    pm = PluginManager(entry_points=entry_points, builtins=builtins)
    for p in plugins:
        pm.register(p)
    return pm.build_registry()
