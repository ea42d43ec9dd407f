"""Training state: exact checkpoint round trips, resume after kill -9, the divergence guard, recipes, data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from composer import CheckpointError
from composer.training import ConfigError, TrainingDivergedError, config_from_dict, load_config, train
from composer.training import checkpoint as ckpt
from composer.training.data import Batches, prepare_data
from composer.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(output: Path, **over) -> dict:
    """A recipe that trains in well under a second: conditional CD with EMA on 500 points."""
    cfg = {
        "name": "tiny", "objective": "cd", "steps": 30, "batch_size": 32, "seed": 3, "output": str(output),
        "data": {"dataset": "half_planes", "options": {"n": 500}, "domain": [-3.5, 3.5]},
        "network": {"type": "mlp", "hidden": [16, 16]},
        "cd": {"steps": 5, "step_size": 0.01, "noise": "exact", "clip_grad": 0.0, "buffer_size": 200},
        "optim": {"lr": 1e-3, "ema": 0.9}, "checkpoint": {"every": 10}, "log": {"every": 5, "progress": False},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


def state_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every tensor a resume must restore, by name."""
    out = {f"model.{k}": v for k, v in trainer.net.state_dict().items()}
    if trainer.ema is not None:
        out.update({f"ema.{k}": v for k, v in trainer.ema.shadow.items()})
    for i, st in trainer.optimizer.state_dict()["state"].items():
        out.update({f"optim.{i}.{k}": v for k, v in st.items()})
    out.update({f"objective.{k}": v for k, v in trainer.objective.state().items()})
    out["rng.torch"] = torch.get_rng_state()
    return out


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        bits_a, bits_b = a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8)
        assert a[k].dtype == b[k].dtype and torch.equal(bits_a, bits_b), k


@pytest.mark.parametrize("objective", ["cd", "dsm"])
def test_checkpoint_round_trip_restores_every_bit_and_the_future(tmp_path, objective):
    """Restored state equals the saved state bit for bit, and both continue to identical weights."""
    a = Trainer(config_from_dict(tiny(tmp_path / "a", objective=objective, steps=20)))
    a.run(stop_after=12)
    saved = state_of(a)
    path = a.save()
    b = Trainer(config_from_dict(tiny(tmp_path / "a", objective=objective, steps=20)))
    b.restore(path)
    assert b.step == 12
    assert_bit_identical(state_of(b), saved)
    rng = torch.get_rng_state()
    a.run()
    torch.set_rng_state(rng)
    b.run()
    assert_bit_identical({k: v for k, v in state_of(a).items() if k != "rng.torch"},
                         {k: v for k, v in state_of(b).items() if k != "rng.torch"})
    meta = ckpt.read_metadata(path)
    assert meta["kind"] == "training" and meta["step"] == 12 and meta["values"] == ["left", "right", "down", "up"]


def _toml(cfg: dict) -> str:
    def value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += [f"[{k}]"] + [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def test_resume_after_kill_9_loses_at_most_one_interval_and_matches_an_uninterrupted_run(tmp_path):
    every, total = 20, 240  # the kill comes a few steps after step 40: far from the end even on a busy machine
    cfg = tiny(tmp_path / "run", steps=total, checkpoint={"every": every}, log={"every": 1, "progress": False},
               cd={"steps": 25})
    (tmp_path / "r.toml").write_text(_toml(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "composer.training", str(tmp_path / "r.toml"), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = ckpt.checkpoint_path(tmp_path / "run", 2 * every)
    deadline = time.monotonic() + 120
    try:
        while not target.exists():
            assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    reached = logged[-1]["step"]
    latest = ckpt.latest_checkpoint(tmp_path / "run")
    resumed_from = ckpt.read_metadata(latest)["step"]
    assert reached < total, "the kill came after the end of training"
    assert resumed_from >= 2 * every and reached - resumed_from <= every  # at most one interval lost

    result = train(tmp_path / "r.toml", resume=True, progress=False)
    assert result.step == total
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, total + 1))  # lines logged after the checkpoint were dropped on resume

    reference = train(tiny(tmp_path / "ref", steps=total, checkpoint={"every": every},
                           log={"every": 1, "progress": False}, cd={"steps": 25}))
    resumed = ckpt.load_checkpoint(result.expert_path)[0]
    straight = ckpt.load_checkpoint(reference.expert_path)[0]
    assert_bit_identical(resumed, straight)


def _plant_nan(trainer: Trainer, at_step: int, times: int = 1) -> list[int]:
    """Make update number ``at_step`` (1-based, as logged) produce a NaN loss, ``times`` times."""
    planted: list[int] = []
    loss_fn = trainer.objective.loss

    def loss(model, net, x, y, step):
        value, stats = loss_fn(model, net, x, y, step)
        if step + 1 == at_step and len(planted) < times:
            planted.append(step + 1)
            value = value * float("nan")
            stats = {**stats, "loss": value.detach()}
        return value, stats

    trainer.objective.loss = loss
    return planted


def test_guard_aborts_on_a_planted_divergence(tmp_path):
    trainer = Trainer(config_from_dict(tiny(tmp_path / "run")))
    _plant_nan(trainer, at_step=13)
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step 13: \|loss\| is nan"):
        trainer.run()
    # nothing after the divergence was checkpointed
    assert ckpt.read_metadata(ckpt.latest_checkpoint(tmp_path / "run"))["step"] == 10


def test_guard_rolls_back_to_the_last_checkpoint_with_half_the_learning_rate(tmp_path):
    trainer = Trainer(config_from_dict(tiny(tmp_path / "run", guard={"action": "rollback"})))
    planted = _plant_nan(trainer, at_step=13)
    result = trainer.run()
    assert planted == [13] and result.step == 30
    assert result.report["rollbacks"] == 1
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    assert all(torch.isfinite(p).all() for p in result.network.parameters())
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]  # step 15 was re-done after the rollback to 10: logged once


def test_guard_gives_up_when_the_rollbacks_are_spent_and_checks_bounds(tmp_path, capsys):
    trainer = Trainer(config_from_dict(tiny(tmp_path / "run", guard={"action": "rollback", "max_rollbacks": 1})))
    planted = _plant_nan(trainer, at_step=3, times=5)  # step 3 diverges every time it comes
    with pytest.raises(TrainingDivergedError, match="diverged at step 3"):
        trainer.run()
    assert planted == [3, 3] and trainer.guard.rollbacks == 1
    assert "rolled back to step 0 with lr x0.5" in capsys.readouterr().out
    bounded = Trainer(config_from_dict(tiny(tmp_path / "b", guard={"max_energy": 1e-9})))
    with pytest.raises(TrainingDivergedError, match=r"step 1: \|mean E\(x\+\)\| = .* exceeds 1e-09"):
        bounded.run()


def test_resume_checks_the_recipe(tmp_path):
    train(tiny(tmp_path / "run", steps=10))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(tiny(tmp_path / "run", steps=20))
    with pytest.raises(CheckpointError, match="does not match this recipe: its network"):
        train(tiny(tmp_path / "run", steps=20, network={"type": "mlp", "hidden": [8]}), resume=True)
    with pytest.raises(CheckpointError, match="its data_fingerprint"):
        train(tiny(tmp_path / "run", steps=20, data={"options": {"n": 400}}), resume=True)
    done = train(tiny(tmp_path / "run", steps=20), resume=True)
    assert done.step == 20 and ckpt.read_metadata(done.expert_path)["kind"] == "expert"


# -- recipes ------------------------------------------------------------------------------------------
def test_recipe_defaults_and_errors(tmp_path):
    cfg = config_from_dict({"data": {"dataset": "eight_gaussians"}})
    assert (cfg.cd.steps, cfg.cd.step_size, cfg.cd.noise, cfg.cd.clip_grad) == (60, 10.0, 0.005, 0.01)  # IGEBM
    assert (cfg.cd.buffer_size, cfg.cd.reinit_prob, cfg.optim.lr, cfg.optim.betas) == (10000, 0.05, 1e-4, [0.0, 0.999])
    dsm = config_from_dict({"objective": "dsm", "data": {"dataset": "eight_gaussians"}})
    assert (dsm.optim.lr, dsm.optim.betas) == (1e-3, [0.9, 0.999])
    with pytest.raises(ConfigError, match=r"unknown setting .step_szie. in \[cd\] \(did you mean: step_size"):
        config_from_dict({"data": {"dataset": "x"}, "cd": {"step_szie": 1}})
    with pytest.raises(ConfigError, match="exactly one of 'dataset'"):
        config_from_dict({"data": {}})
    with pytest.raises(ConfigError, match="objective must be one of cd, dsm, discriminative, got 'nce'"):
        config_from_dict({"objective": "nce", "data": {"dataset": "x"}})
    (tmp_path / "bad.toml").write_text("steps = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.toml").write_text('output = "out"\n[data]\npath = "d.npz"\n')
    rel = load_config(tmp_path / "sub" / "r.toml")
    assert rel.output == str(tmp_path / "sub" / "out") and rel.data.path == str(tmp_path / "sub" / "d.npz")


# -- data ------------------------------------------------------------------------------------------------
def test_npz_npy_and_image_folder_sources(tmp_path):
    from PIL import Image

    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    np.savez(tmp_path / "d.npz", points=x, lab=np.arange(50) % 3)
    cfg = config_from_dict({"data": {"path": str(tmp_path / "d.npz"), "key": "points", "labels": "lab",
                                     "values": ["a", "b", "c"]}})
    data = prepare_data(cfg.data)
    assert torch.equal(data.x, torch.from_numpy(x)) and data.values == ["a", "b", "c"] and data.dequantize == 0.0
    lo, hi = data.domain  # data range widened by 10% per side
    torch.testing.assert_close(lo, torch.from_numpy(x.min(0) - 0.1 * (x.max(0) - x.min(0))))
    torch.testing.assert_close(hi, torch.from_numpy(x.max(0) + 0.1 * (x.max(0) - x.min(0))))
    np.save(tmp_path / "d.npy", x)
    assert prepare_data(config_from_dict({"data": {"path": str(tmp_path / "d.npy")}}).data).y is None
    for value, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "img" / value).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (6, 6), colour).save(tmp_path / "img" / value / f"{i}.png")
    images = prepare_data(config_from_dict({"data": {"path": str(tmp_path / "img"), "image_size": 4}}).data)
    assert images.x.shape == (4, 3, 4, 4) and images.values == ["blue", "red"] and images.y.tolist() == [0, 0, 1, 1]
    assert images.dequantize == 1 / 256 and images.domain[0].item() == 0 and images.domain[1].item() == 1
    assert images.x[0, 2].eq(1).all() and images.x[2, 0].eq(1).all()  # blue, then red, scaled to [0, 1]
    with pytest.raises(ConfigError, match="has no array 'nope'"):
        prepare_data(config_from_dict({"data": {"path": str(tmp_path / "d.npz"), "key": "nope"}}).data)
    with pytest.raises(ConfigError, match="labels must lie in"):
        prepare_data(config_from_dict({"data": {"path": str(tmp_path / "d.npz"), "key": "points", "labels": "lab",
                                                "values": ["a", "b"]}}).data)


def test_batches_are_a_function_of_the_step_and_ranks_split_the_global_batch():
    data = prepare_data(config_from_dict({"data": {"dataset": "eight_gaussians", "options": {"n": 100},
                                                   "dequantize": 0.01}}).data)
    whole = Batches(data, 40, seed=5)
    first = [whole(s)[0] for s in range(6)]
    assert torch.equal(Batches(data, 40, seed=5)(3)[0], first[3])  # no hidden state
    epoch = torch.cat([whole.indices(s) for s in range(5)])[:100]  # 2.5 batches per epoch: each row once
    assert sorted(epoch.tolist()) == list(range(100))
    ranks = [Batches(data, 40, seed=5, rank=r, world_size=2) for r in range(2)]
    for s in range(6):
        assert torch.equal(torch.cat([r(s)[0] for r in ranks]), first[s])  # dequantisation noise included
    noise = first[0] - data.x[whole.indices(0)]
    assert noise.min() >= 0 and noise.max() < 0.01 and noise.std() > 0.002
    with pytest.raises(ConfigError, match="not divisible"):
        Batches(data, 41, seed=0, rank=0, world_size=2)


def test_image_recipe_runs_end_to_end_with_the_igebm_defaults(tmp_path):
    """A conv energy on 8-bit images: [0, 1] domain, dequantisation, IGEBM sampler defaults, PNG grids."""
    rng = np.random.default_rng(0)
    images = (rng.random((16, 1, 8, 8)) * 255).astype(np.uint8)
    np.savez(tmp_path / "img.npz", x=images)
    result = train({
        "name": "digits", "steps": 4, "batch_size": 8, "output": str(tmp_path / "run"),
        "data": {"path": str(tmp_path / "img.npz")},
        "network": {"type": "conv", "channels": [4, 8], "spectral_norm": True},
        "cd": {"steps": 5}, "optim": {"ema": 0.99}, "log": {"every": 2, "image_every": 2, "progress": False},
    })
    assert result.report["recipe"]["cd"]["step_size"] == 10.0 and result.report["recipe"]["cd"]["clip_grad"] == 0.01
    assert (tmp_path / "run" / "negatives-00000002.png").is_file() and (tmp_path / "run" / "negatives.png").is_file()
    expert = result.expert()
    assert expert.event_shape == (1, 8, 8)
    assert expert.domain[0].item() == 0.0 and expert.domain[1].item() == 1.0
    meta = ckpt.read_metadata(result.expert_path)
    assert meta["network"]["type"] == "conv" and meta["recipe"]["data"]["dequantize"] is None
    assert torch.isfinite(expert(torch.rand(3, 1, 8, 8))).all()


class Quadratic(torch.nn.Module):
    """A plugin's network: ``E(x) = 0.5 * ||(x - m) * s||^2`` with learnable ``m``, ``s``."""

    def __init__(self, event_shape=(2,), num_classes=0, noise_conditional=False, init_scale=1.0):
        super().__init__()
        self.noise_conditional = noise_conditional
        self.m = torch.nn.Parameter(torch.zeros(*event_shape))
        self.s = torch.nn.Parameter(torch.full(tuple(event_shape), float(init_scale)))
        self.config = {"type": "quadratic", "event_shape": list(event_shape), "num_classes": num_classes,
                       "noise_conditional": noise_conditional, "init_scale": init_scale}

    def forward(self, x, cond=None, sigma=None):
        return 0.5 * ((x - self.m) * self.s).square().sum(-1)


def test_a_plugin_network_trains_checkpoints_and_reloads(tmp_path):
    import composer
    from composer.plugins import build_registry
    from composer.training import expert_from_checkpoint

    class NetPlugin:
        @composer.hookimpl
        def register_networks(self, register):
            register("quadratic", Quadratic)

    registry = build_registry([NetPlugin()], entry_points=False)
    points = np.random.default_rng(0).normal(loc=[1.0, -1.0], scale=0.5, size=(400, 2)).astype(np.float32)
    recipe = tiny(tmp_path / "q", data={"dataset": None, "path": None, "domain": [-4, 4]},
                  optim={"lr": 0.05, "ema": 0.0}, steps=200, cd={"steps": 20, "step_size": 0.02, "l2": 0.0})
    recipe["network"] = {"type": "quadratic", "init_scale": 0.5}
    result = train(recipe, data={"x": points}, registry=registry)
    with pytest.raises(CheckpointError, match="unknown network type 'quadratic' \\(is its plugin installed\\?\\)"):
        expert_from_checkpoint(result.output, registry=build_registry(entry_points=False))
    expert = expert_from_checkpoint(result.output, registry=registry)
    # the learned Gaussian: mean near (1, -1), precision s^2 near 1 / 0.5^2 = 4
    net = expert.fn
    print("quadratic expert: mean", net.m.tolist(), "scale", net.s.abs().tolist())
    torch.testing.assert_close(net.m, torch.tensor([1.0, -1.0]), atol=0.2, rtol=0)
    torch.testing.assert_close(net.s.abs(), torch.tensor([2.0, 2.0]), atol=0.6, rtol=0)
