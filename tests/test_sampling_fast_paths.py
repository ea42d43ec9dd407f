"""The fast paths: bf16 autocast of energies, and the captured (``graph=True``) path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import composer
from composer.errors import CompositionError
from composer.sampling import sample


class Quadratic(composer.Energy):
    """``E(x) = 0.5 * ||a * (x - m)||^2`` through a ``Linear`` (so autocast runs it in low precision)."""

    def __init__(self, a: float, m: float):
        super().__init__(event_shape=(2,), label=f"q{a}")
        self.lin = nn.Linear(2, 2)
        with torch.no_grad():
            self.lin.weight.copy_(a * torch.eye(2))
            self.lin.bias.fill_(-a * m)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x):
        y = self.lin(x)
        self.dtypes.append(y.dtype)
        return 0.5 * y.float().square().sum(-1)


def test_bf16_and_float32_samples_agree_in_distribution_on_an_analytic_product():
    """N(1, 1) & N(-0.5, 1/4) is N(m, v) with precision 1 + 4 = 5: v = 0.2, m = (1 - 4 * 0.5) / 5 = -0.2.

    MALA is exact, so both runs target it; 4000 chains give a standard error of 0.007 on the mean and
    about 2.2% on the variance, and bf16 (8 significant bits) perturbs energies by ~0.4% of |E| ~ 1
    (a bias far below the tolerances: 0.03 on means, 10% on variances)."""
    a, b = Quadratic(1.0, 1.0), Quadratic(2.0, -0.5)
    product = a & b
    kw = {"n": 4000, "steps": 200, "sampler": "mala", "step_size": 0.2, "warmup": 50, "seed": 0, "recipe": False}
    fp32 = sample(product, **kw)
    assert set(a.dtypes) == {torch.float32}
    a.dtypes.clear()
    bf16 = sample(product, autocast=torch.bfloat16, **kw)
    assert set(a.dtypes) == {torch.bfloat16}  # the experts really ran in bf16
    assert bf16.x.dtype == torch.float32 and bf16.energy.dtype == torch.float32
    for r in (fp32, bf16):
        torch.testing.assert_close(r.x.mean(0), torch.full((2,), -0.2), atol=0.03, rtol=0)
        torch.testing.assert_close(r.x.var(0), torch.full((2,), 0.2), atol=0.02, rtol=0)
    torch.testing.assert_close(bf16.x.mean(0), fp32.x.mean(0), atol=0.03, rtol=0)
    assert bf16.acceptance > 0.5


def test_bad_autocast_and_graph_with_compile_are_refused():
    q = Quadratic(1.0, 0.0)
    with pytest.raises(CompositionError, match="autocast"):
        sample(q, n=4, steps=1, autocast="bf16")
    with pytest.raises(CompositionError, match="graph=True"):
        sample(q, n=4, steps=1, graph=True, compile=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CUDA graphs)")
def test_graph_path_on_cuda_matches_eager():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 1)).cuda()
    energy = composer.as_energy(lambda x: net(x).squeeze(-1), event_shape=(2,))
    energy.inner = [net]
    x0 = torch.randn(1024, 2, device="cuda")
    eager = sample(energy, steps=50, init=x0, step_size=0.01, seed=0, recipe=False)
    graph = sample(energy, steps=50, init=x0, step_size=0.01, seed=0, recipe=False, graph=True)
    again = sample(energy, steps=50, init=x0, step_size=0.01, seed=0, recipe=False, graph=True)
    torch.testing.assert_close(graph.x, eager.x, rtol=1e-4, atol=1e-4)
    assert torch.equal(graph.x, again.x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 autocast on the GPU)")
def test_bf16_on_cuda_agrees_with_float32():
    a, b = Quadratic(1.0, 1.0), Quadratic(2.0, -0.5)
    product = (a & b).cuda()
    kw = {"n": 4000, "steps": 200, "sampler": "mala", "step_size": 0.2, "warmup": 50, "seed": 0, "recipe": False,
          "device": "cuda"}
    fp32, bf16 = sample(product, **kw), sample(product, autocast=torch.bfloat16, **kw)
    torch.testing.assert_close(bf16.x.mean(0).cpu(), fp32.x.mean(0).cpu(), atol=0.03, rtol=0)
    torch.testing.assert_close(bf16.x.var(0).cpu(), torch.full((2,), 0.2), atol=0.02, rtol=0)
