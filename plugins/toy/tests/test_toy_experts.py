"""Exact energies, gradients, batching, dtype/device moves and parameter errors of the toy experts.

Exact values are computed by hand (written out with ``math``) at chosen points; parameters
are dyadic so float32 holds them exactly, and the float32 comparisons use a relative
tolerance of 1e-6 (a few float32 roundings of O(1) numbers).
"""

from __future__ import annotations

import math

import pytest
import torch
from composer_toy import Box, Gaussian, GaussianMixture, Halfspace, Moons, Ring, StudentT, ToyParameterError

import composer

F32 = dict(rtol=1e-6, atol=1e-6)


def energies(expert, points):
    return expert(torch.tensor(points, dtype=torch.float32))


def test_gaussian_exact():
    e = Gaussian(mean=[1.0, -2.0], std=[2.0, 0.5])
    # z = ((3-1)/2, (-1+2)/0.5) = (1, 2) -> 2.5; z = (-0.5, 4) -> 8.125
    torch.testing.assert_close(energies(e, [[3, -1], [1, -2], [0, 0]]), torch.tensor([2.5, 0.0, 8.125]), **F32)
    scalar_mean = Gaussian(mean=1.0, std=[1.0, 2.0])  # D from std
    assert scalar_mean.event_shape == (2,)
    torch.testing.assert_close(energies(scalar_mean, [[1, 3]]), torch.tensor([0.5]), **F32)
    assert Gaussian(mean=0.5).event_shape == (1,)


def test_mixture_exact_and_normalised():
    one = GaussianMixture(means=[[1.0, 2.0]])
    torch.testing.assert_close(energies(one, [[1, 2], [2, 2]]), torch.tensor([math.log(2 * math.pi),
                                                                                 0.5 + math.log(2 * math.pi)]), **F32)
    two = GaussianMixture(means=[[0.0, 0.0], [4.0, 0.0]], std=[1.0, 2.0], weights=[1.0, 3.0])
    # at 0: 0.25 N(0; 0, I) + 0.75 N(0; (4,0), 4I) = 0.25/(2pi) + 0.75 exp(-16/8)/(8pi)
    p0 = 0.25 / (2 * math.pi) + 0.75 * math.exp(-2.0) / (8 * math.pi)
    p1 = 0.25 * math.exp(-8.0) / (2 * math.pi) + 0.75 / (8 * math.pi)
    torch.testing.assert_close(energies(two, [[0, 0], [4, 0]]), torch.tensor([-math.log(p0), -math.log(p1)]), **F32)
    # exp(-E) integrates to 1 (1-D, trapezoid on [-12, 16] with step 1e-3: error far below 1e-6)
    m = GaussianMixture(means=[[-1.0], [2.0]], std=[0.5, 1.5], weights=[2.0, 1.0]).double()
    grid = torch.arange(-12.0, 16.0, 1e-3, dtype=torch.float64)[:, None]
    assert torch.trapezoid(torch.exp(-m(grid)), grid[:, 0]).item() == pytest.approx(1.0, abs=1e-6)


def test_ring_exact():
    e = Ring(radius=2.0, width=0.5, dim=3)
    # ||(0,3,4)|| = 5 -> 3^2 / (2 * 0.25) = 18; origin -> 4 / 0.5 = 8; on the ring -> 0
    torch.testing.assert_close(energies(e, [[0, 3, 4], [0, 0, 0], [0, 2, 0]]), torch.tensor([18.0, 8.0, 0.0]), **F32)
    x = torch.zeros(1, 3, requires_grad=True)
    e(x).sum().backward()
    assert torch.isfinite(x.grad).all()  # the norm's gradient at 0 is taken as 0, not NaN


def test_moons_exact():
    e = Moons(width=1.0)  # 2 width^2 = 2

    def total(e1: float, e2: float) -> float:
        return -math.log(math.exp(-e1) + math.exp(-e2))

    r2 = math.hypot(1.0, 0.5)  # distance of (0, 1) from the lower centre (1, 0.5)
    expected = [
        total(0.0, ((r2 - 1) ** 2 + 0.25) / 2),  # (0, 1): top of the upper moon; 0.5 above the lower one's side
        total(((r2 - 1) ** 2 + 0.25) / 2, 0.0),  # (1, -0.5): bottom of the lower moon (the mirror image)
        total(1.0 / 2, ((math.hypot(1, 1.5) - 1) ** 2) / 2),  # (0, -1): r_1 = 1 but 1 below the upper side
    ]
    torch.testing.assert_close(energies(e, [[0, 1], [1, -0.5], [0, -1]]), torch.tensor(expected), **F32)


def test_moons_low_set_is_the_two_moons_curve():
    e = Moons(width=0.1)
    t = torch.linspace(0, math.pi, 1000)
    curve = torch.cat([torch.stack([t.cos(), t.sin()], 1), torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)])
    on = e(curve)
    assert (on <= 1e-6).all() and (on > -math.log(2)).all()  # E_k = 0 on moon k, so E in (-log 2, 0]
    axis = torch.arange(-2.0, 3.0, 0.05)
    grid = torch.stack(torch.meshgrid(axis, axis - 0.25, indexing="ij"), -1).reshape(-1, 2)
    dist = torch.cdist(grid, curve).min(1).values
    # 0.2 from the curve is 2 widths: (0.2)^2 / (2 * 0.1^2) = 2 nats on the open side of a moon;
    # the measured minimum over the grid is 1.93, so > 1.5 leaves a margin and still fails for a wrong curve
    assert e(grid[dist >= 0.2]).min() > 1.5
    assert e(grid[dist <= 0.02]).max() < 0.05


def test_box_exact():
    e = Box(low=[-1.0, 0.0], high=[1.0, 2.0], sharpness=4.0)
    # inside -> 0; (2, 3): 1 past each upper wall -> 2 * (1 + 1) = 4; (-3, 1): 2 below -> 2 * 4 = 8
    torch.testing.assert_close(energies(e, [[0, 1], [2, 3], [-3, 1], [1, 2]]), torch.tensor([0.0, 4.0, 8.0, 0.0]))
    assert e.domain is None  # soft: the sampler does not clamp to the box


def test_halfspace_exact():
    e = Halfspace(normal=[1.0, 2.0], offset=1.0, sharpness=2.0)
    # z = 2 * (1 - n.x): (0,0) -> z = 2; (1,0) -> 0; (3,1) -> -8
    expected = [math.log1p(math.exp(2.0)), math.log(2.0), math.log1p(math.exp(-8.0))]
    torch.testing.assert_close(energies(e, [[0, 0], [1, 0], [3, 1]]), torch.tensor(expected), **F32)
    far = Halfspace(normal=[1.0], offset=0.0, sharpness=10.0).double()
    assert far(torch.tensor([[-100.0]], dtype=torch.float64)).item() == pytest.approx(1000.0)  # no overflow
    assert far(torch.tensor([[100.0]], dtype=torch.float64)).item() == pytest.approx(math.exp(-1000.0), abs=0)


def test_student_t_exact():
    e = StudentT(filters=[[1.0, 0.0], [1.0, 1.0]], alpha=[1.0, 0.5])  # nu = 2
    # (2, 1): projections (2, 3) -> log(1 + 4/2) + 0.5 log(1 + 9/2)
    expected = [math.log(3.0) + 0.5 * math.log(5.5), 0.0]
    torch.testing.assert_close(energies(e, [[2, 1], [0, 0]]), torch.tensor(expected), **F32)
    nu4 = StudentT(filters=[[2.0]], alpha=2.5, nu=4.0)
    torch.testing.assert_close(energies(nu4, [[1.0]]), torch.tensor([2.5 * math.log(2.0)]), **F32)


EXPERTS = {
    "gaussian": lambda: Gaussian(mean=[0.5, -1.0, 2.0], std=[1.0, 0.5, 2.0]),
    "mixture": lambda: GaussianMixture(means=[[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]], std=[0.5, 1.0, 2.0],
                                       weights=[1.0, 2.0, 3.0]),
    "ring": lambda: Ring(radius=1.5, width=0.3, dim=3),
    "moons": lambda: Moons(width=0.2),
    "box": lambda: Box(low=[-0.5, -0.5], high=[0.5, 0.25], sharpness=3.0),
    "halfspace": lambda: Halfspace(normal=[1.0, -2.0, 0.5], offset=0.3, sharpness=2.0),
    "student_t": lambda: StudentT(filters=[[1.0, 0.0], [0.5, 1.0], [-1.0, 2.0]], alpha=[1.0, 0.5, 2.0], nu=3.0),
}


@pytest.mark.parametrize("name", list(EXPERTS))
def test_gradients_match_finite_differences(name):
    e = EXPERTS[name]().to(torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = (1.5 * torch.randn(6, e.event_shape[0], generator=gen, dtype=torch.float64)).requires_grad_()
    # central differences in float64 with eps = 1e-6: truncation ~ eps^2 and round-off ~ 1e-16 / eps = 1e-10,
    # far below atol = 1e-6; random points avoid the measure-zero kinks (ring/moons centres, box walls)
    assert torch.autograd.gradcheck(e, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(EXPERTS))
def test_batched_rows_are_independent(name):
    e = EXPERTS[name]()
    x = torch.randn(5, e.event_shape[0], generator=torch.Generator().manual_seed(1))
    out = e(x)
    assert out.shape == (5,) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.cat([e(row[None]) for row in x]))


@pytest.mark.parametrize("name", list(EXPERTS))
def test_to_moves_every_buffer(name):
    e = EXPERTS[name]()
    assert len(list(e.buffers())) > 0 and not list(e.parameters())
    x = torch.randn(4, e.event_shape[0], generator=torch.Generator().manual_seed(2))
    e64 = e.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in e64.buffers())
    out = e64(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), EXPERTS[name]()(x), rtol=1e-5, atol=1e-5)
    e_meta = EXPERTS[name]().to("meta")  # a device move without a GPU: every buffer follows
    assert all(b.device.type == "meta" for b in e_meta.buffers())
    assert e_meta(torch.empty(3, e.event_shape[0], device="meta")).shape == (3,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(EXPERTS))
def test_cuda_matches_cpu(name):
    e = EXPERTS[name]()
    x = torch.randn(8, e.event_shape[0], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(e.to("cuda")(x.cuda()).cpu(), EXPERTS[name]()(x), rtol=1e-5, atol=1e-5)


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(composer.CompositionError, match=r"expected x of shape \(B, 2\), got \(4, 3\)"):
        Gaussian(mean=[0.0, 0.0])(torch.zeros(4, 3))


@pytest.mark.parametrize(
    "factory, params, message",
    [
        (Gaussian, dict(mean=[0.0, 0.0], std=-1.0), "toy.gaussian: std must be > 0"),
        (Gaussian, dict(mean=[0.0, 0.0], std=[1.0, 1.0, 1.0]), "mean has 2, std has 3"),
        (Gaussian, dict(mean="zero"), "toy.gaussian: mean must be a number or a list of numbers, got 'zero'"),
        (Gaussian, dict(mean=[[0.0, 0.0]]), "toy.gaussian: mean must be .* got shape \\(1, 2\\)"),
        (Gaussian, dict(mean=[0.0, float("nan")]), "toy.gaussian: mean must be finite"),
        (Gaussian, dict(mean=[True, False]), "toy.gaussian: mean must be"),
        (Gaussian, dict(mean=[]), "toy.gaussian: mean must not be empty"),
        (GaussianMixture, dict(means=[0.0, 1.0]), "toy.mixture: means must be a list of lists"),
        (GaussianMixture, dict(means=[[0.0], [1.0, 2.0]]), "toy.mixture: means must be a list of lists"),
        (GaussianMixture, dict(means=[[0.0], [1.0]], weights=[1.0]), "weights has 1 entries but there are 2 means"),
        (GaussianMixture, dict(means=[[0.0], [1.0]], weights=[1.0, 0.0]), "toy.mixture: weights must be > 0"),
        (GaussianMixture, dict(means=[[0.0], [1.0]], std=[1.0, 2.0, 3.0]), "std has 3 entries"),
        (Ring, dict(width=0.0), "toy.ring: width must be > 0"),
        (Ring, dict(radius=-1.0), "toy.ring: radius must be >= 0"),
        (Ring, dict(dim=2.5), "toy.ring: dim must be an integer >= 1, got 2.5"),
        (Ring, dict(dim=0), "toy.ring: dim must be an integer >= 1"),
        (Moons, dict(width=[0.1]), "toy.moons: width must be a number"),
        (Box, dict(low=[0.0, 1.0], high=[1.0, 1.0]), "toy.box: low must be < high in every dimension"),
        (Box, dict(low=[0.0], high=[1.0], sharpness=0), "toy.box: sharpness must be > 0"),
        (Halfspace, dict(normal=[0.0, 0.0]), "toy.halfspace: normal must be non-zero"),
        (Halfspace, dict(normal=1.0), "toy.halfspace: normal must be a list of numbers"),
        (StudentT, dict(filters=[[1.0, 0.0]], alpha=[1.0, 2.0]), "alpha has 2 entries but there are 1 filters"),
        (StudentT, dict(filters=[[1.0, 0.0]], nu=-2.0), "toy.student_t: nu must be > 0"),
    ],
)
def test_bad_parameters_name_the_parameter(factory, params, message):
    with pytest.raises(ToyParameterError, match=message) as info:
        factory(**params)
    assert isinstance(info.value, ValueError) and isinstance(info.value, composer.CompositionError)


def test_integral_float_dim_and_tensor_parameters_are_accepted():
    assert Ring(dim=3.0).event_shape == (3,)
    e = Gaussian(mean=torch.tensor([1.0, 2.0], dtype=torch.float64), std=torch.tensor(2))
    assert e.mean.dtype == torch.float64 and e.std.dtype == torch.float64
    torch.testing.assert_close(e(torch.tensor([[3.0, 2.0]], dtype=torch.float64)),
                               torch.tensor([0.5], dtype=torch.float64))


def test_experts_compose_exactly():
    g = Gaussian(mean=[0.0, 0.0], std=1.0)
    h = Halfspace(normal=[1.0, 0.0], offset=0.5)
    b = Box(low=[-1.0, -1.0], high=[1.0, 1.0], sharpness=2.0)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(4)) * 2
    torch.testing.assert_close((g & h)(x), g(x) + h(x))
    torch.testing.assert_close((g & h & ~b)(x), g(x) + h(x) - b(x))
    torch.testing.assert_close((g | Ring(radius=1.0, width=0.5))(x),
                               -torch.logsumexp(torch.stack([-g(x), -Ring(radius=1.0, width=0.5)(x)]), 0))
    with pytest.raises(composer.CompositionError, match="incompatible event shapes"):
        g & Ring(dim=3)
    assert "toy.gaussian(mean=[0, 0], std=1) & toy.halfspace(normal=[1, 0], offset=0.5" in repr(g & h)
