"""Resume after a real ``kill -9``: a ``composer generate`` process is killed (SIGKILL) while it writes
shards; the same command then finishes the dataset, skipping the shards that were done, and the
folder is byte for byte the folder of an uninterrupted run. About 10-15 s (a Python process that
imports torch, ~12 shards of a toy composition at ~0.1-0.3 s each).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import composer
from composer.generation.manifest import read_record

EXPR = "toy.gaussian(mean=[1,0], std=0.5)"
ARGS = {"n": 1200, "shard_size": 100, "steps": 300, "seed": 5}


def test_kill_9_then_resume_gives_the_uninterrupted_bytes(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "composer", "generate", EXPR, "-n", str(ARGS["n"]), "--shard-size",
           str(ARGS["shard_size"]), "--steps", str(ARGS["steps"]), "--seed", str(ARGS["seed"]), "--out", str(out), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob("shard-*.npz"))) >= 3:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    shards = sorted(p.name for p in out.glob("shard-*.npz"))
    assert 3 <= len(shards) < 12, shards  # killed mid-run: some shards done, some not
    index_before = (out / "index.json").read_text()
    assert '"complete": false' in index_before
    done = [i for i in range(12) if read_record(out, i) is not None]
    assert done, "no shard record survived"

    resumed = composer.generate(EXPR, out, **ARGS)  # the same command again
    assert resumed.skipped == done and sorted(resumed.made + resumed.skipped) == list(range(12))
    assert not list(out.glob(".composer-tmp-*")) and not list(out.glob("shard-*.json"))

    reference = tmp_path / "uninterrupted"
    composer.generate(EXPR, reference, **ARGS)
    assert files(out) == files(reference)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
