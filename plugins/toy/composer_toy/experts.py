"""Analytic experts with exact energies, for tests, examples and 2-D pictures.

Every expert maps ``x`` of shape ``(B, D)`` to energies of shape ``(B,)``, is
differentiable, takes its dimension ``D`` from its parameters, and keeps its parameters
as buffers (``.to(device_or_dtype)`` moves them). ``p(x) ∝ exp(-E(x))``. Bad parameters
raise ``ToyParameterError`` (a ``composer.CompositionError`` and a ``ValueError``) naming
the parameter.

Example:
    >>> import torch
    >>> from composer_toy import Gaussian, Halfspace
    >>> e = Gaussian(mean=[0.0, 0.0], std=1.0) & Halfspace(normal=[1.0, 0.0], offset=0.5)
    >>> e(torch.zeros(3, 2)).shape
    torch.Size([3])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from composer_toy._params import (
    ToyEnergy,
    ToyParameterError,
    broadcast_vectors,
    int_param,
    positive,
    scalar_param,
    tensor_param,
)

Vector = float | Sequence[float] | Tensor
Matrix = Sequence[Sequence[float]] | Tensor
_VEC = "a number or a list of numbers"
_MAT = "a list of lists of numbers (one row each)"


class Gaussian(ToyEnergy):
    """Diagonal Gaussian: ``E(x) = 0.5 * sum_i ((x_i - mean_i) / std_i)^2`` (no normalising constant).

    Args:
        mean: ``(D,)`` list, or a number (then ``D`` comes from ``std``, or is 1).
        std: positive number or ``(D,)`` list of per-dimension standard deviations.
    """

    def __init__(self, mean: Vector, std: Vector = 1.0):
        name = "toy.gaussian"
        m = tensor_param(name, "mean", mean, (0, 1), _VEC)
        s = positive(name, "std", tensor_param(name, "std", std, (0, 1), _VEC))
        dim, v = broadcast_vectors(name, {"mean": m, "std": s})
        super().__init__(name, dim, {"mean": m, "std": s})
        self.register_buffer("mean", v["mean"].to(m.dtype))
        self.register_buffer("std", v["std"].to(m.dtype))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return 0.5 * ((x - self.mean) / self.std).pow(2).sum(-1)


class GaussianMixture(ToyEnergy):
    """Normalised isotropic Gaussian mixture: ``E(x) = -log sum_k w_k N(x; m_k, s_k^2 I)``.

    ``E`` is exactly the negative log-density (``exp(-E)`` integrates to 1):
    ``E(x) = -logsumexp_k(log w_k - ||x - m_k||^2 / (2 s_k^2) - (D/2) log(2 pi s_k^2))``,
    with the weights normalised to sum to 1.

    Args:
        means: ``(K, D)`` list of lists, one mean per component.
        std: positive number, or ``(K,)`` list (one isotropic std per component).
        weights: ``(K,)`` positive weights (normalised here); default uniform.
    """

    multimodal = True  # composer.sample picks a sampler that gets the components' weights right (smc)

    def __init__(self, means: Matrix, std: Vector = 1.0, weights: Vector | None = None):
        name = "toy.mixture"
        m = tensor_param(name, "means", means, (2,), _MAT)
        k, dim = m.shape
        s = positive(name, "std", tensor_param(name, "std", std, (0, 1), _VEC))
        w = torch.ones(k, dtype=m.dtype) if weights is None else tensor_param(name, "weights", weights, (0, 1), _VEC)
        positive(name, "weights", w)
        for pname, t in (("std", s), ("weights", w)):
            if t.dim() == 1 and t.shape[0] != k:
                raise ToyParameterError(f"{name}: {pname} has {t.shape[0]} entries but there are {k} means")
        shown: dict[str, Any] = {"means": m, "std": s}
        if weights is not None:
            shown["weights"] = w
        super().__init__(name, dim, shown)
        w = w.expand(k)
        self.register_buffer("means", m)
        self.register_buffer("std", s.expand(k).clone().to(m.dtype))
        self.register_buffer("log_weights", (w / w.sum()).log().to(m.dtype))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        sq = (x[:, None, :] - self.means).pow(2).sum(-1)  # (B, K)
        var = self.std.pow(2)
        log_norm = 0.5 * self.dim * torch.log(2 * math.pi * var)  # (K,)
        return -torch.logsumexp(self.log_weights - 0.5 * sq / var - log_norm, dim=-1)


class Ring(ToyEnergy):
    """Ring (a sphere in ``D`` dimensions): ``E(x) = (||x|| - radius)^2 / (2 width^2)``.

    Args:
        radius: non-negative radius of the ring, centred at the origin.
        width: positive thickness (standard deviation across the ring).
        dim: dimension ``D``.
    """

    #: sampled with MALA by default: unadjusted Langevin at the default step widens a thin ring
    sampling_recipe = {"sampler": "mala"}

    def __init__(self, radius: float = 1.0, width: float = 0.1, dim: int = 2):
        name = "toy.ring"
        r = scalar_param(name, "radius", radius, allow_zero=True)
        w = scalar_param(name, "width", width)
        dim = int_param(name, "dim", dim)
        super().__init__(name, dim, {"radius": r, "width": w, "dim": dim})
        self.register_buffer("radius", r)
        self.register_buffer("width", w)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return (torch.linalg.vector_norm(x, dim=-1) - self.radius).pow(2) / (2 * self.width.pow(2))


class Moons(ToyEnergy):
    """Two moons (2-D): ``E(x) = -log(exp(-E_1(x)) + exp(-E_2(x)))``, ``E_k = 0`` exactly on moon ``k``.

    Moon ``k`` is a unit half-circle with centre ``c_k`` on the side ``o_k (x_2 - c_k2) >= 0``:
    the upper moon ``c_1 = (0, 0), o_1 = +1`` and the lower moon ``c_2 = (1, 0.5), o_2 = -1``
    (the curve of ``sklearn.datasets.make_moons``). With ``r_k = ||x - c_k||`` and
    ``s_k = o_k (x_2 - c_k2)``::

        E_k(x) = ((r_k - 1)^2 + min(s_k, 0)^2) / (2 width^2)
        E(x)   = -log(exp(-E_1(x)) + exp(-E_2(x)))

    ``E`` is the mixture ``moon_1 | moon_2``; its low set is the classic two-moons curve, and it
    is continuously differentiable except at the two centres.

    Args:
        width: positive thickness of the moons.
    """

    multimodal = True

    def __init__(self, width: float = 0.1):
        name = "toy.moons"
        w = scalar_param(name, "width", width)
        super().__init__(name, 2, {"width": w})
        self.register_buffer("width", w)
        self.register_buffer("centers", torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=w.dtype))
        self.register_buffer("orientation", torch.tensor([1.0, -1.0], dtype=w.dtype))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        d = x[:, None, :] - self.centers  # (B, 2 moons, 2)
        r = torch.linalg.vector_norm(d, dim=-1)
        s = self.orientation * d[..., 1]
        per_moon = ((r - 1).pow(2) + F.relu(-s).pow(2)) / (2 * self.width.pow(2))  # (B, 2)
        return -torch.logsumexp(-per_moon, dim=-1)


class Box(ToyEnergy):
    """Soft box constraint: ``E(x) = (sharpness/2) * sum_i (max(low_i - x_i, 0)^2 + max(x_i - high_i, 0)^2)``.

    Zero inside ``[low, high]``; outside, ``k/2`` times the squared distance to the box
    (Gaussian tails of standard deviation ``1/sqrt(k)``). Improper alone: use it in a
    product. It does not set ``domain``: a domain makes the sampler clamp hard to the box,
    which would change the distribution this soft constraint defines (and clip every
    other expert of a product to the box).

    Args:
        low: ``(D,)`` lower corner (or a number, broadcast to ``high``'s length).
        high: ``(D,)`` upper corner, ``high > low``.
        sharpness: positive stiffness ``k`` of the walls.
    """

    def __init__(self, low: Vector, high: Vector, sharpness: float = 100.0):
        name = "toy.box"
        lo = tensor_param(name, "low", low, (0, 1), _VEC)
        hi = tensor_param(name, "high", high, (0, 1), _VEC)
        k = scalar_param(name, "sharpness", sharpness)
        dim, v = broadcast_vectors(name, {"low": lo, "high": hi})
        if (v["low"] >= v["high"]).any():
            raise ToyParameterError(f"{name}: low must be < high in every dimension, got low={lo.tolist()}, "
                                    f"high={hi.tolist()}")
        super().__init__(name, dim, {"low": lo, "high": hi, "sharpness": k})
        self.register_buffer("low", v["low"])
        self.register_buffer("high", v["high"].to(v["low"].dtype))
        self.register_buffer("sharpness", k)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        outside = F.relu(self.low - x).pow(2) + F.relu(x - self.high).pow(2)
        return 0.5 * self.sharpness * outside.sum(-1)


class Halfspace(ToyEnergy):
    """Soft half-space constraint ``normal · x >= offset``: ``E(x) = softplus(sharpness * (offset - normal · x))``.

    ``softplus(z) = log(1 + exp(z))``, so ``exp(-E(x)) = sigmoid(k * (normal · x - offset))``: a
    logistic soft indicator of the half-space (``E -> 0`` deep inside, ``E = log 2`` on the
    boundary, ``E ~ k * (offset - normal · x)`` outside). Improper alone: use it in a product.

    Args:
        normal: ``(D,)`` non-zero normal vector (not normalised).
        offset: the threshold ``b`` of ``normal · x >= b``.
        sharpness: positive slope ``k``.
    """

    def __init__(self, normal: Vector, offset: float = 0.0, sharpness: float = 10.0):
        name = "toy.halfspace"
        n = tensor_param(name, "normal", normal, (1,), "a list of numbers")
        if not n.abs().sum() > 0:
            raise ToyParameterError(f"{name}: normal must be non-zero, got {n.tolist()}")
        b = tensor_param(name, "offset", offset, (0,), "a number")
        k = scalar_param(name, "sharpness", sharpness)
        super().__init__(name, n.shape[0], {"normal": n, "offset": b, "sharpness": k})
        self.register_buffer("normal", n)
        self.register_buffer("offset", b.to(n.dtype))
        self.register_buffer("sharpness", k.to(n.dtype))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        z = self.sharpness * (self.offset - x @ self.normal)
        return torch.logaddexp(torch.zeros_like(z), z)


class StudentT(ToyEnergy):
    """Product of Student-t experts (Teh et al. 2003): ``E(x) = sum_j alpha_j log(1 + (w_j · x)^2 / nu)``.

    With the default ``nu = 2`` this is the PoT energy of Teh, Welling, Osindero & Hinton
    (2003), ``sum_j alpha_j log(1 + (w_j · x)^2 / 2)``; with ``alpha_j = (nu + 1) / 2`` each
    factor is a Student-t density with ``nu`` degrees of freedom in ``w_j · x``. Proper when
    the filters span ``R^D`` and every ``alpha_j > 1/2``.

    Args:
        filters: ``(J, D)`` list of lists, one filter ``w_j`` per row.
        alpha: positive number or ``(J,)`` list of exponents.
        nu: positive scale ``nu``.
    """

    def __init__(self, filters: Matrix, alpha: Vector = 1.0, nu: float = 2.0):
        name = "toy.student_t"
        w = tensor_param(name, "filters", filters, (2,), _MAT)
        a = positive(name, "alpha", tensor_param(name, "alpha", alpha, (0, 1), _VEC))
        if a.dim() == 1 and a.shape[0] != w.shape[0]:
            raise ToyParameterError(f"{name}: alpha has {a.shape[0]} entries but there are {w.shape[0]} filters")
        nu_t = scalar_param(name, "nu", nu)
        super().__init__(name, w.shape[1], {"filters": w, "alpha": a, "nu": nu_t})
        self.register_buffer("filters", w)
        self.register_buffer("alpha", a.expand(w.shape[0]).clone().to(w.dtype))
        self.register_buffer("nu", nu_t.to(w.dtype))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        proj = x @ self.filters.T  # (B, J)
        return (self.alpha * torch.log1p(proj.pow(2) / self.nu)).sum(-1)


#: registered name -> factory, in the order ``composer list`` shows them
EXPERTS = {
    "toy.gaussian": Gaussian,
    "toy.mixture": GaussianMixture,
    "toy.ring": Ring,
    "toy.moons": Moons,
    "toy.box": Box,
    "toy.halfspace": Halfspace,
    "toy.student_t": StudentT,
}
