"""Training reaches stated qualities on 2-D data: CD, DSM, a concept family; the README recipe and CLI.

Qualities are measured on samples of the *exported* expert drawn with the shared sampler from
uniform noise, against the data's known structure:

- eight Gaussians (std 0.1 on a circle of radius 2): >= 90% of samples within 3 std of a mode
  (an exact sampler of the data gives 98.9%; a model that only learned the ring, 30-40%) and
  every mode holding 8-17% of the samples (exactly 12.5% for the data);
- the ``half_planes`` family: the product ``left & up`` is, analytically, the Gaussian with mean
  ``(-0.922, 0.922)`` and std 0.336; >= 95% of its samples must land in that quadrant and their
  mean within 0.15 of the analytic one.

Each training is deterministic (fixed seeds), so these are regression checks of a recipe with
margin (see the figures printed by ``pytest -s``), not statistical tests that may flake.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from composer.sampling import sample
from composer.training import family_from_checkpoint, load_config, train
from composer.training.data import eight_gaussian_modes

#: the README example recipe, verbatim (output is made absolute by the tests)
README_TOML = """\
# eight.toml: a 2-D expert on eight Gaussians, trained by contrastive divergence (~10 s on a laptop CPU)
name = "eight"
objective = "cd"
steps = 800
batch_size = 128
seed = 0
output = "runs/eight"            # relative to this file

[data]
dataset = "eight_gaussians"      # built in (composer list); or: path = "points.npz"
domain = [-3.5, 3.5]

[network]
type = "mlp"
hidden = [128, 128]

[cd]                             # 2-D: small exact-noise Langevin steps, a small replay buffer
steps = 20
step_size = 0.002
noise = "exact"
clip_grad = 0.0
buffer_size = 2000
l2 = 0.01

[optim]
lr = 1e-2
ema = 0.97

[log]
image_every = 400                # negatives-00000400.png, ..., negatives.png
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def mode_quality(x: torch.Tensor, std: float = 0.1) -> tuple[float, torch.Tensor]:
    """(fraction within 3 std of the nearest mode, share of samples per mode (8,))."""
    d = torch.cdist(x.float(), eight_gaussian_modes())
    within = d.min(1).values.lt(3 * std).float().mean().item()
    share = torch.bincount(d.argmin(1), minlength=8).float() / len(x)
    return within, share


@pytest.fixture(scope="module")
def eight_run(tmp_path_factory):
    """The README recipe, trained once for this module (about 10 s)."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "eight.toml").write_text(README_TOML)
    cfg = load_config(folder / "eight.toml")
    cfg.log.image_every, cfg.log.progress = 0, False
    return train(cfg)


def test_cd_on_eight_gaussians_reaches_the_stated_quality(eight_run):
    assert eight_run.step == 800 and eight_run.report["seconds"] < 60
    expert = eight_run.expert()
    x = sample(expert, 2000, steps=200, step_size=0.002, seed=1, init="uniform").x
    within, share = mode_quality(x)
    print(f"CD eight Gaussians: {within:.3f} within 3 std, mode shares {share.min():.3f}..{share.max():.3f}, "
          f"trained in {eight_run.report['seconds']:.1f} s")
    assert within >= 0.90
    assert share.min() >= 0.08 and share.max() <= 0.17


def test_dsm_on_eight_gaussians_reaches_the_stated_quality(tmp_path):
    result = train({
        "name": "eight_dsm", "objective": "dsm", "steps": 2000, "batch_size": 128, "seed": 0,
        "output": str(tmp_path / "dsm"), "data": {"dataset": "eight_gaussians", "domain": [-3.5, 3.5]},
        "network": {"type": "mlp", "hidden": [128, 128]},
        "dsm": {"sigma_max": 3.0, "sigma_min": 0.05, "num_sigmas": 10, "sample_steps": 50, "sample_step_size": 5e-4},
        "checkpoint": {"every": 5000}, "log": {"progress": False},
    })
    expert = result.expert()
    assert expert.noise_conditional and len(expert.sigmas) == 10
    assert math.isclose(expert.sigmas[0], 3.0, rel_tol=1e-6) and math.isclose(expert.sigmas[-1], 0.05, rel_tol=1e-6)
    assert expert.sampling_recipe == {"sigmas": expert.sigmas, "steps": 500, "step_size": 5e-4, "noise": "exact"}
    x = sample(expert, 2000, seed=1, init="uniform", **expert.sampling_recipe).x
    within, share = mode_quality(x)
    print(f"DSM eight Gaussians: {within:.3f} within 3 std, mode shares {share.min():.3f}..{share.max():.3f}, "
          f"trained in {result.report['seconds']:.1f} s")
    assert within >= 0.90
    assert share.min() >= 0.06 and share.max() <= 0.20


def test_conditional_family_product_lands_in_the_intersection(tmp_path):
    result = train({
        "name": "halves", "objective": "cd", "steps": 300, "batch_size": 128, "seed": 1,
        "output": str(tmp_path / "halves"), "data": {"dataset": "half_planes", "domain": [-3.5, 3.5]},
        "network": {"type": "mlp", "hidden": [64, 64]},
        "cd": {"steps": 20, "step_size": 0.002, "noise": "exact", "clip_grad": 0.0, "buffer_size": 2000, "l2": 0.01},
        "optim": {"lr": 1e-2, "ema": 0.97}, "checkpoint": {"every": 5000}, "log": {"progress": False},
    })
    assert result.report["values"] == ["left", "right", "down", "up"]
    family = family_from_checkpoint(result.output)
    product = family["left"] & family["up"]
    calls = []
    hook = family["left"].network.register_forward_hook(lambda *a: calls.append(1))
    product(torch.zeros(3, 2))
    hook.remove()
    assert len(calls) == 1  # two values of one family: one batched network call
    x = sample(product, 2000, steps=300, step_size=0.002, seed=1, init="uniform").x
    in_quadrant = ((x[:, 0] < 0) & (x[:, 1] > 0)).float().mean().item()
    mean = x.mean(0)
    # product of N(-1, 0.35^2) and N(0, 1.2^2) per axis: precision 1/0.35^2 + 1/1.2^2
    precision = 1 / 0.35**2 + 1 / 1.2**2
    exact = (1 / 0.35**2) / precision
    print(f"left & up: {in_quadrant:.3f} in the quadrant, mean {mean.tolist()} (exact [-{exact:.3f}, {exact:.3f}]), "
          f"std {x.std(0).tolist()} (exact {precision ** -0.5:.3f})")
    assert in_quadrant >= 0.95
    torch.testing.assert_close(mean, torch.tensor([-exact, exact]), atol=0.15, rtol=0)


def test_cli_trains_the_readme_recipe_and_composes_it_with_an_analytic_expert(tmp_path, eight_run, capsys):
    """``composer train eight.toml`` writes the expert; ``composer sample 'ckpt.load(...) & toy.halfspace(...)'``."""
    from composer.cli import main
    from composer.plugins import get_registry

    (tmp_path / "eight.toml").write_text(README_TOML)
    assert main(["train", str(tmp_path / "eight.toml"), "--steps", "30", "-q"]) == 0
    out = tmp_path / "runs" / "eight"
    assert (out / "expert.safetensors").is_file() and (out / "negatives.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 30 and report["recipe"]["steps"] == 30
    assert "ckpt.load(path=" in capsys.readouterr().err
    # a new run into a folder with checkpoints must be an explicit resume
    assert main(["train", str(tmp_path / "eight.toml"), "-q"]) == 1
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--steps", "40", "-q"]) == 0  # the recipe comes from the folder
    assert json.loads((out / "report.json").read_text())["steps"] == 40

    if "toy.halfspace" not in get_registry().experts:
        pytest.skip("the toy plugin is not installed")
    # the same chains (same seed, same uniform start) with and without the half-plane y >= 0
    # (toy.halfspace: E = softplus(10 * (0 - y)), a pull of 10 * sigma^2 = 0.1 upward on a mode of std 0.1)
    runs = {}
    for name, expr in (("alone", f'ckpt.load(path="{eight_run.output}")'),
                       ("product", f'ckpt.load(path="{eight_run.output}") & toy.halfspace(normal=[0, 1], offset=0)')):
        npz = tmp_path / f"{name}.npz"
        args = ["sample", expr, "-n", "1000", "--steps", "300", "--step-size", "0.002", "--out", str(npz), "-q"]
        assert main(args) == 0
        runs[name] = torch.from_numpy(np.load(npz)["x"])
    alone, prod = runs["alone"], runs["product"]
    modes = eight_gaussian_modes()
    same = torch.cdist(alone, modes).argmin(1) == torch.cdist(prod, modes).argmin(1)
    lower = same & (alone[:, 1] < -1.0)  # chains in the modes at 225, 270 and 315 degrees in both runs
    shift = (prod[lower, 1] - alone[lower, 1]).mean().item()
    print(f"eight & half-plane y >= 0: {same.float().mean():.3f} of chains end in the same mode; "
          f"lower modes shifted up by {shift:.3f} (analytic 0.1 for a mode of std 0.1)")
    assert mode_quality(prod)[0] >= 0.85
    assert lower.sum() >= 100 and 0.04 <= shift <= 0.2
    assert (prod[:, 1] < -1.0).float().mean() <= (alone[:, 1] < -1.0).float().mean()


def test_discriminative_family_learns_the_posterior_of_its_values(tmp_path):
    """``objective = "discriminative"``: the family's energies become -log p(value | x~) (cross-entropy).

    The Bayes classifier with the data's exact densities is right on 74.9% of points (Monte Carlo, 20,000
    points; the four Gaussians overlap); the trained family must be within 5 points of it (measured 72.4%).
    """
    from composer.training.config import DataConfig
    from composer.training.data import prepare_data

    result = train({
        "name": "halves_post", "objective": "discriminative", "steps": 300, "batch_size": 128, "seed": 0,
        "output": str(tmp_path / "post"), "data": {"dataset": "half_planes", "domain": [-3.5, 3.5]},
        "network": {"type": "mlp", "hidden": [64, 64]},
        "dsm": {"sigma_max": 1.0, "sigma_min": 0.05, "num_sigmas": 10},
        "optim": {"lr": 1e-2}, "checkpoint": {"every": 5000}, "log": {"progress": False},
    })
    family = family_from_checkpoint(result.output)
    data = prepare_data(DataConfig(dataset="half_planes", options={"n": 2000, "seed": 9}))
    x, y = data.x, data.y
    with torch.no_grad():
        e = torch.stack([family[v](x, sigma=0.05) for v in result.report["values"]], dim=1)
    accuracy = (e.argmin(1) == y).float().mean().item()
    print(f"discriminative half_planes: accuracy {accuracy:.3f}, loss {result.report['final']['loss']:.3f}")
    assert result.report["final"]["loss"] < math.log(4) * 0.6  # well below chance (log 4)
    assert accuracy >= 0.70
