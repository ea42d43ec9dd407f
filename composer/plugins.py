"""The plugin manager: entry points, built-in plugins, isolation of broken plugins.

``build_registry()`` loads every plugin of the entry-point group ``composer`` (except those
named in ``COMPOSER_DISABLE_PLUGINS``, comma-separated), plus the engine's built-ins, and
calls their ``register_*`` hooks one plugin at a time: a plugin that fails to import or
register is recorded in ``Registry.failures`` by name while the others load. Two plugins
claiming one name raise ``DuplicateNameError`` naming both.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable
from typing import Any

import pluggy

from composer import hookspecs
from composer.errors import DuplicateNameError
from composer.registry import PluginFailure, Registry

ENTRY_POINT_GROUP = "composer"
DISABLE_ENV = "COMPOSER_DISABLE_PLUGINS"

#: engine modules that register built-in components through the same hooks as plugins
BUILTIN_PLUGINS = ("composer.sampling.builtin",)

_REGISTER_HOOKS = {
    "register_experts": "add_expert",
    "register_concepts": "add_concept",
    "register_samplers": "add_sampler",
    "register_datasets": "add_dataset",
}


def disabled_plugins() -> set[str]:
    """Names listed in ``COMPOSER_DISABLE_PLUGINS``."""
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class PluginManager:
    """A pluggy manager for the ``composer`` hooks that remembers which plugins failed.

    Args:
        entry_points: discover plugins of the ``composer`` entry-point group.
        builtins: register the engine's built-in plugins (samplers, ...).
        disabled: plugin names to skip; default from ``COMPOSER_DISABLE_PLUGINS``.
    """

    def __init__(self, entry_points: bool = True, builtins: bool = True, disabled: Iterable[str] | None = None):
        self.pm = pluggy.PluginManager("composer")
        self.pm.add_hookspecs(hookspecs)
        self.disabled = set(disabled_plugins() if disabled is None else disabled)
        self.failures: list[PluginFailure] = []
        if builtins:
            for module_name in BUILTIN_PLUGINS:
                if module_name not in self.disabled:
                    self.register(importlib.import_module(module_name), module_name)
        if entry_points:
            self.load_entry_points()

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object or module under ``name`` (unless disabled)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in self.disabled:
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validation errors: bad hook signatures...
            self.failures.append(PluginFailure(name, "register", exc))

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Import every entry point of ``group``; failures are recorded, not raised."""
        seen: set[str] = set()
        for ep in importlib.metadata.entry_points(group=group):
            if ep.name in self.disabled or ep.name in seen:
                continue
            seen.add(ep.name)
            try:
                plugin = ep.load()
            except Exception as exc:
                self.failures.append(PluginFailure(ep.name, "import", exc))
                continue
            self.register(plugin, ep.name)

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, in registration order."""
        return [name for name, _ in self.pm.list_name_plugin()]

    def build_registry(self) -> Registry:
        """Call the ``register_*`` hooks one plugin at a time and collect the results."""
        registry = Registry(failures=list(self.failures))
        broken: set[str] = set()
        for hook_name, method in _REGISTER_HOOKS.items():
            for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
                if impl.plugin_name in broken:
                    continue
                calls: list[tuple[tuple, dict]] = []

                def register(*args: Any, **kwargs: Any) -> None:
                    calls.append((args, kwargs))

                try:
                    impl.function(**({"register": register} if "register" in impl.argnames else {}))
                    staged = Registry()  # validate this plugin's calls before committing them
                    for args, kwargs in calls:
                        getattr(staged, method)(*args, plugin=impl.plugin_name, **kwargs)
                except Exception as exc:
                    registry.failures.append(PluginFailure(impl.plugin_name, hook_name, exc))
                    broken.add(impl.plugin_name)
                    continue
                for args, kwargs in calls:  # DuplicateNameError across plugins propagates
                    getattr(registry, method)(*args, plugin=impl.plugin_name, **kwargs)
        return registry

    def add_commands(self, cli: Any) -> None:
        """Let every plugin add subcommands to ``cli``; failures are recorded."""
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(**({"cli": cli} if "cli" in impl.argnames else {}))
            except Exception as exc:
                self.failures.append(PluginFailure(impl.plugin_name, "register_commands", exc))


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
