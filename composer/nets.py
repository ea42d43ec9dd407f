"""Reusable energy networks: an MLP for vectors and a small convnet for images.

Every network maps a batch ``x: (B, *event_shape)`` to energies ``(B,)`` and is called as
``net(x, cond=None, sigma=None)``:

- **conditional** (``num_classes > 0``): one network serves every value of a concept family.
  ``cond`` is a LongTensor of value indices ``(B,)``; each hidden layer gets a per-value gain
  and bias (the conditional model of Du & Mordatch 2019, IGEBM). This is the calling
  convention of ``composer.ConditionalEnergy(network, condition=torch.tensor(i))``, so a
  product of several values of one family runs as one batched call.
- **noise-conditional** (``noise_conditional=True``): ``sigma`` (a float or ``(B,)`` tensor)
  modulates every hidden layer through an embedding of ``log sigma``, and the output is
  divided by ``sigma`` so that the score ``-grad_x E`` scales as ``1 / sigma`` (Song & Ermon
  2019; 2020). Trained by denoising score matching (``composer.training.objectives.dsm_loss``).

A network is rebuilt from its JSON ``config`` (``build_network(net.config)``), which is what
checkpoints store next to the weights.

Example:
    >>> net = MLPEnergy(event_shape=(2,), hidden=(32, 32), num_classes=3)
    >>> net(torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])).shape
    torch.Size([5])
    >>> build_network(net.config).config == net.config
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from composer.errors import CheckpointError, CompositionError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "swish": nn.SiLU,  # smooth, so Langevin gradients are continuous (Du et al. 2021)
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # IGEBM / JEM convnets
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}

SIGMA_EMBED = 32  # width of the log-sigma embedding shared by all layers


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise CompositionError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _maybe_sn(layer: nn.Module, on: bool) -> nn.Module:
    return _spectral_norm(layer) if on else layer


class Modulation(nn.Module):
    """Per-layer gain and bias from a value index and/or the noise level.

    ``h -> gain * h + bias`` with ``gain = g_cond[c] * (1 + g_sigma)`` and
    ``bias = b_cond[c] + b_sigma``; starts as the identity (gains 1, biases 0).

    Args:
        width: number of features (channels) of ``h``.
        num_classes: values of the concept family (0: unconditional).
        noise_conditional: modulate by the noise embedding too.
    """

    def __init__(self, width: int, num_classes: int, noise_conditional: bool):
        super().__init__()
        self.gain = self.bias = self.sigma_proj = None
        if num_classes:
            self.gain = nn.Embedding(num_classes, width)
            self.bias = nn.Embedding(num_classes, width)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)
        if noise_conditional:
            self.sigma_proj = nn.Linear(SIGMA_EMBED, 2 * width)
            nn.init.zeros_(self.sigma_proj.weight)
            nn.init.zeros_(self.sigma_proj.bias)

    def forward(self, h: Tensor, cond: Tensor | None, sigma_emb: Tensor | None) -> Tensor:
        """``h: (B, width, *spatial)``, ``cond: (B,)`` long, ``sigma_emb: (B, SIGMA_EMBED)``."""
        extra = (1,) * (h.dim() - 2)
        if self.gain is not None:
            h = self.gain(cond).view(*cond.shape, -1, *extra) * h + self.bias(cond).view(*cond.shape, -1, *extra)
        if self.sigma_proj is not None:
            g, b = self.sigma_proj(sigma_emb).chunk(2, dim=-1)
            h = (1 + g.view(*g.shape, *extra)) * h + b.view(*b.shape, *extra)
        return h


class EnergyNet(nn.Module):
    """Common conditioning logic of the networks below (not used directly).

    Subclasses set ``self.config`` (JSON-serialisable constructor arguments plus ``"type"``)
    and implement ``_energy(x, cond, sigma_emb) -> (B,)``.
    """

    num_classes: int = 0
    noise_conditional: bool = False
    config: dict[str, Any]

    def _init_sigma(self) -> None:
        self.sigma_embed = None
        if self.noise_conditional:
            self.sigma_embed = nn.Sequential(nn.Linear(2, SIGMA_EMBED), nn.SiLU(), nn.Linear(SIGMA_EMBED, SIGMA_EMBED))

    def forward(self, x: Tensor, cond: Tensor | None = None, sigma: float | Tensor | None = None) -> Tensor:
        """Energies ``(B,)`` of ``x: (B, *event_shape)``.

        Args:
            x: the batch.
            cond: ``(B,)`` value indices (long) for a conditional network, else ``None``.
            sigma: noise level (float or ``(B,)``) for a noise-conditional network, else ``None``.
        """
        if x.shape[1:] != self.event_shape:
            raise CompositionError(
                f"{type(self).__name__} expects inputs of shape (B, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if self.num_classes and cond is None:
            raise CompositionError(f"this network is conditional ({self.num_classes} values): pass cond=(B,) indices")
        if not self.num_classes and cond is not None:
            raise CompositionError("this network is unconditional: it takes no cond")
        sigma_emb, sig = None, None
        if self.noise_conditional:
            if sigma is None:
                raise CompositionError("this network is noise-conditional: pass sigma= (float or (B,) tensor)")
            sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
            log_s = sig.log()[:, None]
            sigma_emb = self.sigma_embed(torch.cat([log_s, log_s.square()], dim=-1))
        out = self._energy(x, cond, sigma_emb)
        return out / sig if sig is not None else out

    def _energy(self, x: Tensor, cond: Tensor | None, sigma_emb: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class MLPEnergy(EnergyNet):
    """Multi-layer perceptron energy for vectors (or any shape, flattened).

    Args:
        event_shape: shape of one sample, e.g. ``(2,)``.
        hidden: widths of the hidden layers.
        activation: one of ``ACTIVATIONS``.
        num_classes: values of a concept family (0: unconditional).
        noise_conditional: take ``sigma=`` and divide the output by it.
        spectral_norm: spectral normalisation of every linear layer.
    """

    def __init__(
        self,
        event_shape: Sequence[int] = (2,),
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "swish",
        num_classes: int = 0,
        noise_conditional: bool = False,
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        self.num_classes, self.noise_conditional = int(num_classes), bool(noise_conditional)
        self.config = {
            "type": "mlp", "event_shape": list(self.event_shape), "hidden": [int(h) for h in hidden],
            "activation": activation, "num_classes": self.num_classes,
            "noise_conditional": self.noise_conditional, "spectral_norm": bool(spectral_norm),
        }
        if not hidden:
            raise CompositionError("MLPEnergy needs at least one hidden layer")
        widths = [math.prod(self.event_shape), *self.config["hidden"]]
        self.layers = nn.ModuleList(_maybe_sn(nn.Linear(a, b), spectral_norm) for a, b in zip(widths, widths[1:]))
        self.mods = nn.ModuleList(Modulation(w, self.num_classes, self.noise_conditional) for w in widths[1:])
        self.act = _activation(activation)
        self.head = _maybe_sn(nn.Linear(widths[-1], 1), spectral_norm)
        self._init_sigma()

    def _energy(self, x: Tensor, cond: Tensor | None, sigma_emb: Tensor | None) -> Tensor:
        h = x.flatten(1)
        for layer, mod in zip(self.layers, self.mods):
            h = self.act(mod(layer(h), cond, sigma_emb))
        return self.head(h).squeeze(-1)


class ConvEnergy(EnergyNet):
    """A small convolutional energy for images ``(C, H, W)`` in the style of IGEBM.

    A 3x3 stem, then per entry of ``channels`` two 3x3 convolutions (each followed by the
    per-value / noise modulation and the activation) and a 2x average pool; global sum
    pooling and a linear head.

    Args:
        event_shape: ``(C, H, W)``.
        channels: output channels of each stage.
        activation: one of ``ACTIVATIONS`` (IGEBM: ``"leaky_relu"``; smooth: ``"swish"``).
        num_classes: values of a concept family (0: unconditional).
        noise_conditional: take ``sigma=`` and divide the output by it.
        spectral_norm: spectral normalisation of every convolution and the head (IGEBM).
    """

    def __init__(
        self,
        event_shape: Sequence[int] = (3, 32, 32),
        channels: Sequence[int] = (64, 128, 128),
        activation: str = "swish",
        num_classes: int = 0,
        noise_conditional: bool = False,
        spectral_norm: bool = True,
    ):
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        if len(self.event_shape) != 3:
            raise CompositionError(f"ConvEnergy needs event_shape (C, H, W), got {tuple(self.event_shape)}")
        if not channels:
            raise CompositionError("ConvEnergy needs at least one stage in channels")
        self.num_classes, self.noise_conditional = int(num_classes), bool(noise_conditional)
        self.config = {
            "type": "conv", "event_shape": list(self.event_shape), "channels": [int(c) for c in channels],
            "activation": activation, "num_classes": self.num_classes,
            "noise_conditional": self.noise_conditional, "spectral_norm": bool(spectral_norm),
        }
        chans = self.config["channels"]
        self.stem = _maybe_sn(nn.Conv2d(self.event_shape[0], chans[0], 3, padding=1), spectral_norm)
        convs, mods, prev = [], [], chans[0]
        for c in chans:
            convs += [nn.Conv2d(prev, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)]
            mods += [Modulation(c, self.num_classes, self.noise_conditional) for _ in range(2)]
            prev = c
        self.convs = nn.ModuleList(_maybe_sn(c, spectral_norm) for c in convs)
        self.mods = nn.ModuleList(mods)
        self.act = _activation(activation)
        self.pool = nn.AvgPool2d(2, ceil_mode=True)
        self.head = _maybe_sn(nn.Linear(prev, 1), spectral_norm)
        self._init_sigma()

    def _energy(self, x: Tensor, cond: Tensor | None, sigma_emb: Tensor | None) -> Tensor:
        h = self.act(self.stem(x))
        for i in range(0, len(self.convs), 2):
            h = self.act(self.mods[i](self.convs[i](h), cond, sigma_emb))
            h = self.act(self.mods[i + 1](self.convs[i + 1](h), cond, sigma_emb))
            h = self.pool(h)
        return self.head(h.sum(dim=(2, 3))).squeeze(-1)


NETWORKS: dict[str, type[EnergyNet]] = {"mlp": MLPEnergy, "conv": ConvEnergy}


def build_network(config: dict[str, Any], registry: Any = None) -> nn.Module:
    """Rebuild a network from its ``config`` (``{"type": name, **constructor arguments}``).

    ``type`` is a built-in (``mlp``, ``conv``) or a network registered by a plugin through the
    ``register_networks`` hook (looked up in ``registry``, default: every installed plugin).

    Raises:
        CheckpointError: unknown type, bad constructor arguments, or a network without ``config``.
    """
    if not isinstance(config, dict) or "type" not in config:
        raise CheckpointError(f"a network config must be a table with a 'type' key, got {config!r}")
    kwargs = dict(config)
    kind = kwargs.pop("type")
    cls: Any = NETWORKS.get(kind)
    if cls is None:
        if registry is None:
            from composer.plugins import get_registry

            registry = get_registry()
        networks = getattr(registry, "networks", {})
        if kind not in networks:
            known = ", ".join(sorted({*NETWORKS, *networks}))
            raise CheckpointError(f"unknown network type '{kind}' (is its plugin installed?); known: {known}")
        cls = networks[kind].obj
    try:
        net = cls(**kwargs)
    except TypeError as exc:
        raise CheckpointError(f"bad arguments for network '{kind}': {exc}") from exc
    if not isinstance(getattr(net, "config", None), dict):
        raise CheckpointError(f"network '{kind}' does not expose its JSON config as .config")
    return net
