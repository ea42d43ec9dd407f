"""Composition nodes: product (AND), mixture (OR), negation (NOT), weight, scope.

Every node is itself an ``Energy``, so compositions nest to any depth::

    a & b            Product:  E = E_a + E_b                (nested products flatten)
    a | b            Mixture:  E = -logsumexp(-E_a, -E_b)   (optional log-weights)
    a & 0.3 * ~b     Negation: E = E_a - 0.3 * E_b          (only inside a product)
    2 * a            Scaled:   E = 2 * E_a                  (inverse temperature)
    a.on(view)       Scoped:   E = E_a(view(x))

Products of ``ConditionalEnergy`` values sharing one network run as one batched call.

Values in Bayes form (``ConditionalEnergy(..., base=prior)``: ``E = E_prior + E_likelihood``) share
their base: a product, mixture or weight evaluates a shared base once and applies weights, negations
and mixing to the likelihood parts only (``split_base``)::

    red & triangle   E = E_prior + E_red|x + E_triangle|x      (not 2 * E_prior + ...)
    red & ~triangle  E = E_prior + E_red|x - log(1 - p(triangle | x))     (the event "not triangle")
    red | blue       E = E_prior - logsumexp(-E_red|x, -E_blue|x)
    2 * red          E = E_prior + 2 * E_red|x
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from composer.energy import ConditionalEnergy, Energy, call_energy, complement, device_of, guidance_at
from composer.errors import CompositionError


def _check_energy(obj: Any, op: str) -> Energy:
    if not isinstance(obj, Energy):
        raise CompositionError(
            f"cannot use {op} with {type(obj).__name__}; wrap plain callables with composer.as_energy"
        )
    return obj


def _common_event_shape(energies: Sequence[Energy]) -> torch.Size | None:
    shape, owner = None, None
    for e in energies:
        if e.event_shape is None:
            continue
        if shape is None:
            shape, owner = e.event_shape, e
        elif e.event_shape != shape:
            raise CompositionError(
                f"incompatible event shapes: {owner.formula()} has {tuple(shape)} "
                f"but {e.formula()} has {tuple(e.event_shape)}"
            )
    return shape


def _check_devices(energies: Sequence[Energy]) -> None:
    seen: tuple[torch.device, Energy] | None = None
    for e in energies:
        dev = device_of(e)
        if dev is None:
            continue
        if seen is None:
            seen = (dev, e)
        elif dev != seen[0]:
            raise CompositionError(
                f"experts on different devices: {seen[1].formula()} is on {seen[0]} but "
                f"{e.formula()} is on {dev}; move them with .to(device) before composing"
            )


def _intersect_domains(energies: Sequence[Energy]) -> tuple[Tensor, Tensor] | None:
    boxes = [e.domain for e in energies if e.domain is not None and not isinstance(e, Scoped)]
    if not boxes:
        return None
    low = torch.stack(torch.broadcast_tensors(*[b[0] for b in boxes])).amax(0)
    high = torch.stack(torch.broadcast_tensors(*[b[1] for b in boxes])).amin(0)
    if torch.any(low >= high):
        raise CompositionError("the experts' domains do not intersect")
    return low, high


def _number(weight: Any) -> float:
    if isinstance(weight, Tensor) and weight.numel() == 1:
        weight = weight.item()
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise CompositionError(f"a weight must be a number, got {type(weight).__name__}")
    weight = float(weight)
    if not math.isfinite(weight) or weight <= 0:
        raise CompositionError(f"a weight must be a positive finite number, got {weight}; use ~ to negate")
    return weight


def _fmt(w: float) -> str:
    return f"{w:g}"


def split_base(energy: Energy) -> tuple[Energy | None, Energy]:
    """``(base, part)`` with ``E = E_base + E_part`` for a node in Bayes form, else ``(None, energy)``.

    A ``ConditionalEnergy`` with a ``base``, a weight of one (``w * a``: base ``+ w * part``), a
    product with exactly one shared base and a mixture whose components share one base split;
    anything else (scoped experts, several bases) is returned whole.
    """
    if isinstance(energy, ConditionalEnergy) and energy.base is not None:
        return energy.base, energy.without_base()
    if isinstance(energy, Scaled) and energy.part is not None:
        return energy._base[0], Scaled(energy.part, energy.weight)
    if isinstance(energy, Mixture) and energy.parts is not None:
        return energy.base, Mixture(list(energy.parts), energy.log_weights)
    if isinstance(energy, Product) and len(energy.bases) == 1:
        return energy.bases[0], _Likelihoods([energy._part(i) for i in range(len(energy.terms))],
                                             energy.coefficients)
    return None, energy


class Negation(Energy):
    """``alpha * ~b``: subtracts ``alpha * E_b`` inside a product. Not samplable on its own."""

    def __init__(self, energy: Energy, alpha: float = 1.0):
        energy = _check_energy(energy, "~")
        if isinstance(energy, Negation):  # ~~b is b (with the product of the weights)
            raise CompositionError("double negation ~~b is not supported; write b")
        super().__init__(energy.event_shape, None, "~" + energy.formula())
        self.energy = energy
        self.alpha = _number(alpha)
        self.noise_conditional = energy.noise_conditional

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        self.validate()
        raise AssertionError("unreachable")  # pragma: no cover

    def validate(self) -> None:
        raise CompositionError(
            f"{self.formula()} is a negation outside a product; write it as `a & {self.formula()}` "
            "with at least one positive expert a"
        )

    def _formula(self) -> str:
        inner = self.energy.formula()
        if isinstance(self.energy, (Product, Mixture, Scaled)):
            inner = f"({inner})"
        return ("~" if self.alpha == 1 else f"{_fmt(self.alpha)} * ~") + inner

    def children_energies(self) -> list[Energy]:
        return [self.energy]


class Scaled(Energy):
    """``w * a``: energy multiplied by a positive weight (inverse temperature)."""

    def __init__(self, energy: Energy, weight: float):
        energy = _check_energy(energy, "*")
        super().__init__(energy.event_shape, None, None)
        self.energy = energy
        self.weight = _number(weight)
        self.noise_conditional = energy.noise_conditional
        base, part = split_base(energy)
        self._base = [base]  # a list: the base is already a child of ``energy``
        self.part = part if base is not None else None

    @property
    def domain(self):
        return self.energy.domain

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        base = self._base[0]
        if base is None:
            return self.weight * call_energy(self.energy, x, sigma)
        return call_energy(base, x, sigma) + self.weight * call_energy(self.part, x, sigma)

    def validate(self) -> None:
        self.energy.validate()

    def _formula(self) -> str:
        inner = self.energy.formula()
        if isinstance(self.energy, (Product, Mixture)):
            inner = f"({inner})"
        return f"{_fmt(self.weight)} * {inner}"

    def children_energies(self) -> list[Energy]:
        return [self.energy]


def scale(energy: Energy, weight: float) -> Energy:
    """``weight * energy``; on a negation it scales alpha, on a weight it multiplies."""
    energy = _check_energy(energy, "*")
    weight = _number(weight)
    if isinstance(energy, Negation):
        return Negation(energy.energy, energy.alpha * weight)
    if isinstance(energy, Scaled):
        return Scaled(energy.energy, energy.weight * weight)
    return Scaled(energy, weight)


def _flatten_product(energy: Energy, coef: float, out: list[tuple[Energy, float]]) -> None:
    if isinstance(energy, Product):
        for term, c in zip(energy.terms, energy.coefficients):
            out.append((term, coef * c))
    elif isinstance(energy, Scaled):
        _flatten_product(energy.energy, coef * energy.weight, out)
    elif isinstance(energy, Negation):
        _flatten_product(energy.energy, -coef * energy.alpha, out)
    else:
        out.append((energy, coef))


class Product(Energy):
    """Product of experts: ``E(x) = sum_i c_i * E_i(x)``; ``c_i < 0`` are negations.

    Terms that are ``ConditionalEnergy`` values of one shared network are evaluated in a
    single call of that network on the stacked batch ``(k * B, ...)`` (or one ``energies_all``
    call on ``B`` rows). Terms in Bayes form contribute their likelihood part times ``c_i`` (a negated
    posterior: its complement ``-g log(1 - p)`` times ``|c_i|``), and each distinct shared base is added
    once (``split_base``).

    Args:
        terms: the experts (already flat: no ``Product``/``Scaled``/``Negation`` inside).
        coefficients: one float per term.
    """

    def __init__(self, terms: Sequence[Energy], coefficients: Sequence[float]):
        terms = [_check_energy(t, "&") for t in terms]
        shape = _common_event_shape(terms)
        _check_devices(terms)
        super().__init__(shape, None, None)
        self.terms = nn.ModuleList(terms)
        self.coefficients = [float(c) for c in coefficients]
        self.noise_conditional = any(t.noise_conditional for t in terms)
        self._plan()

    def _plan(self) -> None:
        """Split shared bases off; group conditional parts by shared network; the rest is evaluated alone."""
        bases: dict[int, Energy] = {}
        parts: list[Energy] = []
        for t in self.terms:
            base, part = split_base(t)
            if base is not None:
                bases.setdefault(id(base), base)
            parts.append(part)
        self.parts = nn.ModuleList(parts) if bases else None  # new likelihood parts follow .to()
        self._bases = list(bases.values())  # already children of the terms
        # a negated posterior (Bayes form) is the event "not c": -g log(1 - p(c | x)), weighted by alpha
        self._complement = {i for i, (t, c) in enumerate(zip(parts, self.coefficients))
                            if c < 0 and isinstance(t, ConditionalEnergy) and t.posterior}
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(parts):
            if isinstance(t, ConditionalEnergy) and t.base is None:
                groups.setdefault(id(t.network), []).append(i)
        batched = [idx for idx in groups.values() if len(idx) > 1]
        grouped = {i for idx in batched for i in idx}
        self._singles = [i for i in range(len(parts)) if i not in grouped]
        self._batched = batched
        # per batched row: the factor on its raw network energy (coefficient x guidance; a complement row's
        # -g log(1 - p) is g * complement(raw), so it takes |c| x g) and whether it is a complement
        self._row_factors = [[(abs(self.coefficients[i]) if i in self._complement else self.coefficients[i],
                               parts[i].guidance) for i in idx] for idx in batched]
        self._row_weights = [None if any(callable(g) for _, g in rows) else [c * g for c, g in rows]
                             for rows in self._row_factors]  # floats, unless a guidance depends on the noise
        self._row_complement = [[i in self._complement for i in idx] for idx in batched]

    @property
    def bases(self) -> list[Energy]:
        """The shared bases this product adds once (empty without Bayes-form terms)."""
        return list(self._bases)

    def _part(self, i: int) -> Energy:
        return self.terms[i] if self.parts is None else self.parts[i]

    @property
    def domain(self):
        return _intersect_domains(list(self.terms))

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        total: Tensor | None = None
        for base in self._bases:
            e = call_energy(base, x, sigma)
            total = e if total is None else total + e
        for i in self._singles:
            e = call_energy(self._part(i), x, sigma)
            c = self.coefficients[i]
            if i in self._complement:
                e, c = complement(e, guidance_at(self._part(i).guidance, sigma)), -c
            e = e if c == 1.0 else c * e
            total = e if total is None else total + e
        for group in range(len(self._batched)):
            e = self._batched_energy(group, x, sigma)
            total = e if total is None else total + e
        if total is None:  # pragma: no cover - a Product always has terms
            raise CompositionError("empty product")
        return total

    def _batched_energy(self, group: int, x: Tensor, sigma: Any) -> Tensor:
        idx = self._batched[group]
        first: ConditionalEnergy = self._part(idx[0])
        net, nc = first.network, first.network_noise_conditional
        k, b = len(idx), x.shape[0]
        level = sigma  # (the rows below may repeat it)
        conds = torch.stack([self._part(i).condition for i in idx])  # (k, *cond_shape)
        if callable(getattr(net, "energies_all", None)) and conds.dim() == 1 and not conds.is_floating_point():
            table = net.energies_all(x, sigma) if nc else net.energies_all(x)  # (B, K): one call on B rows
            energies = table[:, conds.long()].t()
        else:
            xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
            conds = conds.repeat_interleave(b, dim=0)  # (k * B, *cond_shape)
            if nc:
                if isinstance(sigma, Tensor) and sigma.dim() > 0:
                    sigma = sigma.repeat(k)
                energies = net(xs, conds, sigma=sigma)
            else:
                energies = net(xs, conds)
            energies = energies.view(k, b)
        if any(self._row_complement[group]):
            energies = torch.stack([complement(e) if neg else e
                                    for e, neg in zip(energies, self._row_complement[group])])
        weights = self._row_weights[group]
        if weights is None:  # a guidance that depends on the noise level: (k, B) or (k, 1) weights
            rows = [torch.as_tensor(c * guidance_at(g, level), dtype=energies.dtype, device=energies.device)
                    for c, g in self._row_factors[group]]
            return (torch.stack([w.expand(energies.shape[1]) for w in rows]) * energies).sum(0)
        if all(w == 1.0 for w in weights):
            return energies.sum(0)
        return (torch.tensor(weights, dtype=energies.dtype, device=energies.device)[:, None] * energies).sum(0)

    def validate(self) -> None:
        if not self._bases and not any(c > 0 for c in self.coefficients):
            raise CompositionError(
                f"the product `{self.formula()}` has no positive expert: its energy is unbounded "
                "below; add at least one expert that is not negated"
            )
        for t in self.terms:
            t.validate()

    def _formula(self) -> str:
        parts = []
        for t, c in zip(self.terms, self.coefficients):
            inner = t.formula()
            if isinstance(t, Mixture):
                inner = f"({inner})"
            if c < 0:
                parts.append(("~" if c == -1 else f"{_fmt(-c)} * ~") + inner)
            else:
                parts.append(inner if c == 1 else f"{_fmt(c)} * {inner}")
        return " & ".join(parts)

    def children_energies(self) -> list[Energy]:
        return list(self.terms)


class _Likelihoods(Product):
    """The likelihood parts of a Bayes-form product (its base split off): valid without a positive term."""

    def validate(self) -> None:
        for t in self.terms:
            t.validate()


def product(*energies: Energy) -> Product:
    """Product of experts of ``energies`` (flattening nested products, weights and negations)."""
    flat: list[tuple[Energy, float]] = []
    for e in energies:
        _flatten_product(_check_energy(e, "&"), 1.0, flat)
    return Product([t for t, _ in flat], [c for _, c in flat])


class Mixture(Energy):
    """Disjunction: ``E(x) = -logsumexp_i(log w_i - E_i(x))``.

    Args:
        components: the experts; a negation may not be a component.
        log_weights: optional log mixture weights (not normalised; default all 0).
    """

    def __init__(self, components: Sequence[Energy], log_weights: Sequence[float] | None = None):
        components = [_check_energy(c, "|") for c in components]
        for c in components:
            if isinstance(c, Negation):
                raise CompositionError(
                    f"{c.formula()} cannot be a component of a mixture: a negation is only valid inside a product"
                )
        shape = _common_event_shape(components)
        _check_devices(components)
        super().__init__(shape, None, None)
        self.components = nn.ModuleList(components)
        lw = [0.0] * len(components) if log_weights is None else [float(v) for v in log_weights]
        if len(lw) != len(components) or not all(math.isfinite(v) for v in lw):
            raise CompositionError(f"need one finite log-weight per component, got {log_weights}")
        self.log_weights = lw
        self.noise_conditional = any(c.noise_conditional for c in components)
        split = [split_base(c) for c in components]
        base = split[0][0]
        shared = base is not None and all(b is base for b, _ in split)
        self._base = [base if shared else None]  # already a child of the components
        self.parts = nn.ModuleList(p for _, p in split) if shared else None

    @property
    def domain(self):
        boxes = [c.domain for c in self.components]
        if any(b is None for b in boxes):
            return None
        low = torch.stack(torch.broadcast_tensors(*[b[0] for b in boxes])).amin(0)
        high = torch.stack(torch.broadcast_tensors(*[b[1] for b in boxes])).amax(0)
        return low, high

    @property
    def base(self) -> Energy | None:
        """The base all components share (evaluated once), or ``None``."""
        return self._base[0]

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        comps = self.components if self.parts is None else self.parts
        neg = torch.stack([lw - call_energy(c, x, sigma) for c, lw in zip(comps, self.log_weights)])
        e = -torch.logsumexp(neg, dim=0)
        return e if self._base[0] is None else e + call_energy(self._base[0], x, sigma)

    def validate(self) -> None:
        for c in self.components:
            c.validate()

    def _formula(self) -> str:
        uniform = all(v == self.log_weights[0] for v in self.log_weights)
        parts = []
        for c, lw in zip(self.components, self.log_weights):
            parts.append(c.formula() if uniform else f"[log w={_fmt(lw)}] {c.formula()}")
        return " | ".join(parts)

    def children_energies(self) -> list[Energy]:
        return list(self.components)


def mixture(
    *energies: Energy, weights: Sequence[float] | None = None, log_weights: Sequence[float] | None = None
) -> Mixture:
    """Mixture (OR) of ``energies``, flattening nested mixtures.

    Args:
        weights: optional positive mixture weights (converted to logs).
        log_weights: optional log-weights (give at most one of the two).

    Example:
        >>> a = composer.as_energy(lambda x: x.pow(2).sum(-1), event_shape=(1,))
        >>> m = composer.mixture(a, a, weights=[1, 3])
    """
    if weights is not None and log_weights is not None:
        raise CompositionError("give weights or log_weights, not both")
    if weights is not None:
        if any(float(w) <= 0 for w in weights):
            raise CompositionError(f"mixture weights must be positive, got {list(weights)}")
        log_weights = [math.log(float(w)) for w in weights]
    lws = [0.0] * len(energies) if log_weights is None else list(log_weights)
    if len(lws) != len(energies):
        raise CompositionError(f"need one weight per component: {len(energies)} components, {len(lws)} weights")
    flat, flat_lw = [], []
    for e, lw in zip(energies, lws):
        e = _check_energy(e, "|")
        if isinstance(e, Mixture):
            flat.extend(e.components)
            flat_lw.extend(v + float(lw) for v in e.log_weights)
        else:
            flat.append(e)
            flat_lw.append(float(lw))
    return Mixture(flat, flat_lw)


def calibrate(energy: Energy, n: int = 4000, seed: int = 0, **sample_options: Any) -> Energy:
    """A copy of ``energy`` whose mixtures weight each branch by its normaliser (``--calibrate``).

    ``a | b`` is ``-log(exp(-E_a) + exp(-E_b))``: branch ``a`` holds the share ``Z_a / (Z_a + Z_b)`` of
    the mass, ``Z_a = ∫ exp(-E_a)``, so a narrow branch gets few samples. Calibrated, each mixture's
    log-weights become ``log w_i - log Z_i`` (``log Z_i`` estimated by ``sampler="smc"``), so branch ``i``
    holds the share ``w_i / sum_j w_j`` (equal shares by default): ``p = sum_i w_i p_i``, the mixture of the
    branches' normalised densities. Each branch must be a proper density on its own (not a lone
    half-space) and not noise-conditional.

    Args:
        energy: any composition; its mixture nodes (at any depth) are calibrated, the original is unchanged.
        n, seed: particles and seed of each branch's SMC run.
        sample_options: further ``composer.sample`` arguments of those runs (e.g. ``device``).

    Returns:
        The calibrated copy; each calibrated mixture has ``log_z`` (the branches' estimates) and
        ``log_z_se`` (their standard errors).
    """
    import copy

    from composer.sampling import sample

    out = copy.deepcopy(energy)
    stack = [out]
    while stack:
        node = stack.pop()
        stack.extend(node.children_energies())
        if not isinstance(node, Mixture):
            continue
        estimates = []
        for i, c in enumerate(node.components):
            if c.noise_conditional:
                raise CompositionError(f"cannot calibrate {node.formula()}: {c.formula()} is noise-conditional "
                                       "(SMC on a noise ladder gives only ratios of normalisers)")
            r = sample(c, n=n, sampler="smc", seed=seed + i, steps=0, recipe=False, **sample_options)
            if not math.isfinite(r.log_z):
                raise CompositionError(f"cannot calibrate {node.formula()}: log Z of {c.formula()} is not finite")
            estimates.append((r.log_z, r.log_z_se))
        node.log_weights = [lw - z for lw, (z, _) in zip(node.log_weights, estimates)]
        node.log_z = [z for z, _ in estimates]
        node.log_z_se = [se for _, se in estimates]
    return out


class Scoped(Energy):
    """``a.on(view)``: the expert sees ``view(x)`` only.

    Args:
        energy: the expert, defined on ``view(x)``.
        view: a differentiable callable ``(B, *event_shape) -> (B, *energy.event_shape)``.
        event_shape: the outer event shape, or ``None`` to take it from sibling experts.
    """

    def __init__(self, energy: Energy, view: Callable[[Tensor], Tensor], event_shape: Sequence[int] | None = None):
        energy = _check_energy(energy, ".on")
        if not callable(view):
            raise CompositionError(f"a view must be callable, got {type(view).__name__}")
        super().__init__(event_shape, None, None)
        self.energy = energy
        self.view = view  # an nn.Module view is registered as a child and moves with .to()
        self.noise_conditional = energy.noise_conditional

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        return call_energy(self.energy, self.view(x), sigma)

    def validate(self) -> None:
        self.energy.validate()

    def _formula(self) -> str:
        inner = self.energy.formula()
        if isinstance(self.energy, (Product, Mixture, Scaled, Negation)):
            inner = f"({inner})"
        name = getattr(self.view, "__name__", None) or repr(self.view)
        return f"{inner}.on({name})"

    def children_energies(self) -> list[Energy]:
        return [self.energy]


def describe(energy: Energy, indent: str = "") -> str:
    """A multi-line tree of ``energy`` with weights, as printed by ``composer show``."""
    lines = [f"{indent}{_node_title(energy)}"]
    shared: list[Energy] = []
    if isinstance(energy, Product):
        shared = energy.bases
    elif isinstance(energy, Mixture) and energy.base is not None:
        shared = [energy.base]
    elif isinstance(energy, Scaled) and energy.part is not None:
        shared = [energy._base[0]]
    for b in shared:
        lines.append(f"{indent}  - [shared base, counted once] {b.formula()}")
    if isinstance(energy, Product):
        for t, c in zip(energy.terms, energy.coefficients):
            tag = f"weight {_fmt(c)}" if c > 0 else f"NOT, alpha {_fmt(-c)}"
            sub = describe(t, indent + "    ").lstrip()
            lines.append(f"{indent}  - [{tag}] {sub}")
    elif isinstance(energy, Mixture):
        for c, lw in zip(energy.components, energy.log_weights):
            sub = describe(c, indent + "    ").lstrip()
            lines.append(f"{indent}  - [log-weight {_fmt(lw)}] {sub}")
    else:
        for child in energy.children_energies():
            lines.append(describe(child, indent + "  "))
    return "\n".join(lines)


def _node_title(energy: Energy) -> str:
    shape = "any" if energy.event_shape is None else tuple(energy.event_shape)
    if isinstance(energy, Product):
        return f"AND (product of {len(energy.terms)} experts), event shape {shape}"
    if isinstance(energy, Mixture):
        return f"OR (mixture of {len(energy.components)}), event shape {shape}"
    if isinstance(energy, Scaled):
        return f"weight {_fmt(energy.weight)}"
    if isinstance(energy, Negation):
        return f"NOT (alpha {_fmt(energy.alpha)}): invalid outside a product"
    if isinstance(energy, Scoped):
        name = getattr(energy.view, "__name__", None) or repr(energy.view)
        return f"scope {name}"
    if isinstance(energy, ConditionalEnergy) and energy.base is not None:
        return f"{energy.formula()}  [event shape {shape}; {energy.base.formula()} + likelihood]"
    return f"{energy.formula()}  [event shape {shape}]"
