"""Trust: no wrong answer with exit 0, resumes that never lose a run, every bad input one clear line.

The catalogue of issue 13 as tests: a table of bad command lines (each must exit non-zero with one
line on stderr naming the problem, never "internal error" or a traceback), the sampler's guard on
runs that go wrong while finite (and its silence on valid runs), resume from the newest valid
checkpoint, and real ``kill -9`` of a process writing a PNG.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import composer
from composer import cli
from composer.errors import CompositionError, SamplingDivergedError, UnboundedEnergyError
from composer.sampling import sample
from composer.sampling.guard import check_run
from composer.training import checkpoint as ckpt
from composer.training.trainer import train

G = "toy.gaussian(mean=[0,0], std=1)"
UNBOUNDED = f"{G} & 5 * ~toy.gaussian(mean=[0,0], std=0.5)"
RECIPE = """name = "eight"
objective = "cd"
steps = 30
batch_size = 32
output = "run"
{extra}
[data]
dataset = "eight_gaussians"
[network]
type = "mlp"
hidden = {hidden}
[cd]
steps = 5
step_size = 0.01
noise = "exact"
clip_grad = 0.0
buffer_size = 256
[checkpoint]
every = 10
keep = 5
[log]
every = 5
progress = false
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def recipe(folder: Path, extra: str = "", hidden: str = "[16, 16]", name: str = "r.toml") -> str:
    path = folder / name
    text = RECIPE.format(extra=extra, hidden=hidden)
    key = extra.split("=")[0].strip()
    if key in ("steps", "batch_size"):  # replace the template's line
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key} = ")) + "\n"
        text = extra + "\n" + text
    path.write_text(text)
    return str(path)


def bad_checkpoint(folder: Path, **changes) -> str:
    """A small expert checkpoint (MLP 2 -> 4 -> 1) whose metadata is then spoiled by ``changes``."""
    from composer.nets import build_network

    config = {"type": "mlp", "event_shape": [2], "hidden": [4]}
    weights = {f"model.{k}": v for k, v in build_network(config).state_dict().items()}
    meta = {"kind": "expert", "name": "x", "network": config, "event_shape": [2], "domain": None,
            "objective": "cd", "values": None, "step": 3, **changes}
    path = folder / "bad.safetensors"
    ckpt.save_checkpoint(path, weights, meta)
    return str(path)


def files(tmp: Path) -> dict[str, str]:
    """Inputs of the table, written once per test."""
    np.save(tmp / "nan.npy", np.full((2, 3, 32, 32), np.nan, np.float32))
    np.save(tmp / "u8.npy", np.full((2, 3, 32, 32), 200, np.uint8))
    np.save(tmp / "str.npy", np.array(["a", "b"]))
    np.save(tmp / "zero.npy", np.array(1.0, np.float32))
    np.save(tmp / "big.npy", np.full((2, 3, 32, 32), 255.0, np.float32))
    (tmp / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    (tmp / "bin.toml").write_bytes(bytes(range(256)))
    (tmp / "double.toml").write_text(f'd0 = "{G}"\n' + "".join(f'd{i} = "d{i - 1} & d{i - 1}"\n' for i in range(1, 41)))
    (tmp / "empty_run").mkdir()
    (tmp / "adir.npz").mkdir()
    return {"tmp": str(tmp)}


# (arguments, what stderr must say); {tmp} is the test's folder, {toml:...} a recipe written there
BAD_INPUTS = [
    # 1. wrong samples with exit 0
    (["sample", UNBOUNDED, "-n", "50"], "unbounded below"),
    (["sample", UNBOUNDED, "-n", "50", "--sampler", "mala"], "unbounded below"),
    (["sample", UNBOUNDED, "-n", "50", "--sampler", "hmc"], "unbounded below"),
    (["sample", G, "-n", "50", "--step-size", "2.02"], "exploded"),
    (["sample", G, "-n", "50", "--sampler", "mala", "--step-size", "1000"],
     "acceptance collapsed to 0% (step size 1000)"),
    (["sample", f"{G} & ~{G}", "-n", "50"], "defines no distribution"),
    (["infer", "{tmp}/nan.npy", "--family", "shapes.color"], "NaN or infinite values in 2 of 2 inputs"),
    (["infer", "{tmp}/u8.npy", "--family", "shapes.color"], "holds uint8 values [200, 200]"),
    (["infer", "{tmp}/big.npy", "--family", "shapes.color"], "outside the experts' domain"),
    # 3 and 4. outputs checked before the work; internal errors and misleading messages
    (["sample", G, "--out", "{tmp}/no/such/dir/x.npz"], "does not exist"),
    (["sample", G, "--out", "/proc/x.npz"], "cannot write in output folder '/proc'"),
    (["sample", G, "--out", "{tmp}/x.jpg"], "must end in .npz or .png"),
    (["sample", G, "--out", "{tmp}/adir.npz"], "is a directory"),
    (["sample", G, "--out", "{tmp}/x.npz", "--trace", "{tmp}/no/t.png"], "does not exist"),
    (["dataset", "eight_gaussians", "--out", "{tmp}/no/x.npz"], "does not exist"),
    (["dataset", "eight_gaussians", "--out", "/proc/x.npz"], "cannot write"),
    (["dataset", "eight_gaussians", "--split", "train", "--out", "{tmp}/d.npz"], "takes no --split"),
    (["train", "{toml:}", "--output", "/proc/x"], "cannot write"),
    (["sample", G, "--device", "mps"], "device 'mps' is not usable"),
    (["sample", G, "--device", "meta"], "device 'meta' holds no data"),
    (["sample", G, "--device", "gpu0"], "unknown device 'gpu0'"),
    (["sample", G, "--device", "cuda:99"], "cuda"),
    (["train", "{toml:}", "--device", "mps"], "device 'mps' is not usable"),
    (["train", "{toml:}", "--device", "meta"], "device 'meta' holds no data"),
    (["sample", G, "--seed", str(2**64)], "Invalid value for '--seed'"),
    (["sample", G, "--seed", "-1"], "Invalid value for '--seed'"),
    (["dataset", "eight_gaussians", "--seed", "-1", "--out", "{tmp}/d.npz"], "Invalid value for '--seed'"),
    (["train", "{toml:}", "--seed", str(2**64)], "Invalid value for '--seed'"),
    (["sample", G, "-n", str(10**13)], "GiB"),
    (["dataset", "eight_gaussians", "-n", str(10**13), "--out", "{tmp}/d.npz"], "MemoryError"),
    (["train", "{toml:steps = \"abc\"}"], "'steps' in the top level must be an integer, got 'abc'"),
    (["train", "{toml:seed = \"zero\"}"], "'seed' in the top level must be an integer"),
    (["train", "{toml:batch_size = 1.5}"], "must be an integer, got 1.5"),
    (["train", "{toml:[optim]\nlr = \"fast\"}"], "'lr' in [optim] must be a number"),
    (["train", "{toml:hidden=[-8]}"], "[network] cannot be built"),
    (["train", "{tmp}/bin.toml"], "not a text file"),
    (["train", "--resume", "{tmp}/empty_run"], "no recipe.json and no checkpoint"),
    (["show", "ckpt.load(path=\"{bad:sigmas}\")"], "'sigmas' must be a list of positive numbers"),
    (["show", "ckpt.load(path=\"{bad:step}\")"], "'step' must be a non-negative integer, got 'abc'"),
    (["show", "ckpt.load(path=\"{bad:version}\")"], "format version must be a positive integer, got '1'"),
    (["show", "ckpt.load(path=\"{bad:hidden}\")"], "has shape [4, 2] but the network config needs [60000, 2]"),
    (["infer", "{tmp}/str.npy", "--family", "shapes.color"], "holds <U1 values"),
    (["infer", "{tmp}/zero.npy", "--family", "shapes.color"], "array of shape ()"),
    (["infer", "{tmp}/corrupt.npz", "--family", "shapes.color"], "cannot read"),
    (["show", "-2 * " + G], "a weight must be a positive number"),
    # 5. resources from untrusted input
    (["show", "d40", "--defs", "{tmp}/double.toml"], "expands to 1,099,511,627,776 experts"),
]


def _expand(arg: str, tmp: Path) -> str:
    if arg.startswith("{toml:"):
        extra = arg[len("{toml:"):-1]
        if extra.startswith("hidden="):
            return recipe(tmp, hidden=extra[len("hidden="):], name="h.toml")
        return recipe(tmp, extra=extra, name=f"r{abs(hash(extra))}.toml")
    if "{bad:" in arg:
        kind = arg.split("{bad:")[1].split("}")[0]
        changes = {"sigmas": {"sigmas": ["x"]}, "step": {"step": "abc"}, "version": {"version": "1"},
                   "hidden": {"network": {"type": "mlp", "event_shape": [2], "hidden": [60000, 60000]}}}[kind]
        return arg.replace("{bad:" + kind + "}", bad_checkpoint(tmp, **changes))
    return arg.replace("{tmp}", str(tmp))


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a)[:60] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    files(tmp_path)
    argv = [_expand(a, tmp_path) for a in args]
    if argv[0] == "sample":
        argv += ["-q"] + ([] if "--out" in argv else ["--out", str(tmp_path / "s.npz")])
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), err
    assert "internal error" not in err and "Traceback" not in err, err
    assert message in lines[0], err
    # one line; a located error in the composition language adds its caret drawing
    assert len(lines) == 1 or (len(lines) == 3 and lines[2].strip() == "^"), err
    assert not (tmp_path / "s.npz").exists()


def test_upper_case_suffix_writes_an_npz(tmp_path, capsys):
    out = tmp_path / "x.NPZ"
    assert cli.main(["sample", G, "-n", "10", "--steps", "5", "-q", "--out", str(out)]) == 0
    with np.load(out) as data:
        assert data["x"].shape == (10, 2)


def test_a_chain_of_400_definitions_builds(tmp_path, capsys):
    defs = tmp_path / "chain.toml"
    defs.write_text(f'd0 = "{G}"\n' + "".join(f'd{i} = "d{i - 1} & {G}"\n' for i in range(1, 401)))
    assert cli.main(["show", "d400", "--defs", str(defs)]) == 0
    assert "product of 401 experts" in capsys.readouterr().out


# -- the guard: runs gone wrong while finite ---------------------------------------------------------
class Bowl(composer.Energy):
    """E(x) = ||x||^2 / (2 std^2)."""

    def __init__(self, std=1.0):
        super().__init__((2,))
        self.std = std

    def forward(self, x):
        return 0.5 * (x ** 2).sum(-1) / self.std ** 2


class Broken(composer.Energy):
    def __init__(self, kind):
        super().__init__((2,), label=f"broken.{kind}")
        self.kind = kind

    def forward(self, x):
        if self.kind == "keyerror":
            raise KeyError("weights")
        return x.sum()  # a scalar: would be broadcast silently inside a product


@pytest.mark.parametrize("sampler", ["langevin", "mala", "hmc"])
def test_unbounded_compositions_fail_before_sampling(sampler):
    with pytest.raises(UnboundedEnergyError, match="unbounded below"):
        sample(Bowl() & 5 * ~Bowl(0.5), n=20, steps=50, sampler=sampler, seed=0)


def test_allow_unbounded_warns_and_samples():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = sample(Bowl() & 5 * ~Bowl(0.5), n=20, steps=50, sampler="mala", seed=0, allow_unbounded=True)
    assert any("unbounded below" in str(w.message) for w in caught) and r.x.shape == (20, 2)


def test_bounded_negations_are_not_flagged():
    # 1/2 - 0.5/8 > 0: a negation weaker than the positive expert is bounded below (N(0, 8/7 I) exactly)
    r = sample(Bowl() & 0.5 * ~Bowl(2.0), n=4000, steps=400, sampler="mala", step_size=0.5, seed=0)
    # the variance per coordinate is 8/7; its standard error with 4000 chains is ~0.03
    assert abs(float(r.x.var(0).mean()) - 8 / 7) < 0.1


def test_absurd_step_sizes_fail_clearly():
    with pytest.raises(SamplingDivergedError, match="exploded"):
        sample(Bowl(), n=50, steps=500, step_size=2.02, seed=0)
    with pytest.raises(SamplingDivergedError, match=r"mala acceptance collapsed to 0% \(step size 1000\)"):
        sample(Bowl(), n=50, steps=200, sampler="mala", step_size=1000.0, seed=0)
    with pytest.raises(SamplingDivergedError, match="after adaptation"):
        sample(Bowl(), n=50, steps=100, sampler="hmc", step_size=1000.0, warmup=30, target_accept=1e-9, seed=0)


def test_a_constant_energy_is_no_distribution():
    with pytest.raises(SamplingDivergedError, match="defines no distribution"):
        sample(Bowl() & ~Bowl(), n=20, steps=50, seed=0)


@pytest.mark.parametrize("kind, message", [("keyerror", "expert broken.keyerror failed .* KeyError"),
                                           ("scalar", r"returned energies of shape \(\)")])
def test_a_broken_expert_is_named(kind, message):
    with pytest.raises(CompositionError, match=message):
        sample(Bowl() & Broken(kind), n=8, steps=5, seed=0)


@pytest.mark.parametrize("expr, kw", [
    ("toy.gaussian(mean=[0,0], std=1) & toy.gaussian(mean=[2,0], std=1)", {"n": 2000}),
    ("toy.mixture(means=[[-2,0],[2,0]], std=0.5)", {"sampler": "mala"}),
    ("toy.ring(radius=2, width=0.2) & toy.halfspace(normal=[0,1], offset=0)", {}),
    ("toy.gaussian(mean=[0,0], std=1)", {"sampler": "hmc"}),
    ("toy.gaussian(mean=[30,0], std=1)", {"step_size": 0.2}),  # converging from far away: energy falls a lot
    ("toy.gaussian(mean=[0,0], std=1) & 0.4 * ~toy.ring(radius=1, width=2)", {"sampler": "mala"}),
])
def test_valid_runs_are_not_flagged(expr, kw):
    from composer.language import parse

    r = sample(parse(expr), seed=0, **{"n": 300, **kw})
    assert torch.isfinite(r.x).all()


def _trace(energy_mean, acceptance=None):
    e = torch.as_tensor(energy_mean, dtype=torch.float32)
    t = {"energy_mean": e, "energy_min": e - 1, "energy_max": e + 1, "grad_norm": torch.ones_like(e)}
    if acceptance is not None:
        t["acceptance"] = torch.full_like(e, acceptance)
    return t


def test_trend_thresholds():
    steps = torch.arange(400, dtype=torch.float64)
    ok = dict(warmup=0, kernel_name="langevin", step_size=0.1, temperatures=[1.0] * 400, sigmas=None,
              domain_used=False, masked=False)
    with pytest.raises(SamplingDivergedError, match="exploded"):
        check_run(_trace(1.03 ** steps), **ok)
    check_run(_trace(5000 * torch.exp(-steps / 50) + 1), **ok)  # converging from far: falls, then levels off
    check_run(_trace(1 - torch.exp(-steps / 50)), **ok)  # equilibrating from the mode: rises, slowing down
    check_run(_trace(steps * 10), **ok)  # steady growth is not acceleration
    check_run(_trace(1.03 ** steps), **{**ok, "sigmas": [1.0] * 400})  # annealed runs: no trend test
    check_run(_trace(1.03 ** steps), **{**ok, "temperatures": torch.linspace(1, 0.01, 400)})
    check_run(_trace(torch.ones(400), acceptance=0.02), **{**ok, "kernel_name": "mala"})
    with pytest.raises(SamplingDivergedError, match="acceptance collapsed"):
        check_run(_trace(torch.ones(400), acceptance=0.005), **{**ok, "kernel_name": "mala"})


# -- resume ------------------------------------------------------------------------------------------
def test_resume_falls_back_to_the_newest_valid_checkpoint(tmp_path, capsys):
    path = recipe(tmp_path)
    first = train(path, progress=False)
    assert first.step == 30
    folder = tmp_path / "run"
    found = ckpt.list_checkpoints(folder)
    assert [int(p.stem[5:]) for p in found] == [0, 10, 20, 30]
    # the newest: one flipped bit in its weights; the one before: NaN (checksum fixed up, as a diverged model)
    raw = bytearray(found[-1].read_bytes())
    raw[-3] ^= 0x40
    found[-1].write_bytes(bytes(raw))
    tensors, meta = ckpt.load_checkpoint(found[-2])
    key = next(k for k in tensors if k.startswith("model."))
    tensors[key].view(-1)[0] = float("nan")
    kept = {k: v for k, v in meta.items() if k not in ("format", "version", "sha256")}
    ckpt.save_checkpoint(found[-2], tensors, kept)
    with open(folder / "log.jsonl", "a") as f:
        f.write('{"step": 31, "lo')  # torn by a kill
    seconds = ckpt.read_metadata(found[-3])["seconds"]
    assert seconds > 0
    code = cli.main(["train", "--resume", str(folder), "--steps", "40", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipping step-00000030" in captured.out and "skipping step-00000020" in captured.out
    assert "for 30 steps (resumed at step 10, now at 40)" in captured.err
    steps = [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 40
    report = json.loads((folder / "report.json").read_text())
    assert report["seconds"] > seconds and report["expert"] == "expert.safetensors"
    assert ckpt.read_metadata(folder / "expert.safetensors")["recipe"]["output"] == "."
    # killed during the export: the resume only exports, and the report keeps the seconds trained
    (folder / "expert.safetensors").unlink()
    (folder / "report.json").unlink()
    assert cli.main(["train", "--resume", str(folder), "--steps", "40", "-q"]) == 0
    again = json.loads((folder / "report.json").read_text())
    trained = ckpt.read_metadata(ckpt.checkpoint_path(folder, 40))["seconds"]  # not 0.0: the checkpoint has them
    assert again["steps"] == 40 and again["seconds"] >= trained > seconds
    assert "for 0 steps (resumed at step 40, now at 40)" in capsys.readouterr().err


def test_resume_refuses_when_no_checkpoint_is_valid(tmp_path, capsys):
    path = recipe(tmp_path)
    train(path, progress=False, steps=10)
    for p in ckpt.list_checkpoints(tmp_path / "run"):
        p.write_bytes(b"garbage")
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--steps", "20", "-q"]) == 1
    err = capsys.readouterr().err
    assert "no valid checkpoint" in err and "internal error" not in err
    assert not (tmp_path / "run" / "log.jsonl").read_text().count('"step": 1,') > 1


# -- a kill -9 while writing a PNG -------------------------------------------------------------------
WRITER = """
import sys, torch
from composer.figures import save_samples_png
x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
print("ready", flush=True)
while True:
    save_samples_png(x, sys.argv[1])
"""


def test_kill_9_during_png_writes_leaves_the_old_picture_or_the_new(tmp_path):
    from PIL import Image

    from composer.figures import save_samples_png

    target = tmp_path / "pic.png"
    save_samples_png(torch.zeros(1, 3, 8, 8), target)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    leftovers: list[str] = []
    # The writer writes back to back (~0.1-0.4 s each), so most kills land inside a write; one that lands
    # between two writes proves less, so try again (at most 8 times) until a kill leaves a temporary.
    for delay in (0.3, 0.45, 0.2, 0.6, 0.35, 0.5, 0.25, 0.7):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env, stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
            proc.stdout.close()
        with Image.open(target) as img:  # never a torn or empty file under the final name
            img.verify()
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "pic.png"]
        if leftovers:
            break
    from composer.atomic import remove_stale_temporaries

    assert leftovers  # a kill did land inside a write (its temporary is left behind)...
    assert {p.name for p in remove_stale_temporaries(tmp_path)} == set(leftovers)  # ...and is ours to clean up
