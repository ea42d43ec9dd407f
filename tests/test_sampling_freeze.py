"""Parameters are frozen while sampling and restored exactly afterwards (composer.sampling.freeze)."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from torch import Tensor, nn

import composer
from composer.energy import ConditionalEnergy
from composer.sampling import ReplayBuffer, freeze, sample


class Spy(composer.Energy):
    """``E(x) = 0.5 ||x||^2 + net(x)`` that records, at every evaluation, whether any watched
    parameter required a gradient."""

    def __init__(self, net: nn.Module, watched: list[nn.Parameter], noise_conditional: bool = False):
        super().__init__(event_shape=(2,), domain=(-4.0, 4.0), label="spy")
        self.net = net
        self.watched = watched  # a plain list: not registered (reached through self.net anyway)
        self.noise_conditional = noise_conditional
        self.seen: list[bool] = []

    def forward(self, x: Tensor, sigma=None) -> Tensor:
        self.seen.append(any(p.requires_grad for p in self.watched))
        return 0.5 * (x ** 2).sum(-1) + 0.01 * self.net(x).squeeze(-1)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 1))


def flags(net: nn.Module) -> list[bool]:
    return [p.requires_grad for p in net.parameters()]


@pytest.mark.parametrize("how", ["langevin", "mala", "hmc", "annealed", "buffer", "untraced"])
def test_every_path_evaluates_with_frozen_parameters_and_restores_them(how):
    net = mlp()
    net[0].bias.requires_grad_(False)  # a user's own frozen parameter stays frozen
    before = flags(net)
    spy = Spy(net, list(net.parameters()), noise_conditional=how == "annealed")
    kw = {"n": 64, "steps": 5, "seed": 0, "step_size": 0.05, "recipe": False}
    if how in ("mala", "hmc"):
        kw.update(sampler=how, warmup=2)
    elif how == "annealed":
        kw.update(sigmas=[1.0, 0.5], predictor="ddim")
    elif how == "buffer":
        kw.update(init=ReplayBuffer(128))
    elif how == "untraced":
        kw.update(trace=False, energies=False)
    sample(spy, **kw)
    assert spy.seen and not any(spy.seen)
    assert flags(net) == before == [True, False, True, True]


def test_compiled_steps_see_frozen_parameters_too():
    net = mlp()
    spy = Spy(net, list(net.parameters()))
    compiled = sample(spy, n=32, steps=3, seed=0, step_size=0.05, recipe=False, compile=True)
    assert not any(spy.seen) and all(flags(net))
    eager = sample(spy, n=32, steps=3, seed=0, step_size=0.05, recipe=False)
    torch.testing.assert_close(compiled.x, eager.x, rtol=1e-5, atol=1e-5)


def test_shared_modules_bayes_bases_and_hidden_modules_are_all_frozen():
    shared, prior_net, hidden = mlp(), mlp(), mlp()

    class Net(nn.Module):  # a conditional network: -log p(c | x) stand-in
        def __init__(self):
            super().__init__()
            self.body = shared

        def forward(self, x, cond):
            return 0.01 * self.body(x).squeeze(-1) ** 2 + cond.float()

    class Hidden(composer.Energy):  # keeps its network out of the module tree, as the trainer does
        def __init__(self):
            super().__init__(event_shape=(2,), label="hidden")
            self.net = [hidden]

        def forward(self, x):
            return 0.01 * self.net[0](x).squeeze(-1)

    every = [*shared.parameters(), *prior_net.parameters(), *hidden.parameters()]
    prior = Spy(prior_net, every)
    a = ConditionalEnergy(Net(), torch.tensor(0), (2,), base=prior, label="a")
    b = ConditionalEnergy(Net(), torch.tensor(1), (2,), base=prior, label="b")
    assert len(freeze.sampling_parameters(a & b & Hidden())) == len(every)
    sample(a & ~b & Hidden(), n=16, steps=3, seed=0, step_size=0.05, recipe=False)
    assert prior.seen and not any(prior.seen)
    assert all(p.requires_grad for p in every)


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_flags_are_restored_when_a_chain_is_interrupted(error):
    net = mlp()
    net[2].weight.requires_grad_(False)
    before = flags(net)

    class Failing(Spy):
        def forward(self, x, sigma=None):
            if len(self.seen) == 3:
                raise error("stop")
            return super().forward(x)

    with pytest.raises(error):
        sample(Failing(net, list(net.parameters())), n=8, steps=10, seed=0, recipe=False)
    assert flags(net) == before
    assert not freeze._held  # nothing left behind in the reference counts


def test_two_threads_sampling_one_composition_overlap_correctly():
    """A enters, B enters, A leaves while B is still running: B must keep seeing frozen parameters and
    the flags must end as they began (a plain save/restore fails both: A's exit re-enables the flags under
    B, and B's exit restores the 'False' it saved from A)."""
    net = mlp()
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    class Gate(Spy):
        def __init__(self, first: threading.Event, wait: threading.Event):
            super().__init__(net, list(net.parameters()))
            self.first, self.wait = first, wait

        def forward(self, x, sigma=None):
            if not self.first.is_set():
                self.first.set()
                assert self.wait.wait(20), "the other thread did not arrive"
            return super().forward(x)

    ga, gb = Gate(a_in, b_in), Gate(b_in, a_done)

    def run(energy):
        try:
            sample(energy, n=8, steps=5, seed=0, recipe=False)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ta = threading.Thread(target=run, args=(ga,))
    ta.start()
    assert a_in.wait(20)
    tb = threading.Thread(target=run, args=(gb,))
    tb.start()
    ta.join(20)
    a_done.set()  # B continues only after A has left its frozen block
    tb.join(20)
    assert not errors and not ta.is_alive() and not tb.is_alive()
    assert gb.seen and not any(gb.seen) and not any(ga.seen)
    assert all(flags(net)) and not freeze._held


def test_ddp_wrapped_network_is_frozen_and_trains_afterwards(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        net = mlp()
        ddp = nn.parallel.DistributedDataParallel(net)
        spy = Spy(net, list(net.parameters()))
        holder = composer.as_energy(lambda x: spy(x), event_shape=(2,))
        holder.wrapped = [ddp]  # the composition reaches the network only through the DDP wrapper
        sample(holder, n=16, steps=3, seed=0, step_size=0.05, recipe=False)
        assert spy.seen and not any(spy.seen) and all(flags(net))
        x = torch.randn(8, 2)
        ddp(x).sum().backward()  # the reducer still sees every parameter
        reference = mlp()
        reference(x).sum().backward()
        for p, q in zip(net.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
    finally:
        dist.destroy_process_group()


def test_freezing_changes_no_sample_and_no_training_loss(tmp_path, monkeypatch):
    """Same samples bit for bit, and a short CD run logs the same losses, with freezing on and off."""
    from composer.training import load_config, train

    net = mlp()
    energy = composer.as_energy(lambda x: net(x).squeeze(-1) + 0.5 * (x ** 2).sum(-1), event_shape=(2,))
    energy.inner = [net]
    on = sample(energy, n=256, steps=20, seed=3, step_size=0.05, recipe=False)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'objective = "cd"\nsteps = 12\nbatch_size = 64\nseed = 0\noutput = "out"\n'
        '[data]\ndataset = "eight_gaussians"\ndomain = [-3.5, 3.5]\n[network]\ntype = "mlp"\nhidden = [32, 32]\n'
        '[cd]\nsteps = 5\nstep_size = 0.002\nbuffer_size = 256\n[log]\nevery = 1\nprogress = false\n'
    )
    runs = {}
    for enabled in (True, False):
        monkeypatch.setattr(freeze, "ENABLED", enabled)
        cfg = load_config(recipe)
        cfg.output = str(tmp_path / f"out-{enabled}")
        result = train(cfg)
        log = (tmp_path / f"out-{enabled}" / "log.jsonl").read_text()
        runs[enabled] = [json.loads(line) for line in log.splitlines()]
        runs[enabled, "w"] = [p.detach().clone() for p in result.network.parameters()]
    off = sample(energy, n=256, steps=20, seed=3, step_size=0.05, recipe=False)
    assert torch.equal(on.x, off.x) and torch.equal(on.energy, off.energy)
    assert len(runs[True]) == 12 and runs[True] == runs[False]
    for p, q in zip(runs[True, "w"], runs[False, "w"]):
        assert torch.equal(p, q)
