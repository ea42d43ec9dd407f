"""Data-parallel training: a real ``torchrun --nproc_per_node=2`` run with gloo on the CPU.

What is asserted:

- DSM (its per-step noise is a function of the step, drawn for the whole global batch, and each
  rank takes its rows): the 2-process run on global batch 64 ends with the weights of the
  single-process run on the same global batch, to 1e-5 (the only difference is the order of
  floating-point sums in DDP's gradient all-reduce), on both ranks.
- CD (each rank samples its own negatives from its own replay-buffer shard with its own
  generator, so the run is *not* the single-process run): both ranks end with bit-identical
  weights (DDP keeps them in sync), the checkpoint written by rank 0 holds both ranks'
  buffer shards (``buffer_size / 2`` chains each), and resuming it with a different number of
  processes is refused with a clear message.

The test takes about 10-20 s (two Python processes import torch and join a gloo group).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from composer import CheckpointError
from composer.training import checkpoint as ckpt
from composer.training import train

WORKER = """
import json, sys
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from composer.training import train

torch.set_num_threads(1)
recipes, out = json.loads(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo")
rank = dist.get_rank()
for name, cfg in recipes.items():
    result = train(cfg, progress=False)
    weights = {k: v.contiguous() for k, v in result.network.state_dict().items()}
    save_file(weights, f"{out}/{name}-rank{rank}.safetensors")
dist.destroy_process_group()
"""


def recipe(objective: str, output) -> dict:
    return {
        "name": f"ddp_{objective}", "objective": objective, "steps": 20, "batch_size": 64, "seed": 7,
        "output": str(output), "data": {"dataset": "eight_gaussians", "options": {"n": 1000}, "domain": [-3.5, 3.5]},
        "network": {"type": "mlp", "hidden": [32, 32]},
        "cd": {"steps": 10, "step_size": 0.002, "noise": "exact", "clip_grad": 0.0, "buffer_size": 400, "l2": 0.01},
        "dsm": {"sigma_max": 3.0, "sigma_min": 0.05, "num_sigmas": 10},
        "optim": {"lr": 1e-3}, "checkpoint": {"every": 10}, "log": {"every": 5, "progress": False},
    }


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    (folder / "worker.py").write_text(WORKER)
    recipes = {obj: recipe(obj, folder / obj) for obj in ("dsm", "cd")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(folder / "worker.py"), json.dumps(recipes), str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return folder


def test_two_gloo_processes_match_the_single_process_dsm_run(ddp_run, tmp_path):
    torch.set_num_threads(1)
    single = train(recipe("dsm", tmp_path / "single"), progress=False).network.state_dict()
    for rank in (0, 1):
        ranked = load_file(str(ddp_run / f"dsm-rank{rank}.safetensors"))
        assert set(ranked) == set(single)
        for k, v in single.items():
            torch.testing.assert_close(ranked[k], v, rtol=0, atol=1e-5, msg=f"rank {rank}: {k}")
    report = json.loads((ddp_run / "dsm" / "report.json").read_text())
    assert report["world_size"] == 2 and report["steps"] == 20


def test_two_gloo_processes_cd_keeps_ranks_in_sync_and_checkpoints_every_shard(ddp_run, tmp_path):
    r0 = load_file(str(ddp_run / "cd-rank0.safetensors"))
    r1 = load_file(str(ddp_run / "cd-rank1.safetensors"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    latest = ckpt.latest_checkpoint(ddp_run / "cd")
    tensors, meta = ckpt.load_checkpoint(latest)
    assert meta["step"] == 20 and meta["world_size"] == 2
    assert tensors["rank0.objective.buffer"].shape == (200, 2) and tensors["rank1.objective.buffer"].shape == (200, 2)
    assert not torch.equal(tensors["rank0.objective.buffer"], tensors["rank1.objective.buffer"])
    assert torch.isfinite(tensors["rank0.objective.buffer"]).all()
    weights = ckpt.prefixed(tensors, "model")
    for k in r0:
        assert torch.equal(weights[k], r0[k]), k
    with pytest.raises(CheckpointError, match="written by 2 processes; resume with the same number"):
        train(recipe("cd", ddp_run / "cd") | {"steps": 30}, resume=True, progress=False)
