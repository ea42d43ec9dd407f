"""Driver features: masks, clamping, the divergence guard, seeds, compile, replay buffer, early stop,
noise ladders, step-size adaptation, validation and errors."""

from __future__ import annotations

import math

import pytest
import torch

import composer
from composer.errors import CompositionError, SamplingDivergedError, UnknownNameError
from composer.sampling import ReplayBuffer, SampleResult, sample, schedules


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors; a second thread only waits for the busy core
    yield
    torch.set_num_threads(before)


def gaussian(mean, std=1.0, label="g", domain=None) -> composer.Energy:
    m = torch.tensor(mean, dtype=torch.float32)
    return composer.as_energy(lambda x: 0.5 * (((x - m) / std) ** 2).sum(-1), event_shape=m.shape,
                              domain=domain, label=label)


SAMPLERS = ["langevin", "mala", "hmc"]


# -- masks and domains -----------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", SAMPLERS)
def test_mask_keeps_observed_entries_bit_identical(sampler):
    g = torch.Generator().manual_seed(0)
    init = torch.randn(64, 4, generator=g) * 3
    mask = torch.zeros(64, 4, dtype=torch.bool)
    mask[:, :2] = True  # first two coordinates observed
    mask[::2, 3] = True  # and the last one for every other chain
    r = sample(gaussian([1.0, -1.0, 0.5, 2.0]), init=init, steps=30, sampler=sampler, step_size=0.1, mask=mask,
               seed=0)
    assert torch.equal(r.x[mask], init[mask])
    assert (r.x[~mask] != init[~mask]).float().mean() > 0.9  # the free entries did move


def test_mask_broadcasts_over_chains():
    init = torch.randn(32, 3)
    mask = torch.tensor([True, False, True])
    r = sample(gaussian([0.0, 5.0, 0.0]), init=init, steps=50, step_size=0.1, mask=mask, seed=0)
    assert torch.equal(r.x[:, mask], init[:, mask])
    assert abs(r.x[:, 1].mean().item() - 5.0) < 1.0


def test_mask_needs_an_init_tensor():
    with pytest.raises(CompositionError, match="init tensor"):
        sample(gaussian([0.0]), n=4, steps=1, mask=torch.tensor([True]))
    with pytest.raises(CompositionError, match="does not broadcast"):
        sample(gaussian([0.0, 0.0]), init=torch.zeros(4, 2), steps=1, mask=torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samples_stay_in_the_domain(sampler):
    # a Gaussian centred outside the box pushes every chain against the boundary
    box = gaussian([2.0, -2.0], 0.5, domain=(0.0, 1.0))
    r = sample(box, n=500, steps=100, sampler=sampler, step_size=0.05, seed=1)
    assert r.x.min() >= 0.0 and r.x.max() <= 1.0
    assert r.x[:, 0].mean() > 0.7 and r.x[:, 1].mean() < 0.3
    # without clamping the chains leave the box; the returned samples are projected back onto it (and their
    # energies are those of the projected points)
    free = sample(box, n=500, steps=100, sampler=sampler, step_size=0.05, seed=1, clamp=False)
    assert free.x.min() >= 0.0 and free.x.max() <= 1.0 and (free.x[:, 0] == 1.0).float().mean() > 0.5
    assert torch.allclose(free.energy, box(free.x))


def test_uniform_init_uses_the_domain():
    e = gaussian([0.0, 0.0], domain=([-1.0, 2.0], [0.0, 5.0]))
    r = sample(e, n=2000, steps=0, seed=0)  # init=None: uniform over the domain
    assert r.x[:, 0].min() >= -1 and r.x[:, 0].max() <= 0 and r.x[:, 1].min() >= 2 and r.x[:, 1].max() <= 5
    # 4 SE of a uniform mean on [2, 5] (sd 3 / sqrt(12)) at n = 2000
    assert abs(r.x[:, 1].mean().item() - 3.5) < 4 * (3 / math.sqrt(12)) / math.sqrt(2000)
    with pytest.raises(CompositionError, match="domain"):
        sample(gaussian([0.0]), n=4, steps=1, init="uniform")


# -- the divergence guard ----------------------------------------------------------------------------

def test_guard_names_step_chains_and_expert():
    # "wall" is finite only for x < 3 (log barrier); a Gaussian at 6 pushes every chain through it.
    # Unadjusted Langevin steps over the barrier, so the wall's energy becomes NaN.
    pull = gaussian([6.0], 1.0, label="pull")
    wall = composer.as_energy(lambda x: -torch.log(3.0 - x[:, 0]), event_shape=(1,), label="wall")
    init = torch.zeros(8, 1)
    init[5] = -30.0  # chain 5 lags behind and is still finite when the others diverge
    with pytest.raises(SamplingDivergedError) as info:
        sample(pull & wall, init=init, steps=400, step_size=0.1, seed=0)
    msg = str(info.value)
    assert "diverged at step" in msg and "of 400" in msg
    assert "first expert with a non-finite energy: wall" in msg
    assert "chains (" in msg and "5," not in msg.split("chains (")[1].split(")")[0] + ","


def test_guard_reports_the_exact_step():
    # E = -x^2 (unbounded below) under ULA with step 0.5: x_t = 2^t x_0 exactly (powers of two), so with
    # x_0 = 1 the energy is -4^t, which overflows float32 (max 3.4e38 = 2^128) at t = 64.
    unbounded = composer.as_energy(lambda x: -(x**2).sum(-1), event_shape=(1,), label="unbounded")
    bowl = 1e-30 * gaussian([0.0], 1.0, label="bowl")  # a positive expert, numerically irrelevant
    with pytest.raises(SamplingDivergedError, match=r"at step 64 of 100.*1 of 1 chains \(0\)"):
        sample(bowl & unbounded, init=torch.ones(1, 1), steps=100, step_size=0.5, noise=0.0, seed=0)


def test_guard_fires_for_mala_on_minus_infinity():
    # A proposal with energy -inf is infinitely likely: Metropolis must accept it, so the guard fires.
    sink = composer.as_energy(lambda x: torch.where(x[:, 0] > 2.0, float("-inf"), 0.0), event_shape=(2,),
                              label="sink")
    with pytest.raises(SamplingDivergedError, match="first expert with a non-finite energy: sink"):
        sample(gaussian([0.0, 0.0]) & sink, n=256, steps=500, sampler="mala", step_size=0.5, seed=0)


def test_mala_rejects_moves_into_a_nan_region():
    # MALA treats a NaN / +inf energy as zero density: proposals through the wall are rejected.
    pull = gaussian([6.0], 1.0, label="pull")
    wall = composer.as_energy(lambda x: -torch.log(3.0 - x[:, 0]), event_shape=(1,), label="wall")
    r = sample(pull & wall, init=torch.zeros(64, 1), steps=300, sampler="mala", step_size=0.1, seed=0)
    assert torch.isfinite(r.x).all() and r.x.max() < 3.0


def test_non_finite_initial_state_is_reported():
    wall = composer.as_energy(lambda x: -torch.log(3.0 - x[:, 0]), event_shape=(1,), label="wall")
    with pytest.raises(SamplingDivergedError, match="at initialisation.*wall"):
        sample(wall, init=torch.full((4, 1), 5.0), steps=10)


# -- reproducibility -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_seed_same_samples(sampler):
    e = gaussian([1.0, 2.0])
    a = sample(e, n=100, steps=20, sampler=sampler, seed=123)
    b = sample(e, n=100, steps=20, sampler=sampler, seed=123)
    c = sample(e, n=100, steps=20, sampler=sampler, seed=124)
    assert torch.equal(a.x, b.x) and torch.equal(a.energy, b.energy)
    assert not torch.equal(a.x, c.x)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sample(e, n=10, steps=5, sampler=sampler, generator=g1).x,
                       sample(e, n=10, steps=5, sampler=sampler, generator=g2).x)


def test_global_seed_makes_unseeded_runs_reproducible():
    e = gaussian([0.0])
    torch.manual_seed(0)
    a = sample(e, n=10, steps=5)
    torch.manual_seed(0)
    b = sample(e, n=10, steps=5)
    assert torch.equal(a.x, b.x) and a.seed == b.seed


def test_compile_matches_eager():
    pytest.importorskip("torch._dynamo")
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile unavailable")
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))
    e = composer.as_energy(lambda x: net(x).squeeze(-1) + 0.5 * (x**2).sum(-1), event_shape=(2,), label="mlp")
    eager = sample(e, n=32, steps=20, step_size=0.05, seed=0)
    try:
        compiled = sample(e, n=32, steps=20, step_size=0.05, seed=0, compile=True)
    except Exception as exc:  # no C compiler, unsupported platform...
        pytest.skip(f"torch.compile does not run here: {type(exc).__name__}: {str(exc)[:200]}")
    torch.testing.assert_close(compiled.x, eager.x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled.energy, eager.energy, rtol=1e-4, atol=1e-5)


# -- replay buffer -----------------------------------------------------------------------------------------

def test_replay_buffer_writes_chains_back_to_their_slots():
    buf = ReplayBuffer(capacity=50, reinit_prob=0.0)
    e = gaussian([3.0, 3.0])
    r = sample(e, n=20, steps=10, step_size=0.1, init=buf, seed=0)
    assert buf.data.shape == (50, 2)
    g = torch.Generator().manual_seed(0)
    _, slots = ReplayBuffer(50, 0.0).sample(20, (2,), None, g)  # which slots were drawn (same seed)
    last = {s: i for i, s in enumerate(slots.tolist())}  # a slot drawn twice keeps the last chain
    for s, i in last.items():
        assert torch.equal(buf.data[s], r.x[i])


def test_replay_buffer_reinitialises_the_stated_fraction():
    buf = ReplayBuffer(capacity=100, reinit_prob=0.05, init="gaussian")
    buf.load_state_dict({"data": torch.zeros(100, 3)})
    x, slots = buf.sample(20_000, (3,), generator=torch.Generator().manual_seed(0))
    fresh = (x != 0).any(dim=1).float().mean().item()
    assert abs(fresh - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 20_000)  # 4 SE of a proportion
    assert slots.min() >= 0 and slots.max() < 100
    with pytest.raises(CompositionError, match="shape"):
        buf.sample(4, (2,))


def test_replay_buffer_round_trip():
    buf = ReplayBuffer(capacity=10)
    buf.sample(3, (2,), domain=(torch.zeros(2), torch.ones(2)))
    state = buf.state_dict()
    other = ReplayBuffer(capacity=10)
    other.load_state_dict(state)
    assert torch.equal(other.data, buf.data) and other.data.min() >= 0 and other.data.max() <= 1


# -- per-chain stop --------------------------------------------------------------------------------------------

def test_converged_chains_stop_and_return_their_state():
    # Noise-free gradient descent on a quadratic: chain i starts at distance 10^i from the minimum,
    # so chains converge (|dE| <= tol for `patience` steps) at different times and leave the batch.
    e = gaussian([0.0])
    init = torch.tensor([[1e-3], [1.0], [10.0], [1000.0]])
    r = sample(e, init=init, steps=2000, step_size=0.1, noise=0.0, tol=1e-8, patience=5, check_every=10, seed=0)
    runs = r.steps_run.tolist()
    assert runs == sorted(runs) and runs[0] < runs[-1] < 2000, runs
    assert all(s % 10 == 0 for s in runs)  # retired at a check
    # each chain is exactly gradient descent x <- 0.9 x for the steps it ran
    expected = init[:, 0] * 0.9 ** r.steps_run.double()
    torch.testing.assert_close(r.x[:, 0].double(), expected, rtol=1e-4, atol=1e-30)
    assert r.trace["energy_mean"].shape[0] == max(runs)


# -- annealing, schedules, adaptation --------------------------------------------------------------------

class NoiseConditionalGaussian(composer.Energy):
    """``E(x, sigma) = ||x||^2 / (2 (1 + sigma^2))``: N(0, 1) convolved with N(0, sigma^2); records sigmas."""

    noise_conditional = True

    def __init__(self):
        super().__init__(event_shape=(1,), label="ncg")
        self.seen: list[float] = []

    def forward(self, x, sigma=None):
        s = 0.0 if sigma is None else float(sigma)
        if not self.seen or self.seen[-1] != s:
            self.seen.append(s)
        return 0.5 * (x**2).sum(-1) / (1 + s**2)


def test_noise_ladder_passes_sigma_and_scales_steps():
    e = NoiseConditionalGaussian()
    r = sample(e, n=20_000, steps=300, sampler="mala", sigmas=[3.0, 1.0, 0.5], step_size=0.1, seed=0)
    assert e.seen == [3.0, 1.0, 0.5]  # each level once, in order
    # the last level samples N(0, 1 + 0.5^2) exactly (MALA); 4 SE of a variance at n = 20000
    var = 1.25
    assert abs(r.x.var().item() - var) < 4 * var * math.sqrt(2 / 20_000)
    # Song & Ermon scaling: the step at level i is step_size * (sigma_i / sigma_min)^2
    assert r.step_size == pytest.approx(0.1)
    with pytest.raises(CompositionError, match="not noise-conditional"):
        sample(gaussian([0.0]), n=4, steps=3, sigmas=[1.0])


def test_schedules():
    assert schedules.linear(1.0, 0.0).values(5) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert schedules.geometric(1.0, 0.01).values(3) == pytest.approx([1.0, 0.1, 0.01])
    assert schedules.cosine(1.0, 0.0).values(3) == pytest.approx([1.0, 0.5, 0.0])
    assert schedules.constant(2.0).values(2) == [2.0, 2.0]
    assert schedules.levels([3, 2, 1]).values(6) == [3, 3, 2, 2, 1, 1]
    assert schedules.as_schedule(lambda i, n: i).values(3) == [0.0, 1.0, 2.0]
    with pytest.raises(CompositionError):
        schedules.geometric(0.0, 1.0)
    with pytest.raises(CompositionError, match="positive"):
        sample(gaussian([0.0]), n=2, steps=3, step_size=schedules.linear(1.0, 0.0))


def test_step_schedule_is_followed():
    # noise-free descent x <- (1 - s_t) x on E = x^2 / 2: the product of (1 - s_t) is exact
    steps = schedules.linear(0.2, 0.1)
    r = sample(gaussian([0.0]), init=torch.ones(1, 1), steps=11, step_size=steps, noise=0.0)
    expected = math.prod(1 - s for s in steps.values(11))
    assert r.x.item() == pytest.approx(expected, rel=1e-5)


def test_warmup_adapts_mala_step_toward_target():
    e = gaussian([0.0] * 10)
    with pytest.raises(SamplingDivergedError, match="acceptance collapsed"):  # the guard refuses such a run
        sample(e, n=500, steps=100, sampler="mala", step_size=3.0, seed=0)
    bad = sample(e, n=500, steps=100, sampler="mala", step_size=3.0, seed=0, guard=False)
    assert bad.acceptance < 0.2
    good = sample(e, n=500, steps=100, sampler="mala", step_size=3.0, warmup=300, seed=0)
    assert 0.45 < good.acceptance < 0.7
    assert good.step_size < 3.0
    assert good.trace["acceptance"].shape[0] == 400 and good.warmup == 300


# -- results, validation and errors --------------------------------------------------------------------

def test_result_and_trace():
    r = sample(gaussian([0.0, 0.0]), n=64, steps=120, sampler="mala", step_size=0.1, seed=0, check_every=50)
    assert isinstance(r, SampleResult) and r.x.shape == (64, 2) and r.energy.shape == (64,)
    assert not r.x.requires_grad and r.x.grad_fn is None
    assert set(r.trace) == {"energy_mean", "energy_min", "energy_max", "grad_norm", "acceptance"}
    for v in r.trace.values():
        assert v.shape == (120,) and torch.isfinite(v).all()
    t = r.trace
    assert torch.all(t["energy_min"] <= t["energy_mean"]) and torch.all(t["energy_mean"] <= t["energy_max"])
    # the last entries describe the returned samples
    assert t["energy_mean"][-1].item() == pytest.approx(r.energy.mean().item(), rel=1e-5)
    # grad_norm[t]: RMS over chains of the gradient norm at the start of step t. Noise-free descent on
    # E = |x|^2 / 2 has grad = x and x_t = 0.9 x_{t-1}.
    init = torch.randn(64, 2)
    d = sample(gaussian([0.0, 0.0]), init=init, steps=10, step_size=0.1, noise=0.0)
    rms = lambda x: x.norm(dim=1).square().mean().sqrt().item()
    assert d.trace["grad_norm"][0].item() == pytest.approx(rms(init), rel=1e-5)
    assert d.trace["grad_norm"][-1].item() == pytest.approx(rms(d.x) / 0.9, rel=1e-5)
    assert "acceptance" not in sample(gaussian([0.0]), n=4, steps=3).trace
    assert "mala" in r.summary()


def test_product_without_positive_expert_is_rejected_before_sampling():
    a = gaussian([0.0], label="a")
    with pytest.raises(CompositionError, match="negation"):
        sample(~a, n=4, steps=1)
    with pytest.raises(CompositionError, match="no positive expert"):
        sample(composer.product(~a, 0.5 * ~gaussian([1.0], label="b")), n=4, steps=1)


def test_shape_must_be_known():
    anyshape = composer.as_energy(lambda x: (x**2).flatten(1).sum(-1), label="any")
    with pytest.raises(CompositionError, match="event_shape"):
        sample(anyshape, n=4, steps=1)
    r = sample(anyshape, init=torch.ones(4, 2, 3), steps=2, step_size=0.01)
    assert r.x.shape == (4, 2, 3)
    with pytest.raises(CompositionError, match="expects"):
        sample(gaussian([0.0, 0.0]), init=torch.ones(4, 3), steps=1)
    with pytest.raises(CompositionError, match="n=5"):
        sample(gaussian([0.0]), n=5, init=torch.ones(4, 1), steps=1)


def test_bad_energy_shape_and_arguments():
    flat = composer.as_energy(lambda x: x, event_shape=(2,), label="flat")  # returns (B, 2)
    with pytest.raises(CompositionError, match=r"flat`? returned energies of shape \(4, 2\).*\(4,\)"):
        sample(flat, n=4, steps=1)
    with pytest.raises(CompositionError, match="noise='exact'"):
        sample(gaussian([0.0]), n=4, steps=1, sampler="mala", noise=0.1)
    with pytest.raises(UnknownNameError, match="did you mean: mala"):
        sample(gaussian([0.0]), n=4, steps=1, sampler="mal")
    with pytest.raises(CompositionError):
        sample(gaussian([0.0]), n=4, steps=-1)
    with pytest.raises(CompositionError):
        sample(gaussian([0.0]), n=4, steps=1, noise="loud")
    with pytest.raises(CompositionError, match="no option 'leapfrogs'; its options: n_leapfrog"):
        sample(gaussian([0.0]), n=4, steps=1, sampler="hmc", kernel_options={"leapfrogs": 3})
    with pytest.raises(CompositionError, match="seed or generator"):
        sample(gaussian([0.0]), n=4, steps=1, seed=0, generator=torch.Generator())


def test_igebm_style_clipped_steps():
    # decoupled noise 0 and element-wise clipping: each coordinate moves at most step * clip per step
    init = torch.zeros(16, 3)
    r = sample(gaussian([100.0, -100.0, 0.5]), init=init, steps=60, step_size=10.0, noise=0.0, clip_grad=0.01,
               clamp=False)
    assert torch.allclose(r.x[:, 0], torch.full((16,), 6.0)) and torch.allclose(r.x[:, 1], torch.full((16,), -6.0))
    # with noise: IGEBM's recipe runs and stays in [0, 1]
    box = gaussian([0.5] * 4, domain=(0.0, 1.0))
    r = sample(box, n=32, steps=60, step_size=10.0, noise=0.005, clip_grad=0.01, seed=0)
    assert r.x.min() >= 0 and r.x.max() <= 1


def test_progress_bar_writes_to_stderr(capsys):
    sample(gaussian([0.0]), n=4, steps=5, progress=True)
    assert "sampling (langevin)" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_same_seed_same_samples():
    e = gaussian([1.0, 2.0])
    a = sample(e, n=256, steps=20, sampler="mala", seed=1, device="cuda")
    b = sample(e, n=256, steps=20, sampler="mala", seed=1, device="cuda")
    assert a.x.device.type == "cuda" and torch.equal(a.x, b.x)


# -- lean runs: no trace, no evaluation of the returned samples ------------------------------------------

def test_trace_off_gives_the_same_samples_and_still_guards():
    e = gaussian([1.0, -1.0])
    full = sample(e, n=50, steps=40, seed=3)
    lean = sample(e, n=50, steps=40, seed=3, trace=False)
    assert torch.equal(full.x, lean.x) and torch.equal(full.energy, lean.energy)
    assert lean.trace == {} and lean.acceptance is None
    unbounded = composer.as_energy(lambda x: -(x**2).sum(-1), event_shape=(1,), label="unbounded")
    bowl = 1e-30 * gaussian([0.0], 1.0, label="bowl")
    with pytest.raises(SamplingDivergedError, match=r"at step 64 of 100.*1 of 1 chains \(0\)"):
        sample(bowl & unbounded, init=torch.ones(1, 1), steps=100, step_size=0.5, noise=0.0, trace=False)


def test_energies_off_skips_the_last_evaluation_only():
    calls = []
    e = composer.as_energy(lambda x: (calls.append(1), 0.5 * (x**2).sum(-1))[1], event_shape=(2,), label="g")
    full = sample(e, n=20, steps=30, seed=1, check_every=7)
    assert len(calls) == 31  # the initial point and the end point of every step
    calls.clear()
    lean = sample(e, n=20, steps=30, seed=1, check_every=7, energies=False)
    assert len(calls) == 30  # like a hand-written loop: one evaluation per step
    assert torch.equal(full.x, lean.x) and lean.energy is None
    torch.testing.assert_close(lean.trace["energy_mean"][:-1], full.trace["energy_mean"][:-1])
    assert torch.isnan(lean.trace["energy_mean"][-1])  # not evaluated
    torch.testing.assert_close(lean.trace["grad_norm"], full.trace["grad_norm"])  # the driving gradients
    # Metropolis kernels evaluate every proposal anyway
    assert sample(e, n=4, steps=3, sampler="mala", energies=False).energy is not None
