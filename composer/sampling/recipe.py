"""Sampling recipes: default ``sample`` arguments that experts carry with them.

An expert may set the attribute ``sampling_recipe``: a dict of ``composer.sample`` keyword
arguments (e.g. a noise ladder ``sigmas``, ``steps``, ``step_size``, an ``init``) that make it
sample well. ``sample`` looks for one in the composition tree (the node itself first, then its
children depth-first; the first found wins) and uses it for every argument the caller did not
give; what the caller gives always wins, and ``recipe=False`` ignores recipes.

Without a ``sampler`` from the caller or a noise-ladder recipe, a composition with a mixture node
(``a | b``) or a multi-modal expert (one with ``multimodal = True``, e.g. ``toy.mixture``) is sampled
with ``"smc"``: Langevin chains do not cross between modes, so only a sampler that reweights
(``composer.sampling.smc``) returns the modes in their proportions. A population sampler's default
``steps`` is its own (``SAMPLER_DEFAULTS``)::

    >>> import composer
    >>> e = composer.as_energy(lambda x: 0.5 * (x ** 2).sum(-1), event_shape=(2,))
    >>> e.sampling_recipe = {"steps": 50, "sampler": "mala"}
    >>> resolve_options(e, True, {"steps": None, "sampler": None, "step_size": 0.1})["steps"]
    50
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from composer.energy import Energy
from composer.errors import CompositionError

#: built-in defaults of the arguments a recipe may set (``None``: off / chosen by the driver)
DEFAULTS: dict[str, Any] = {
    "steps": 500,
    "sampler": "langevin",
    "init": None,
    "step_size": 0.01,
    "noise": "exact",
    "temperature": 1.0,
    "clip_grad": None,
    "clip_grad_norm": None,
    "clamp": True,
    "sigmas": None,
    "predictor": None,
    "warmup": 0,
    "kernel_options": None,
}


#: defaults of the samplers whose ``steps`` mean something else (final steps of SMC; PT iterations)
SAMPLER_DEFAULTS: dict[str, dict[str, Any]] = {"smc": {"steps": 20}, "pt": {"steps": 1000}}


def multimodal_reason(energy: Energy) -> str | None:
    """Why ``energy`` needs a sampler that gets mode proportions right, or ``None``.

    A mixture node, or a node with ``multimodal = True``; never for a noise-conditional composition
    (image experts sample on their noise ladder).
    """
    if getattr(energy, "noise_conditional", False):
        return None
    for node in energy.walk():
        if type(node).__name__ == "Mixture":
            return f"it has a mixture node ({node.formula()})"
        if getattr(node, "multimodal", False):
            return f"{node.formula()} is multi-modal"
    return None


def recipe_of(energy: Energy) -> tuple[dict[str, Any], str | None]:
    """The first ``sampling_recipe`` in the tree of ``energy`` and the formula of its owner.

    Returns:
        ``(recipe, owner)``; ``({}, None)`` when no node carries one.

    Raises:
        CompositionError: a recipe that is not a dict or sets an unknown argument.
    """
    for node in energy.walk():
        recipe = getattr(node, "sampling_recipe", None)
        if recipe is not None:
            return _checked(recipe, node.formula()), node.formula()
    return {}, None


def _checked(recipe: Any, owner: str) -> dict[str, Any]:
    if not isinstance(recipe, Mapping):
        raise CompositionError(f"the sampling_recipe of {owner} must be a dict, got {type(recipe).__name__}")
    unknown = sorted(set(recipe) - set(DEFAULTS))
    if unknown:
        raise CompositionError(
            f"the sampling_recipe of {owner} sets unknown argument(s) {', '.join(unknown)}; "
            f"a recipe may set: {', '.join(DEFAULTS)}"
        )
    return dict(recipe)


def resolve_options(energy: Energy, recipe: bool | Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the arguments in ``given`` that are ``None``: from the recipe, then from ``DEFAULTS``.

    Args:
        energy: the composition (searched for ``sampling_recipe`` when ``recipe`` is ``True``).
        recipe: ``True`` (the energy's own), ``False`` (none), or an explicit dict.
        given: the caller's values of (some of) the keys of ``DEFAULTS``; ``None`` = not given.
    """
    return explain_options(energy, recipe, given)[0]


def explain_options(energy: Energy, recipe: bool | Mapping[str, Any],
                    given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``resolve_options`` and, per argument, where its value came from (``"given"``, ``"recipe of X"``,
    ``"auto: ..."``, ``"default"``)."""
    owner = None
    if recipe is True:
        found, owner = recipe_of(energy)
    elif recipe is False or recipe is None:
        found = {}
    else:
        found = _checked(recipe, "the recipe argument")
        owner = "the recipe argument"
    auto: dict[str, Any] = {}
    why = ""
    if recipe is True and given.get("sampler") is None and not found.get("sigmas"):
        reason = multimodal_reason(energy)
        if reason is not None:
            auto["sampler"], why = "smc", f"auto: {reason}"
    sampler = given.get("sampler") or auto.get("sampler") or found.get("sampler") or DEFAULTS["sampler"]
    own = SAMPLER_DEFAULTS.get(sampler, {}) if isinstance(sampler, str) else {}
    out, source = {}, {}
    for key, value in given.items():
        if value is not None:
            out[key], source[key] = value, "given"
        elif key in auto:
            out[key], source[key] = auto[key], why
        elif key in found:
            out[key], source[key] = found[key], f"recipe of {owner}"
        elif key in own:
            out[key], source[key] = own[key], f"default of {sampler}"
        else:
            out[key], source[key] = DEFAULTS[key], "default"
    return out, source
