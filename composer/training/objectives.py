"""Training objectives: contrastive divergence with a replay buffer, denoising score matching.

- ``cd`` (Du & Mordatch 2019): negatives ``x-`` come from short-run Langevin chains of the
  shared sampler started from a replay buffer; the loss is
  ``mean E(x+) - mean E(x-) + l2 * (mean E(x+)^2 + mean E(x-)^2)``.
- ``dsm`` (Vincent 2011; Song & Ermon 2019): for a noise-conditional energy ``E(x, sigma)``
  and ``x~ = x + sigma * z``, the loss ``0.5 * mean || sigma * grad_x E(x~, sigma) - z ||^2``
  (the score ``-grad_x E`` matched to ``-z / sigma``, weighted by ``sigma^2``), with sigma
  drawn from a geometric ladder; gradients through ``grad_x E`` use ``create_graph=True``. With
  ``weighting = "edm"`` each sample's loss is multiplied by ``1 + sigma^2 / sigma_data^2`` (Karras et al.
  2022; divided by its mean over the ladder, so the loss keeps its scale), which gives the high noise
  levels (global layout) the weight of the low ones.
- ``discriminative`` (the ``p(y | x)`` term of JEM, Grathwohl et al. 2019, on noised inputs): for a concept
  family, ``p_sigma(c | x~) = softmax_c(-E(x~, c, sigma))`` and the loss is the cross-entropy
  ``mean [E(x~, y, sigma) + log sum_c exp(-E(x~, c, sigma))]`` with ``x~ = x + sigma * z`` and sigma drawn
  from the ``[dsm]`` ladder. It trains the likelihood part of a Bayes-form concept expert,
  ``E(x | c) = E_prior(x) + E(x, c)`` (see ``composer.ConditionalEnergy``'s ``base``).

Each objective computes its loss with ONE call of the (possibly DDP-wrapped) network on the
whole batch, and keeps its state (buffer, generator) as tensors for checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from composer.energy import Energy, stacked_values
from composer.training.config import CDConfig, DSMConfig
from composer.training.data import step_generator


def cd_loss(e_pos: Tensor, e_neg: Tensor, l2: float) -> Tensor:
    """``mean E(x+) - mean E(x-) + l2 * (mean E(x+)^2 + mean E(x-)^2)`` of ``(B,)`` energies."""
    loss = e_pos.mean() - e_neg.mean()
    if l2:
        loss = loss + l2 * (e_pos.square().mean() + e_neg.square().mean())
    return loss


def dsm_loss(energy_fn: Any, x: Tensor, sigma: Tensor, z: Tensor, cond: Tensor | None = None,
             weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Denoising score matching loss with ``sigma^2`` weighting (times ``weight`` per sample if given).

    Args:
        energy_fn: ``energy_fn(x, cond, sigma=...) -> (B,)`` (a noise-conditional network).
        x: ``(B, *event_shape)`` clean samples.
        sigma: ``(B,)`` noise levels.
        z: ``(B, *event_shape)`` standard normal noise.
        cond: ``(B,)`` value indices, or ``None``.
        weight: ``(B,)`` extra per-sample weights (e.g. EDM's ``1 + sigma^2 / sigma_data^2``), or ``None``.

    Returns:
        ``(loss, energies, grad_norm)``: the scalar loss (differentiable in the parameters), the
        energies ``E(x~, sigma)`` ``(B,)`` and the mean input-gradient norm (detached scalar).
    """
    s = sigma.view(-1, *([1] * (x.dim() - 1)))
    x_noisy = (x + s * z).requires_grad_(True)
    energies = energy_fn(x_noisy, cond, sigma=sigma)
    (grad,) = torch.autograd.grad(energies.sum(), x_noisy, create_graph=True)
    per_sample = 0.5 * (s * grad - z).square().flatten(1).sum(1)
    loss = (per_sample if weight is None else weight * per_sample).mean()
    # the score ignores the output bias: keep every parameter in the graph, as DDP requires
    loss = loss + 0.0 * energies.sum()
    return loss, energies, grad.detach().flatten(1).norm(dim=1).mean()


def discriminative_loss(energies: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of ``p(c | x) = softmax(-energies)`` for ``energies: (B, K)``, ``y: (B,)``.

    Returns:
        ``(loss, accuracy)``: the scalar mean cross-entropy and the detached share of rows whose
        lowest-energy value is ``y``.
    """
    loss = nn.functional.cross_entropy(-energies, y.long())
    return loss, (energies.detach().argmin(dim=1) == y).float().mean()


def ladder_noise(sigmas: Tensor, seed: int, step: int, batch_size: int, lo: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """This rank's noise levels ``(b,)`` and standard normal noise ``(b, *event_shape)`` for global batch ``step``.

    Drawn for the whole global batch from ``step_generator(seed, step)`` and sliced at rows ``lo:lo + b``
    (``b = x.shape[0]``), so a distributed run sees exactly the noise of a single-process run.
    """
    b = x.shape[0]
    g = step_generator(seed, step, 2, x.device)
    idx = torch.randint(len(sigmas), (batch_size,), generator=g, device=x.device)
    z = torch.randn(batch_size, *x.shape[1:], generator=g, device=x.device, dtype=x.dtype)
    return sigmas[idx[lo:lo + b]].to(x.dtype), z[lo:lo + b]


def sigma_ladder(sigma_max: float, sigma_min: float, num: int) -> Tensor:
    """``num`` noise levels from ``sigma_max`` down to ``sigma_min``, geometrically spaced."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num))


def resolve_kernel(name: str) -> Any:
    """The kernel object of a sampler name: built-ins directly, others from the plugin registry."""
    from composer import sampling

    builtin = {"langevin": sampling.langevin, "mala": sampling.mala, "hmc": sampling.hmc}
    if name in builtin:
        return builtin[name]
    from composer.plugins import get_registry

    return get_registry().sampler(name).obj


class BoundNetwork(Energy):
    """A network with a fixed per-chain condition, as an ``Energy`` the sampler can run.

    ``forward(x) = network(x, cond)`` with ``cond`` set before each sampling call.
    """

    def __init__(self, network: nn.Module, event_shape: Any, domain: Any, noise_conditional: bool = False):
        super().__init__(event_shape, domain, "training negatives")
        self.net = [network]  # a list: not registered as a child (no .to() surprises, no state_dict)
        self.cond: Tensor | None = None
        self.noise_conditional = noise_conditional

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        if self.noise_conditional:
            return self.net[0](x, self.cond, sigma=sigma)
        return self.net[0](x, self.cond)


class CDObjective:
    """Contrastive divergence with short-run Langevin negatives from a device-resident replay buffer.

    For a concept family every buffer slot belongs to one value for good (drawn from the data's
    labels when the buffer is created, so values appear as often as in the data): a negative
    keeps its value from one iteration to the next, as in IGEBM's conditional model, and the
    loss compares ``E(x+, y+)`` with ``E(x-, y-)``.

    Args:
        cfg: the ``[cd]`` table.
        network: the raw (unwrapped) network, used by the sampler.
        event_shape, domain: of the data; the buffer re-initialises chains uniformly in ``domain``.
        device: where the buffer lives.
        seed: this rank's sampler seed.
        capacity: this rank's share of ``cfg.buffer_size``.
        labels: ``(N,)`` value indices of the data (concept family), else ``None``.
    """

    def __init__(self, cfg: CDConfig, network: nn.Module, event_shape: Any, domain: Any,
                 device: torch.device, seed: int, capacity: int, labels: Tensor | None = None):
        from composer.sampling import ReplayBuffer

        self.cfg = cfg
        self.kernel = resolve_kernel(cfg.sampler)
        self.event_shape, self.domain = tuple(event_shape), domain
        self.bound = BoundNetwork(network, event_shape, domain).to(device)
        self.buffer = ReplayBuffer(capacity, reinit_prob=cfg.reinit_prob)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.device = device
        self.slot_labels: Tensor | None = None
        if labels is not None:
            pick = torch.randint(len(labels), (capacity,), generator=self.generator, device=device)
            self.slot_labels = labels.to(device)[pick]
        self.last_negatives: Tensor | None = None

    def _run(self, network: nn.Module, n: int, cond: Tensor | None, init: Any,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        from composer.sampling import sample

        self.bound.net[0] = network
        self.bound.cond = cond
        was_training = network.training
        network.eval()  # no spectral-norm power iterations while sampling
        try:
            res = sample(
                self.bound, n, steps=self.cfg.steps, sampler=self.kernel, init=init,
                generator=generator or self.generator, device=self.device, step_size=self.cfg.step_size,
                noise=self.cfg.noise, clip_grad=self.cfg.clip_grad or None, clamp=True, progress=False,
                energies=False,  # CD re-evaluates the negatives with the loss: skip the sampler's final pass
                guard=False,  # short runs on a model still learning; the trainer's own guard watches them
            )
        finally:
            network.train(was_training)
            self.bound.cond = None
        gn = res.trace.get("grad_norm")
        return res.x.detach(), (gn[-1] if gn is not None and len(gn) else None)

    def negatives(self, network: nn.Module, n: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``n`` negatives from the buffer after ``cfg.steps`` sampler steps (written back).

        Returns:
            ``x: (n, *event_shape)``, their value indices ``(n,)`` (or ``None``) and the mean
            input-gradient norm at the last step (or ``None``).
        """
        if self.slot_labels is None:
            x, grad_norm = self._run(network, n, None, self.buffer)
            cond = None
        else:
            x0, slots = self.buffer.sample(n, self.event_shape, self.domain, self.generator, self.device)
            cond = self.slot_labels[slots]
            x, grad_norm = self._run(network, n, cond, x0)
            self.buffer.update(slots, x)
        self.last_negatives = x
        return x, cond, grad_norm

    def loss(self, model: nn.Module, network: nn.Module, x: Tensor, cond: Tensor | None, step: int
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The CD loss of positives ``x: (b, *event_shape)`` and fresh negatives; one network call."""
        b = x.shape[0]
        x_neg, cond_neg, grad_norm = self.negatives(network, b)
        both = torch.cat([x, x_neg])
        energies = model(both, None if cond is None else torch.cat([cond, cond_neg]))
        e_pos, e_neg = energies[:b], energies[b:]
        loss = cd_loss(e_pos, e_neg, self.cfg.l2)
        ep, en = e_pos.detach().mean(), e_neg.detach().mean()
        stats = {"loss": loss.detach(), "e_pos": ep, "e_neg": en, "gap": ep - en}
        if grad_norm is not None:
            stats["grad_norm"] = grad_norm.float()
        return loss, stats

    def state(self) -> dict[str, Tensor]:
        """The buffer's chains (once filled), slot values and generator state (``uint8``), for a checkpoint."""
        out = {"generator": self.generator.get_state()}
        if self.buffer.data is not None:
            out["buffer"] = self.buffer.data
        if self.slot_labels is not None:
            out["buffer_labels"] = self.slot_labels
        return out

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        """Restore what ``state()`` returned."""
        self.buffer.load_state_dict({"data": tensors.get("buffer")})
        if self.slot_labels is not None:
            self.slot_labels = tensors["buffer_labels"].clone()
        self.generator.set_state(tensors["generator"].cpu())

    def sample(self, network: nn.Module, n: int, cond: Tensor | None) -> Tensor:
        """Negatives for figures: the last unconditional batch, or fresh chains run for the values ``cond``
        (with their own generator: figures never change the training run)."""
        if cond is None and self.last_negatives is not None and self.last_negatives.shape[0] >= n:
            return self.last_negatives[:n]
        g = torch.Generator(device=self.device).manual_seed(n)
        return self._run(network, n, cond, "uniform", g)[0]


class DiscriminativeObjective:
    """Cross-entropy over a concept family's values on images noised from the ``[dsm]`` ladder.

    The energies of all ``K`` values come from ``network.energies_all(x, sigma) -> (B, K)`` when the
    network has it and is not wrapped (one call on ``B`` rows), else from one call of the model on the
    ``K * B`` rows ``(x, c)`` for every value ``c`` (what a DDP-wrapped network needs). Noise is a pure
    function of the step, as in ``DSMObjective``.

    Args:
        cfg: the ``[dsm]`` table (its ladder).
        num_values: ``K``, the family's values.
        device, seed, batch_size, lo: as in ``DSMObjective``.
    """

    def __init__(self, cfg: DSMConfig, num_values: int, device: torch.device, seed: int, batch_size: int, lo: int):
        self.sigmas = sigma_ladder(cfg.sigma_max, cfg.sigma_min, cfg.num_sigmas).to(device)
        self.num_values, self.seed, self.batch_size, self.lo = int(num_values), seed, batch_size, lo

    def energies(self, model: nn.Module, network: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:
        """``(B, K)`` energies of every value for ``x: (B, *event_shape)`` at noise ``sigma: (B,)``."""
        if model is network and callable(getattr(network, "energies_all", None)):
            return network.energies_all(x, sigma)
        return stacked_values(model, x, self.num_values, sigma)

    def loss(self, model: nn.Module, network: nn.Module, x: Tensor, cond: Tensor | None, step: int
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The cross-entropy of this rank's rows ``x: (b, *event_shape)`` with values ``cond: (b,)``."""
        sigma, z = ladder_noise(self.sigmas, self.seed, step, self.batch_size, self.lo, x)
        x_noisy = x + sigma.view(-1, *([1] * (x.dim() - 1))) * z
        energies = self.energies(model, network, x_noisy, sigma)
        loss, accuracy = discriminative_loss(energies, cond)
        return loss, {"loss": loss.detach(), "e_pos": energies.detach().gather(1, cond.view(-1, 1)).mean(),
                      "accuracy": accuracy}

    def state(self) -> dict[str, Tensor]:
        return {}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        pass

    def sample(self, network: nn.Module, n: int, cond: Tensor | None) -> None:
        """No samples: the likelihood part of an expert does not model the images (its prior does)."""
        return None


class DSMObjective:
    """Denoising score matching over a geometric ladder; per-step noise is a pure function of the step.

    The noise of the whole global batch is drawn from ``step_generator(seed, step)`` and each rank
    takes its rows, so a distributed run sees exactly the noise of a single-process run.

    Args:
        cfg: the ``[dsm]`` table.
        event_shape, domain: of the data (for sampling figures).
        device: where the ladder lives.
        seed: the recipe's seed (the same on every rank).
        batch_size, lo: the global batch and this rank's first row.
    """

    def __init__(self, cfg: DSMConfig, event_shape: Any, domain: Any, device: torch.device, seed: int,
                 batch_size: int, lo: int):
        self.cfg = cfg
        self.sigmas = sigma_ladder(cfg.sigma_max, cfg.sigma_min, cfg.num_sigmas).to(device)
        self.edm_mean = float((1.0 + (self.sigmas / cfg.sigma_data).square()).mean())
        self.event_shape, self.domain, self.device = tuple(event_shape), domain, device
        self.seed, self.batch_size, self.lo = seed, batch_size, lo
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed + 1)

    def loss(self, model: nn.Module, network: nn.Module, x: Tensor, cond: Tensor | None, step: int
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The DSM loss of this rank's rows ``x: (b, *event_shape)`` of global batch ``step``."""
        sigma, z = ladder_noise(self.sigmas, self.seed, step, self.batch_size, self.lo, x)
        weight = None
        if self.cfg.weighting == "edm":  # normalised to mean 1 over the ladder: the loss keeps its usual scale
            weight = (1.0 + (sigma / self.cfg.sigma_data).square()) / self.edm_mean
        loss, energies, grad_norm = dsm_loss(model, x, sigma, z, cond, weight)
        return loss, {"loss": loss.detach(), "e_pos": energies.detach().mean(), "grad_norm": grad_norm}

    def state(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.generator.set_state(tensors["generator"].cpu())

    def sample(self, network: nn.Module, n: int, cond: Tensor | None) -> Tensor:
        """``n`` samples by annealed Langevin over the ladder with the shared sampler."""
        from composer.sampling import sample

        bound = BoundNetwork(network, self.event_shape, self.domain, noise_conditional=True).to(self.device)
        bound.cond = cond
        was_training = network.training
        network.eval()
        try:
            res = sample(bound, n, steps=self.cfg.sample_steps * len(self.sigmas), sigmas=self.sigmas.tolist(),
                         init="uniform", generator=self.generator, device=self.device,
                         step_size=self.cfg.sample_step_size, noise="exact", clamp=True, progress=False)
        finally:
            network.train(was_training)
        return res.x.detach()
