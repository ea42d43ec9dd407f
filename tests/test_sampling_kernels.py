"""Kernels on their own: the stateless protocol, one autograd call per step, no parameter gradients,
per-chain accept/reject, the registry, and the guard's walk over the composition tree."""

from __future__ import annotations

import math

import pytest
import torch

import composer
from composer.errors import DuplicateNameError, SamplingDivergedError
from composer.plugins import build_registry, get_registry
from composer.sampling import HMC, MALA, Langevin, LangevinState, Target, hmc, langevin, mala, sample
from composer.sampling.guard import leaves


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian(mean, std=1.0, label="g") -> composer.Energy:
    m = torch.tensor(mean, dtype=torch.float32)
    return composer.as_energy(lambda x: 0.5 * (((x - m) / std) ** 2).sum(-1), event_shape=m.shape, label=label)


class Counting(composer.Energy):
    """A Gaussian expert that counts its evaluations and checks it always gets a fresh leaf tensor."""

    def __init__(self, mean: float, label: str):
        super().__init__(event_shape=(2,), label=label)
        self.mean, self.calls = mean, 0

    def forward(self, x):
        self.calls += 1
        assert x.is_leaf  # no graph carried over from earlier steps
        assert x.requires_grad or not torch.is_grad_enabled()  # (energy-only evaluations run without grad)
        return 0.5 * ((x - self.mean) ** 2).sum(-1)


@pytest.mark.parametrize("sampler, per_step", [("langevin", 1), ("mala", 1), ("hmc", 3)])
def test_one_evaluation_of_the_whole_composition_per_gradient(sampler, per_step):
    experts = [Counting(0.0, "a"), Counting(1.0, "b"), Counting(2.0, "c")]
    energy = experts[0] & experts[1] & 0.5 * ~experts[2]
    calls = []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls.append(1)
        return real_grad(*args, **kwargs)

    torch.autograd.grad = counting_grad
    try:
        sample(energy, n=8, steps=25, sampler=sampler, step_size=0.05, seed=0,
               kernel_options={"n_leapfrog": 3} if sampler == "hmc" else None)
    finally:
        torch.autograd.grad = real_grad
    expected = 1 + 25 * per_step  # the initial state, then one evaluation per gradient
    probe = 1  # a composition with a negation: one gradient-free probe that it is bounded below (guard)
    assert [e.calls for e in experts] == [expected + probe] * 3
    # unadjusted Langevin never uses the gradient at its final point: the last step computes the energy only
    assert len(calls) == expected - (sampler == "langevin")


def test_concept_values_sharing_a_network_run_as_one_call_per_step():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.centres = torch.nn.Parameter(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]))
            self.calls = 0

        def forward(self, x, cond):
            self.calls += 1
            return 0.5 * ((x - self.centres[cond]) ** 2).sum(-1)

    net = Net()
    values = [composer.ConditionalEnergy(net, torch.tensor(i), event_shape=(2,), label=f"v{i}") for i in range(3)]
    r = sample(values[0] & values[1] & values[2], n=4000, steps=200, sampler="mala", step_size=0.2, seed=0)
    assert net.calls == 201
    # the product of three unit Gaussians is N(mean of centres, 1/3)
    assert torch.allclose(r.x.mean(0), torch.tensor([2 / 3, 2 / 3]), atol=4 * math.sqrt(1 / 3 / 4000))


def test_expert_parameters_get_no_gradient():
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))
    net[0].weight.grad = torch.zeros_like(net[0].weight)  # an existing gradient stays untouched
    e = composer.as_energy(lambda x: net(x).squeeze(-1) + (x**2).sum(-1), event_shape=(2,), label="mlp")
    for sampler in ("langevin", "mala", "hmc"):
        sample(e, n=16, steps=10, sampler=sampler, step_size=0.01, seed=0)
    assert torch.equal(net[0].weight.grad, torch.zeros_like(net[0].weight))
    assert all(p.grad is None for name, p in net.named_parameters() if name != "0.weight")


def test_sampling_under_no_grad():
    with torch.no_grad():
        r = sample(gaussian([3.0]), n=100, steps=200, step_size=0.1, seed=0)
    assert abs(r.x.mean().item() - 3.0) < 0.5


@pytest.mark.parametrize("kernel", [langevin, mala, hmc])
def test_kernels_are_stateless_functions_of_their_state(kernel):
    fn = lambda x: 0.5 * (x**2).sum(-1)  # a plain callable works as energy_fn
    x0 = torch.ones(5, 3)
    state = kernel.init(x0, fn)
    assert isinstance(state, LangevinState)
    torch.testing.assert_close(state.grad, x0)
    torch.testing.assert_close(state.energy, torch.full((5,), 1.5))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    new1, info = kernel.step(state, fn, step_size=0.1, generator=g1)
    new2, _ = kernel.step(state, fn, step_size=0.1, generator=g2)
    assert torch.equal(new1.x, new2.x)  # same state, same randomness: same result
    assert torch.equal(state.x, x0)  # the input state is not modified
    assert not new1.x.requires_grad and not new1.energy.requires_grad and not new1.grad.requires_grad
    torch.testing.assert_close(new1.energy, fn(new1.x))
    torch.testing.assert_close(new1.grad, new1.x)
    if kernel.metropolis:
        assert info.acceptance.shape == (5,) and info.accepted.dtype == torch.bool


def test_langevin_step_is_the_formula():
    fn = lambda x: 0.5 * (x**2).sum(-1)
    x0 = torch.randn(4, 2)
    state = langevin.init(x0, fn)
    xi = torch.randn(4, 2, generator=torch.Generator().manual_seed(9))
    new, _ = langevin.step(state, fn, step_size=0.1, temperature=2.0, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(new.x, x0 - 0.1 * x0 + math.sqrt(2 * 0.1 * 2.0) * xi)
    new, _ = langevin.step(state, fn, step_size=10.0, noise=0.005, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(new.x, x0 - 10.0 * x0 + 0.005 * xi)


def test_mala_accepts_or_rejects_each_chain_on_its_own():
    # half the chains sit next to a wall (NaN energy beyond x = 0.5) with a strong pull through it:
    # their proposals cross and are rejected, while the other chains move freely.
    def fn(x):
        return 0.5 * ((x - 3.0) ** 2).sum(-1) - torch.log(0.5 - x[:, 0]).where(x[:, 0] > -5, torch.zeros(()))

    x0 = torch.cat([torch.full((50, 1), 0.45), torch.full((50, 1), -20.0)])
    state = mala.init(x0, fn)
    new, info = mala.step(state, fn, step_size=0.5, generator=torch.Generator().manual_seed(0))
    near, far = info.accepted[:50], info.accepted[50:]
    assert near.float().mean() < 0.3 and far.float().mean() > 0.7
    assert torch.equal(new.x[~info.accepted], x0[~info.accepted])
    assert torch.all(new.x[info.accepted] != x0[info.accepted])


@pytest.mark.parametrize("sampler, step", [("mala", 1.5), ("hmc", 1.2)])
def test_large_steps_stay_exact(sampler, step):
    # with a step this large, unadjusted Langevin is unstable on N(0, 1) (s > 2 diverges, s = 1.5 has
    # variance 1 / (1 - 0.75) = 4); Metropolis keeps the variance at 1. 4 SE at n = 20000.
    n = 20_000
    r = sample(gaussian([0.0]), n=n, steps=200, sampler=sampler, step_size=step, seed=0,
               kernel_options={"n_leapfrog": 2} if sampler == "hmc" else None)
    assert abs(r.x.var().item() - 1.0) < 4 * math.sqrt(2 / n)
    assert abs(r.x.mean().item()) < 4 * math.sqrt(1 / n)


def test_target_transforms():
    mask = torch.tensor([True, False, False])
    t = Target(lambda x: x.sum(-1), clip_grad=0.5, mask=mask, low=torch.tensor(-1.0), high=torch.tensor(1.0))
    g = torch.tensor([[2.0, -3.0, 0.1]])
    torch.testing.assert_close(t.drift(g), torch.tensor([[0.0, -0.5, 0.1]]))
    x, x_new = torch.tensor([[7.0, 0.0, 0.0]]), torch.tensor([[8.0, 5.0, -0.2]])
    torch.testing.assert_close(t.constrain(x_new, x), torch.tensor([[7.0, 1.0, -0.2]]))
    assert t.admissible(torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])).tolist() == [True, False]
    n = Target(lambda x: x.sum(-1), clip_grad_norm=1.0)
    torch.testing.assert_close(n.drift(torch.tensor([[3.0, 4.0], [0.3, 0.4]])), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


# -- registry -------------------------------------------------------------------------------------------

def test_builtins_are_registered_through_the_hook():
    reg = get_registry()
    assert reg.sampler("langevin").obj is langevin and reg.sampler("mala").obj is mala
    assert reg.sampler("hmc").obj is hmc
    assert reg.sampler("mala").plugin == "composer.sampling.builtin"
    assert isinstance(langevin, Langevin) and isinstance(mala, MALA) and isinstance(hmc, HMC)


class GradientDescent:
    """A plugin kernel: noise-free descent, reusing the built-in state and the Target's transforms."""

    name = "descent"

    def init(self, x, energy_fn):
        return langevin.init(x, energy_fn)

    def step(self, state, energy_fn, *, step_size, temperature=1.0, generator=None):
        target = energy_fn
        x = target.constrain(state.x - step_size * target.drift(state.grad), state.x)
        e, g = target.value_and_grad(x)
        return LangevinState(x, e, g), None


class DescentPlugin:
    @composer.hookimpl
    def register_samplers(self, register):
        register("descent", GradientDescent(), doc="gradient descent")


def test_a_plugin_sampler_works_like_a_builtin():
    reg = build_registry(plugins=[DescentPlugin()], entry_points=False)
    init = torch.tensor([[4.0, 0.5], [-2.0, 0.5]])
    mask = torch.tensor([False, True])
    r = sample(gaussian([1.0, 1.0]), init=init, steps=200, sampler="descent", step_size=0.1, mask=mask,
               registry=reg)
    torch.testing.assert_close(r.x[:, 0], torch.ones(2))
    assert torch.equal(r.x[:, 1], init[:, 1])  # the plugin got the mask through the Target
    assert r.sampler == "descent" and "acceptance" not in r.trace
    # a kernel object can also be passed directly
    assert sample(gaussian([1.0]), n=3, steps=50, sampler=GradientDescent(), step_size=0.2).x.shape == (3, 1)


def test_a_plugin_cannot_take_a_builtin_name():
    class Clash:
        @composer.hookimpl
        def register_samplers(self, register):
            register("mala", GradientDescent())

    with pytest.raises(DuplicateNameError, match="mala"):
        build_registry(plugins=[Clash()], entry_points=False)


# -- the guard's view of the tree -----------------------------------------------------------------------------

def test_guard_walks_through_scopes():
    wall = composer.as_energy(lambda y: -torch.log(3.0 - y[:, 0]), event_shape=(1,), label="wall")
    first = lambda x: x[:, :1]
    energy = gaussian([6.0, 0.0], label="pull") & wall.on(first, event_shape=(2,))
    found = list(leaves(energy))
    assert [leaf.formula() for leaf, _ in found] == ["pull", "wall"]
    assert found[0][1] is None and found[1][1] is first
    with pytest.raises(SamplingDivergedError, match="non-finite energy: wall"):
        sample(energy, init=torch.zeros(4, 2), steps=300, step_size=0.1, seed=0)


def test_guard_finds_chains_whose_gradient_alone_is_non_finite():
    # the classic where() trap: the energy is 0 for x < 1, but the masked branch sqrt(x - 1) is NaN there
    # and its gradient leaks through the where: 0 * NaN = NaN
    cusp = composer.as_energy(lambda x: torch.where(x[:, 0] > 1, torch.sqrt(x[:, 0] - 1.0), 0.0), event_shape=(1,),
                              label="cusp")
    init = torch.tensor([[3.0], [50.0], [3.0]])
    with pytest.raises(SamplingDivergedError, match=r"in 2 of 3 chains \(0, 2\).*non-finite gradient: cusp"):
        sample(gaussian([0.0], label="pull") & cusp, init=init, steps=100, step_size=0.1, noise=0.0)
