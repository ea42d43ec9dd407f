"""Names -> expert factories, concept families, samplers, datasets and networks, with "did you mean".

Plugins fill a ``Registry`` through the hooks in ``composer.hookspecs``; the language and
the CLI look names up here. Experts and concept families share one namespace
(``family.name``); samplers, datasets and trainable networks have their own.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from composer.energy import Energy
from composer.errors import ComposerError, CompositionError, DuplicateNameError, PluginError, UnknownNameError


@dataclass(frozen=True)
class ExpertInfo:
    """A registered expert: ``factory(**params) -> Energy``."""

    name: str
    factory: Callable[..., Energy]
    plugin: str
    doc: str = ""


@dataclass(frozen=True)
class ConceptInfo:
    """A registered concept family: ``factory(value) -> Energy`` for each of ``values``."""

    name: str
    values: tuple[str, ...]
    factory: Callable[[str], Energy]
    plugin: str
    doc: str = ""


@dataclass(frozen=True)
class ComponentInfo:
    """A registered sampler kernel or dataset loader."""

    name: str
    obj: Any
    plugin: str
    doc: str = ""


@dataclass
class PluginFailure:
    """A plugin that failed to import or register; reported by name, the others still load."""

    plugin: str
    stage: str  # "import" or the hook name
    error: BaseException

    def __str__(self) -> str:
        message = " ".join(str(self.error).split())  # one line, even for multi-line messages
        return f"plugin '{self.plugin}' failed ({self.stage}): {type(self.error).__name__}: {message}"


def _doc_of(obj: Any, doc: str | None) -> str:
    text = doc if doc is not None else (inspect.getdoc(obj) or "")
    return text.strip().splitlines()[0] if text.strip() else ""


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """`` (did you mean: a, b?)`` for the closest ``candidates`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


@dataclass
class Registry:
    """Everything the plugins registered. Build one with ``composer.plugins.build_registry``."""

    experts: dict[str, ExpertInfo] = field(default_factory=dict)
    concepts: dict[str, ConceptInfo] = field(default_factory=dict)
    samplers: dict[str, ComponentInfo] = field(default_factory=dict)
    datasets: dict[str, ComponentInfo] = field(default_factory=dict)
    networks: dict[str, ComponentInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    # -- registration -----------------------------------------------------------------------
    def add_expert(self, name: str, factory: Callable[..., Energy], plugin: str, doc: str | None = None) -> None:
        _check_name(name, plugin, dotted=True)
        self._claim_energy_name(name, plugin)
        if not callable(factory):
            raise PluginError(f"plugin '{plugin}': factory of expert '{name}' is not callable")
        self.experts[name] = ExpertInfo(name, factory, plugin, _doc_of(factory, doc))

    def add_concept(
        self, name: str, values: Sequence[str], factory: Callable[[str], Energy], plugin: str, doc: str | None = None
    ) -> None:
        _check_name(name, plugin, dotted=True)
        self._claim_energy_name(name, plugin)
        values = tuple(str(v) for v in values)
        if not values or len(set(values)) != len(values):
            raise PluginError(f"plugin '{plugin}': concept '{name}' needs distinct values, got {values}")
        for v in values:
            if not v.isidentifier():
                raise PluginError(f"plugin '{plugin}': value '{v}' of concept '{name}' is not an identifier")
        if not callable(factory):
            raise PluginError(f"plugin '{plugin}': factory of concept '{name}' is not callable")
        self.concepts[name] = ConceptInfo(name, values, factory, plugin, _doc_of(factory, doc))

    def add_sampler(self, name: str, kernel: Any, plugin: str, doc: str | None = None) -> None:
        _check_name(name, plugin, dotted=False)
        _claim(self.samplers, "sampler", name, plugin)
        self.samplers[name] = ComponentInfo(name, kernel, plugin, _doc_of(kernel, doc))

    def add_dataset(self, name: str, loader: Callable[..., Any], plugin: str, doc: str | None = None) -> None:
        _check_name(name, plugin, dotted=False)
        _claim(self.datasets, "dataset", name, plugin)
        self.datasets[name] = ComponentInfo(name, loader, plugin, _doc_of(loader, doc))

    def _claim_energy_name(self, name: str, plugin: str) -> None:
        _claim(self.experts, "expert", name, plugin)
        _claim(self.concepts, "concept", name, plugin)

    # -- lookup -----------------------------------------------------------------------------
    def expert(self, name: str) -> ExpertInfo:
        """The expert called ``name``; ``UnknownNameError`` with suggestions otherwise."""
        if name in self.experts:
            return self.experts[name]
        if name in self.concepts:
            info = self.concepts[name]
            raise UnknownNameError(
                f"'{name}' is a concept family, not an expert: write {name}=VALUE with VALUE one of "
                f"{', '.join(info.values)}"
            )
        raise UnknownNameError(f"unknown expert '{name}'{suggest(name, self.experts)}{self._failure_note()}")

    def concept(self, name: str) -> ConceptInfo:
        """The concept family called ``name``; ``UnknownNameError`` with suggestions otherwise."""
        if name in self.concepts:
            return self.concepts[name]
        raise UnknownNameError(f"unknown concept '{name}'{suggest(name, self.concepts)}{self._failure_note()}")

    def concepts_with_value(self, value: str) -> list[ConceptInfo]:
        """Concept families that have ``value`` among their values."""
        return [c for c in self.concepts.values() if value in c.values]

    def sampler(self, name: str) -> ComponentInfo:
        if name in self.samplers:
            return self.samplers[name]
        known = ", ".join(sorted(self.samplers)) or "none"
        raise UnknownNameError(f"unknown sampler '{name}'{suggest(name, self.samplers)}; registered: {known}")

    def add_network(self, name: str, cls: Callable[..., Any], plugin: str, doc: str | None = None) -> None:
        _check_name(name, plugin, dotted=False)
        _claim(self.networks, "network", name, plugin)
        if not callable(cls):
            raise PluginError(f"plugin '{plugin}': network '{name}' is not callable")
        self.networks[name] = ComponentInfo(name, cls, plugin, _doc_of(cls, doc))

    def network(self, name: str) -> ComponentInfo:
        if name in self.networks:
            return self.networks[name]
        known = ", ".join(sorted(self.networks)) or "none"
        raise UnknownNameError(f"unknown network '{name}'{suggest(name, self.networks)}; registered: {known}")

    def dataset(self, name: str) -> ComponentInfo:
        if name in self.datasets:
            return self.datasets[name]
        known = ", ".join(sorted(self.datasets)) or "none"
        raise UnknownNameError(f"unknown dataset '{name}'{suggest(name, self.datasets)}; registered: {known}")

    def all_values(self) -> list[str]:
        """Every concept value (for suggestions of bare names)."""
        return sorted({v for c in self.concepts.values() for v in c.values})

    # -- construction -----------------------------------------------------------------------
    def make_expert(self, name: str, /, **params: Any) -> Energy:
        """Call the factory of expert ``name`` with ``params``; bad arguments are a clear error."""
        info = self.expert(name)
        _check_params(info.factory, params, name)
        try:
            energy = info.factory(**params)
        except (ComposerError, TypeError, ValueError) as exc:
            if isinstance(exc, ComposerError) and str(exc).startswith(f"{name}:"):
                raise  # already one clear line naming the expert
            raise CompositionError(f"{name}: {exc}") from exc
        label = name if not params else f"{name}({', '.join(f'{k}={_lit(v)}' for k, v in params.items())})"
        return _labelled(energy, label, name)

    def make_concept(self, name: str, value: str) -> Energy:
        """The expert for ``value`` of concept family ``name``."""
        info = self.concept(name)
        if value not in info.values:
            raise UnknownNameError(
                f"'{value}' is not a value of concept '{name}'{suggest(value, info.values)}; "
                f"values: {', '.join(info.values)}"
            )
        return _labelled(info.factory(value), f"{name}={value}", name)

    def _failure_note(self) -> str:
        if not self.failures:
            return ""
        return "; note: " + "; ".join(str(f) for f in self.failures)


def _claim(table: dict[str, Any], kind: str, name: str, plugin: str) -> None:
    if name in table:
        other = table[name].plugin
        if other == plugin:
            raise DuplicateNameError(f"plugin '{plugin}' registers {kind} '{name}' twice")
        raise DuplicateNameError(f"plugins '{other}' and '{plugin}' both register {kind} '{name}'")


def _check_name(name: str, plugin: str, dotted: bool) -> None:
    parts = name.split(".") if isinstance(name, str) else []
    ok = bool(parts) and all(p.isidentifier() for p in parts) and (len(parts) >= 2 if dotted else len(parts) == 1)
    if not ok:
        form = "'family.name' (identifiers joined by dots)" if dotted else "an identifier"
        raise PluginError(f"plugin '{plugin}': name {name!r} must be {form}")


def _check_params(factory: Callable[..., Any], params: dict[str, Any], name: str) -> None:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = [p for p, v in sig.parameters.items() if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD)]
    for key in params:
        if key not in accepted:
            raise CompositionError(
                f"{name}: unexpected argument '{key}'{suggest(key, accepted)}; accepts: {', '.join(accepted) or 'none'}"
            )
    missing = [
        p for p, v in sig.parameters.items()
        if v.default is v.empty and v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD) and p not in params
    ]
    if missing:
        raise CompositionError(f"{name}: missing argument(s) {', '.join(missing)}")


def factory_parameters(factory: Callable[..., Any]) -> list[dict[str, str]] | None:
    """The parameters an expert factory accepts, from its signature (what ``composer list --params`` shows).

    Returns:
        One ``{"name", "type", "default"}`` dict per keyword parameter, in order: ``type`` is the annotation
        written as in the composition language's terms (``""`` when unannotated), ``default`` the default as
        a literal (absent for a required parameter). ``None`` when the signature cannot be read or takes
        ``**kwargs`` (anything goes).

    Example:
        >>> def ring(radius: float = 1.0, width: float = 0.1): ...
        >>> factory_parameters(ring)
        [{'name': 'radius', 'type': 'float', 'default': '1'}, {'name': 'width', 'type': 'float', 'default': '0.1'}]
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    hints = _type_hints(factory)
    out = []
    for name, p in sig.parameters.items():
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        hint = hints.get(name, p.annotation)
        entry = {"name": name, "type": "" if hint is p.empty else _type_name(hint)}
        if p.default is not p.empty:
            entry["default"] = _lit(p.default)
        out.append(entry)
    return out


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of ``factory`` (of ``__init__`` for a class); ``{}`` when they cannot be resolved."""
    import typing

    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable string annotations: fall back to the signature's text
        return {}


def _type_name(hint: Any) -> str:
    """``float | Sequence[float] | Tensor`` for a resolved hint; the text itself for a string annotation."""
    if isinstance(hint, str):
        return hint
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    for prefix in ("typing.", "collections.abc.", "torch.", "builtins."):
        text = text.replace(prefix, "")
    return text.replace("NoneType", "None")


def _lit(v: Any) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _labelled(energy: Any, label: str, name: str) -> Energy:
    if not isinstance(energy, Energy):
        raise PluginError(f"the factory of '{name}' returned {type(energy).__name__}, not a composer.Energy")
    energy.display_name = label
    return energy
