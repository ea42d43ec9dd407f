"""The ``Energy`` base class: a module mapping a batch ``x`` of shape ``(B, *event_shape)`` to ``(B,)``.

Low energy means likely: ``p(x) ∝ exp(-E(x))``. Energies compose with operators (see
``composer.algebra``)::

    >>> import torch, composer
    >>> a = composer.as_energy(lambda x: 0.5 * (x ** 2).sum(-1), event_shape=(2,), label="a")
    >>> b = composer.as_energy(lambda x: 0.5 * ((x - 2) ** 2).sum(-1), event_shape=(2,), label="b")
    >>> (a & b)(torch.zeros(1, 2))
    tensor([4.])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from composer.errors import CompositionError

DomainLike = tuple[Any, Any] | None


class Energy(nn.Module):
    """Base class of every expert and every composition node.

    Subclasses implement ``forward(x) -> Tensor[B]``; noise-conditional experts set
    ``noise_conditional = True`` and implement ``forward(x, sigma=None)``, where ``sigma``
    is a float or a ``(B,)`` tensor given by the sampler.

    Args:
        event_shape: shape of one sample (``x.shape[1:]``); ``None`` accepts any shape.
        domain: optional box ``(low, high)``, scalars or tensors broadcastable to
            ``event_shape``; used by samplers for initialisation and clamping.
        label: name used in ``repr`` and in the composition formula.
    """

    noise_conditional: bool = False

    def __init__(
        self,
        event_shape: Sequence[int] | None = None,
        domain: DomainLike = None,
        label: str | None = None,
    ):
        super().__init__()
        self.event_shape = torch.Size(event_shape) if event_shape is not None else None
        self.label = label or type(self).__name__
        self.display_name: str | None = None
        self._set_domain(domain)

    # -- domain ---------------------------------------------------------------------------
    def _set_domain(self, domain: DomainLike) -> None:
        if domain is None:
            self.register_buffer("domain_low", None, persistent=False)
            self.register_buffer("domain_high", None, persistent=False)
            return
        low, high = (torch.as_tensor(v, dtype=torch.get_default_dtype()) for v in domain)
        if torch.any(low >= high):
            raise CompositionError(f"{self.label}: domain low must be < high, got {domain}")
        self.register_buffer("domain_low", low, persistent=False)
        self.register_buffer("domain_high", high, persistent=False)

    @property
    def domain(self) -> tuple[Tensor, Tensor] | None:
        """The box ``(low, high)`` the samples live in, or ``None`` (unbounded)."""
        if self.domain_low is None:
            return None
        return self.domain_low, self.domain_high

    # -- evaluation -----------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x) -> (B,)")

    def validate(self) -> None:
        """Raise ``CompositionError`` if this energy cannot be sampled (overridden by nodes)."""

    def formula(self) -> str:
        """The energy as an expression of the composition language.

        A registered expert shows its registered name (``display_name``); nodes show the
        formula of their children.
        """
        return self.display_name or self._formula()

    def _formula(self) -> str:
        return self.label

    def children_energies(self) -> list[Energy]:
        """Direct sub-energies (empty for a leaf expert)."""
        return []

    def walk(self) -> Iterator[Energy]:
        """This node and every node below it, depth first, children left to right."""
        stack: list[Energy] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children_energies()))

    def __repr__(self) -> str:
        return self.formula()

    # -- composition operators (implemented in composer.algebra) ----------------------------
    def __and__(self, other: Energy) -> Energy:
        from composer.algebra import product

        return product(self, other)

    def __or__(self, other: Energy) -> Energy:
        from composer.algebra import mixture

        return mixture(self, other)

    def __invert__(self) -> Energy:
        from composer.algebra import Negation

        return Negation(self)

    def __mul__(self, weight: float) -> Energy:
        from composer.algebra import scale

        return scale(self, weight)

    __rmul__ = __mul__

    def on(self, view: Callable[[Tensor], Tensor], event_shape: Sequence[int] | None = None) -> Energy:
        """Scope: the expert sees ``view(x)`` (a slice, crop, mask, channel subset...).

        Args:
            view: differentiable callable ``(B, *event_shape) -> (B, *self.event_shape)``.
            event_shape: the shape of the *outer* ``x``; ``None`` takes it from the
                other experts it is composed with.
        """
        from composer.algebra import Scoped

        return Scoped(self, view, event_shape)


def call_energy(energy: nn.Module, x: Tensor, sigma: Any = None) -> Tensor:
    """Evaluate ``energy`` on ``x``, passing ``sigma`` only to noise-conditional energies.

    Raises:
        CompositionError: the result is not one energy per input (shape ``(B,)``); a scalar would
            otherwise be broadcast silently inside a product. (A shape check: no synchronisation.)
    """
    if sigma is not None and getattr(energy, "noise_conditional", False):
        e = energy(x, sigma=sigma)
    else:
        e = energy(x)
    if not isinstance(e, Tensor) or e.shape != x.shape[:1]:
        got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
        name = energy.formula() if hasattr(energy, "formula") else type(energy).__name__
        raise CompositionError(f"expert {name} returned energies of shape {got} for {x.shape[0]} inputs; an "
                               f"expert must return one energy per input, shape ({x.shape[0]},)")
    return e


class FunctionEnergy(Energy):
    """An ``Energy`` around a plain callable or ``nn.Module`` returning ``(B,)``."""

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        event_shape: Sequence[int] | None,
        domain: DomainLike = None,
        label: str | None = None,
        noise_conditional: bool = False,
    ):
        name = label or getattr(fn, "__name__", None) or type(fn).__name__
        super().__init__(event_shape, domain, name if name != "<lambda>" else "energy")
        self.fn = fn  # an nn.Module is registered as a child, so .to() moves it
        self.noise_conditional = noise_conditional

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        e = self.fn(x, sigma=sigma) if self.noise_conditional else self.fn(x)
        if not isinstance(e, Tensor) or e.shape != x.shape[:1]:  # host-side shape check: no device sync
            got = f"energies of shape {tuple(e.shape)}" if isinstance(e, Tensor) else f"a {type(e).__name__}"
            hint = "; squeeze it, e.g. lambda x: net(x).squeeze(-1)" if got.endswith(f"({x.shape[0]}, 1)") else ""
            raise CompositionError(
                f"`{self.label}` returned {got}; expected ({x.shape[0]},), one per row of x {tuple(x.shape)}{hint}"
            )
        return e


def as_energy(
    fn: Callable[[Tensor], Tensor] | Energy,
    event_shape: Sequence[int] | None = None,
    domain: DomainLike = None,
    label: str | None = None,
    noise_conditional: bool = False,
) -> Energy:
    """Wrap a callable or module ``fn(x: (B, *event_shape)) -> (B,)`` as an ``Energy``.

    An ``Energy`` is returned unchanged. The result checks the shape of what ``fn`` returns on every
    call (a host-side comparison): ``(B, 1)`` or a scalar is a ``CompositionError`` naming the shape at
    the first evaluation, not a broadcasting error deep inside the sampler.

    Example:
        >>> e = as_energy(lambda x: (x ** 2).sum(-1), event_shape=(3,))
        >>> e(torch.ones(4, 3)).shape
        torch.Size([4])
    """
    if isinstance(fn, Energy):
        return fn
    if not callable(fn):
        raise CompositionError(f"as_energy expects a callable or nn.Module, got {type(fn).__name__}")
    return FunctionEnergy(fn, event_shape, domain, label, noise_conditional)


class ConditionalEnergy(Energy):
    """One value of a concept family: a shared network evaluated at a fixed condition.

    ``network(x: (B, *event_shape), cond: (B, *cond_shape)[, sigma]) -> (B,)``. Products of
    several ``ConditionalEnergy`` sharing one ``network`` are evaluated in one batched call
    (see ``composer.algebra.Product``); a network that also has ``energies_all(x[, sigma]) -> (B, K)``
    (integer conditions) serves them all from one call on ``B`` rows.

    **Bayes form.** With a ``base`` energy, the value is ``E(x | c) = E_base(x) - g log p(c | x)``: the
    base models ``p(x)`` and the network gives the normalised posterior ``network(x, c) = -log p(c | x)``
    over the family's values (e.g. a noise-conditional classifier); ``g`` is the guidance scale (a
    sharpened posterior ``p^g``, as in classifier guidance). Compositions count a shared base once:
    values ``c_i`` sharing one base compose as ``p(x) prod_i p(c_i | x)^{g w_i}``, so ``a & b`` is the
    exact conditional ``p(x | a, b)`` (``g = 1``) when the concepts are independent given ``x`` (as any
    attributes of ``x`` are); weights act on the likelihood parts; and ``a & alpha * ~b`` conditions on
    the event *not b*: ``p(x) p(a | x) (1 - p(b | x))^{g alpha}``, bounded, unlike dividing by ``p(b | x)``.

    Args:
        network: the shared conditional network.
        condition: the condition of this value, e.g. ``torch.tensor(2)`` (an index) or an
            embedding vector; stored as a buffer so it follows ``.to(device)``.
        event_shape, domain, label: as in ``Energy``.
        noise_conditional: the network takes ``sigma``.
        base: the shared base energy (Bayes form), or ``None``.
        guidance: ``g``, the weight of the likelihood part in Bayes form (must be positive), or a
            ``NoiseGuidance`` (a weight that depends on the noise level).
    """

    def __init__(
        self,
        network: nn.Module,
        condition: Tensor,
        event_shape: Sequence[int] | None,
        domain: DomainLike = None,
        label: str | None = None,
        noise_conditional: bool = False,
        base: Energy | None = None,
        guidance: float = 1.0,
        posterior: bool | None = None,
    ):
        super().__init__(event_shape, domain, label)
        if base is not None and not isinstance(base, Energy):
            raise CompositionError(f"{self.label}: base must be an Energy, got {type(base).__name__}")
        if not (callable(guidance) or (isinstance(guidance, (int, float)) and guidance > 0)):
            raise CompositionError(f"{self.label}: guidance must be a positive number or a NoiseGuidance, "
                                   f"got {guidance!r}")
        self.network = network
        self.network_noise_conditional = noise_conditional
        self.base = base
        self.guidance = guidance if callable(guidance) else float(guidance)
        self.posterior = base is not None if posterior is None else bool(posterior)
        """The network part is a normalised ``-log p(c | x)`` (Bayes form): ``~`` takes its complement."""
        self.noise_conditional = noise_conditional or bool(base is not None and base.noise_conditional)
        self.register_buffer("condition", torch.as_tensor(condition), persistent=False)

    def likelihood(self, x: Tensor, sigma: Any = None) -> Tensor:
        """The network's part ``g * network(x, c)``: ``(B,)`` (all of the energy when there is no base)."""
        cond = self.condition.expand(x.shape[0], *self.condition.shape)
        if self.network_noise_conditional:
            e = self.network(x, cond, sigma=sigma)
        else:
            e = self.network(x, cond)
        g = guidance_at(self.guidance, sigma)
        return e if (isinstance(g, float) and g == 1.0) else g * e

    def forward(self, x: Tensor, sigma: Any = None) -> Tensor:
        e = self.likelihood(x, sigma)
        return e if self.base is None else e + call_energy(self.base, x, sigma)

    def without_base(self) -> ConditionalEnergy:
        """A new value on the same network and condition, without the base (same label and name)."""
        part = ConditionalEnergy(self.network, self.condition, self.event_shape, self.domain, self.label,
                                 self.network_noise_conditional, guidance=self.guidance, posterior=self.posterior)
        part.display_name = self.display_name
        return part


def stacked_values(call: Callable[..., Tensor], x: Tensor, num_values: int, sigma: Tensor) -> Tensor:
    """Energies of every value from one call on the ``K * B`` stacked rows: ``(B, *event), (B,) -> (B, K)``.

    ``call(x, cond, sigma=...)`` is a conditional network (or its DDP wrapper); row ``c * B + i`` is image
    ``i`` at value ``c``. For networks without ``energies_all``.
    """
    b = x.shape[0]
    cond = torch.arange(num_values, device=x.device).repeat_interleave(b)
    e = call(x.repeat(num_values, *([1] * (x.dim() - 1))), cond, sigma=sigma.repeat(num_values))
    return e.view(num_values, b).t()


class NoiseGuidance:
    """A guidance scale that depends on the sampler's noise level: ``value`` below ``sigma_max``, ``above`` at
    and above it (and ``value`` without a noise level).

    Classifier guidance at high noise levels favours the images whose concept is most legible under heavy
    noise (in the shapes world: large objects), which skews every attribute the composition leaves free;
    guiding only once the noise is low leaves those attributes to the prior::

        >>> g = NoiseGuidance(10.0, sigma_max=1.0)
        >>> g(0.5), g(3.0), g(torch.tensor([0.5, 3.0])).tolist()
        (10.0, 1.0, [10.0, 1.0])
    """

    def __init__(self, value: float, sigma_max: float, above: float = 1.0):
        if not all(isinstance(v, (int, float)) and v > 0 for v in (value, sigma_max, above)):
            raise CompositionError(f"NoiseGuidance needs positive numbers, got {value!r}, {sigma_max!r}, {above!r}")
        self.value, self.sigma_max, self.above = float(value), float(sigma_max), float(above)

    def __call__(self, sigma: Any) -> float | Tensor:
        if sigma is None:
            return self.value
        if isinstance(sigma, Tensor):
            return torch.where(sigma < self.sigma_max, self.value, self.above).to(sigma.dtype)
        return self.value if float(sigma) < self.sigma_max else self.above

    def __repr__(self) -> str:
        return f"NoiseGuidance({self.value:g} below sigma {self.sigma_max:g}, {self.above:g} above)"


def guidance_at(guidance: float | Any, sigma: Any) -> float | Tensor:
    """The guidance scale at noise level ``sigma``: a number as is, a ``NoiseGuidance`` evaluated."""
    return guidance(sigma) if callable(guidance) else guidance


def complement(energy: Tensor, guidance: float | Tensor = 1.0) -> Tensor:
    """``-g log(1 - p)`` from ``energy = -g log p`` (``(B,)``): the energy of the event *not c*.

    Clamped at ``p <= 1 - 1e-6`` so that a chain sure of ``c`` gets a large, finite energy and gradient.
    """
    u = (energy / guidance).clamp_min(1e-6)  # -log p >= 1e-6
    return -guidance * torch.log(-torch.expm1(-u))


def device_of(module: nn.Module) -> torch.device | None:
    """The device of the first parameter or buffer of ``module``, or ``None`` if it has none."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None
