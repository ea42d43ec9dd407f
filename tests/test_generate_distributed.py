"""``torchrun --nproc-per-node 2 -m composer generate``: two gloo processes on the CPU write the folder a
single process writes, byte for byte (shards and index.json). About 10-20 s (two Python processes import
torch and join a gloo group).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import composer

EXPR = "toy.gaussian(mean=[0,1], std=0.5) | toy.gaussian(mean=[0,-1], std=0.5)"
ARGS = {"n": 50, "shard_size": 8, "steps": 30, "seed": 11}


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_gloo_ranks_write_the_single_process_bytes(tmp_path):
    out = tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "composer",
           "generate", EXPR, "-n", str(ARGS["n"]), "--shard-size", str(ARGS["shard_size"]),
           "--steps", str(ARGS["steps"]), "--seed", str(ARGS["seed"]), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "rank 0 of 2" in proc.stderr  # the progress bar of rank 0: the run was distributed
    assert proc.stderr.count("wrote ") == 1  # one summary, by rank 0
    assert "rank 0 of 2: 4 made" in proc.stderr  # 7 shards: rank 0 makes 0, 2, 4, 6; rank 1 makes 1, 3, 5

    single = tmp_path / "single"
    r = composer.generate(EXPR, single, **ARGS)
    assert r.made == list(range(7))
    assert files(out) == files(single)
