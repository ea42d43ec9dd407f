"""Built-in plugin of the training package: ``composer train``, 2-D datasets, ``ckpt.load``.

Registered through the same hooks as any plugin (listed in ``composer.plugins.BUILTIN_PLUGINS``):

- command ``composer train`` (``composer.training_cli``);
- networks ``mlp`` and ``conv`` (``composer.nets``; plugins add more with ``register_networks``);
- datasets ``eight_gaussians`` and ``half_planes`` (a 2-D concept family: left/right/down/up);
- expert ``ckpt.load(path="...", value=None)``: a trained checkpoint (file or training folder)
  in the composition language, e.g.
  ``composer sample 'ckpt.load(path="runs/eight") & toy.halfspace(normal=[0,1], offset=0)'``.
  Values of one family file share one network, so their product runs as one batched call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from composer.energy import Energy
from composer.hookspecs import hookimpl
from composer.training import checkpoint as ckpt
from composer.training.data import eight_gaussians

HALF_PLANE_VALUES = ("left", "right", "down", "up")

_NETWORKS: dict[tuple[str, int, int, str, bool], tuple[Any, dict[str, Any]]] = {}


def half_planes(n: int = 8000, seed: int = 0, near: float = 0.35, far: float = 1.2) -> dict[str, np.ndarray]:
    """A 2-D concept family with values ``left, right, down, up``: ``n`` labelled points.

    ``left`` is ``N((-1, 0), diag(near^2, far^2))``; the others are its rotations. A product of
    ``left`` and ``up`` is the Gaussian near ``(-0.92, 0.92)`` (std 0.34 with the defaults).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    centre = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])[y]
    std = np.where((y < 2)[:, None], [near, far], [far, near])
    x = centre + std * rng.standard_normal((n, 2))
    return {"x": x.astype(np.float32), "y": y.astype(np.int64), "values": np.asarray(HALF_PLANE_VALUES)}


def load(path: str, value: str | None = None, ema: bool = True) -> Energy:
    """A trained checkpoint as an expert: ``ckpt.load(path="runs/eight")`` or ``(path=..., value="red")``.

    ``path`` is an ``.safetensors`` file or a training output folder. Loaded networks are cached
    by file (and modification time), so every value of one family shares one network.
    """
    file = ckpt.resolve_checkpoint(Path(path).expanduser())
    stat = file.stat()
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size, "cpu", bool(ema))
    if key not in _NETWORKS:
        _NETWORKS[key] = ckpt.network_from_checkpoint(file, "cpu", ema)
    net, meta = _NETWORKS[key]
    if meta["values"] is None:
        if value is not None:
            raise ValueError(f"{file} is an unconditional expert; it has no value '{value}'")
        return ckpt.expert_from_network(net, meta)
    if value is None:
        raise ValueError(f"{file} is a concept family: pass value= one of {', '.join(meta['values'])}")
    family = ckpt.family_from_network(net, meta)
    if value not in family:
        raise ValueError(f"'{value}' is not a value of {file}; values: {', '.join(meta['values'])}")
    return family[value]


@hookimpl
def register_datasets(register: Any) -> None:
    register("eight_gaussians", eight_gaussians)
    register("half_planes", half_planes)


@hookimpl
def register_networks(register: Any) -> None:
    from composer.nets import ConvEnergy, MLPEnergy

    register("mlp", MLPEnergy, doc="MLP energy (vectors), optionally conditional / noise-conditional")
    register("conv", ConvEnergy, doc="small convnet energy for images (IGEBM-style), spectral norm optional")


@hookimpl
def register_experts(register: Any) -> None:
    register("ckpt.load", load)


@hookimpl
def register_commands(cli: Any) -> None:
    from composer.training_cli import train_command

    cli.add_command(train_command)
