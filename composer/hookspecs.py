"""Hook specifications of the ``composer`` plugin system (pluggy, project name ``composer``).

A plugin is a module or object with functions marked ``@composer.hookimpl`` whose names
are the hooks below. It is found through the entry-point group ``composer``::

    [project.entry-points.composer]
    myplugin = "my_package.plugin"

Each ``register_*`` hook receives a ``register`` callback; call it once per thing the
plugin provides. Every hook is optional.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("composer")
hookimpl = pluggy.HookimplMarker("composer")


@hookspec
def register_experts(register: Callable[..., None]) -> None:
    """Register parametrised experts.

    Call ``register(name, factory, doc=None)``: ``name`` is ``"family.expert"``,
    ``factory(**params) -> composer.Energy`` takes the keyword arguments written in the
    composition language (``family.expert(key=value, ...)``): numbers, strings and lists.
    """


@hookspec
def register_concepts(register: Callable[..., None]) -> None:
    """Register concept families: one expert per value of a concept.

    Call ``register(name, values, factory, doc=None)``: ``name`` is ``"family.concept"``,
    ``values`` a list of identifiers, ``factory(value) -> composer.Energy``. The language
    writes ``family.concept=value``, or the bare ``value`` when only one family has it.
    Values of one family that share a network (``composer.ConditionalEnergy``) run as one
    batched call inside a product.
    """


@hookspec
def register_samplers(register: Callable[..., None]) -> None:
    """Register sampler kernels.

    Call ``register(name, kernel, doc=None)``: ``kernel`` has ``init(x, energy_fn)`` and
    ``step(state, energy_fn, **params) -> (state, info)`` (see ``composer.sampling``).
    """


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Register datasets for ``composer train`` and ``composer dataset``.

    Call ``register(name, loader, doc=None)``: ``loader(**options)`` returns a dict of
    numpy arrays with at least ``"x"`` of shape ``(N, *event_shape)``.
    """


@hookspec
def register_networks(register: Callable[..., None]) -> None:
    """Register trainable network architectures for ``composer train`` and checkpoints.

    Call ``register(name, cls, doc=None)``: ``cls(**config)`` builds the network from the
    JSON-able ``config`` a training file's ``[network]`` table gives (``type = name``), and the
    instance exposes that ``config`` again, so a checkpoint (weights + JSON) rebuilds it
    without executing code from the file. Called as ``net(x, cond=None, sigma=None) -> (B,)``.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``composer`` command line.

    ``cli`` is the root ``click.Group``; decorate new commands with ``@cli.command()``, or join a group that
    several plugins share with ``composer.cli.plugin_group(cli, "eval").add_command(command)``.
    Raise ``composer.ComposerError`` for bad input: the CLI prints it as one line.
    """
