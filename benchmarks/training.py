"""Benchmark: one CD iteration of composer's trainer against a minimal hand-written CD loop.

The case of issue 4: MLP energy 2->128->128->1 (SiLU), batch 256 positives + 256 negatives,
20 unadjusted Langevin steps (step 0.01, exact noise, clamped to the domain) from a replay
buffer of 10,000 chains (5% re-initialised from uniform noise), the IGEBM loss
``mean E+ - mean E- + l2 (mean E+^2 + mean E-^2)`` and one Adam step (betas (0, 0.999)).

- ``composer``: ``Trainer.train_step`` of a recipe with exactly these settings (batches as a
  function of the step, the shared sampler with a ``ReplayBuffer``, the divergence guard, logged
  loss terms; no EMA, no checkpoint in the timed region).
- ``hand-written``: the same iteration written out in plain PyTorch, the shortest correct loop.

Both start from the same weights and run interleaved in one process (A, B, A, B, ...), each
repeat timing ``--iters`` iterations of each; the figure is the median over repeats of the
paired ratio composer / hand-written (target <= 1.05). A second line times the negatives alone
(``composer.sampling.sample`` with the buffer vs the hand-written 20-step loop), which shows how
much of the difference is the sampler's. As in ``benchmarks/sampler.py``, glibc's
malloc thresholds are pinned (``--default-malloc`` keeps them) and one CPU thread is used.

Usage: ``python benchmarks/training.py [--repeats 15] [--iters 10] [--device cpu|cuda] [--threads 1]``
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time

import torch

from composer.training.config import config_from_dict
from composer.training.data import eight_gaussians, prepare_data
from composer.training.trainer import Trainer

BATCH, STEPS, STEP, CAPACITY, REINIT, L2, LR = 256, 20, 0.01, 10_000, 0.05, 0.1, 1e-4
LOW, HIGH = -3.5, 3.5


def pin_malloc() -> bool:
    """Fix glibc's mmap/trim thresholds so freed activations stay mapped (see benchmarks/sampler.py)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, 32 * 2**20)) and bool(libc.mallopt(-1, 2**30))
    except (OSError, AttributeError):
        return False


def make_trainer(device: str, output: str) -> Trainer:
    cfg = config_from_dict({
        "name": "bench", "objective": "cd", "steps": 10**9, "batch_size": BATCH, "seed": 0, "output": output,
        "device": device, "data": {"dataset": "eight_gaussians", "domain": [LOW, HIGH]},
        "network": {"type": "mlp", "hidden": [128, 128], "activation": "swish"},
        "cd": {"steps": STEPS, "step_size": STEP, "noise": "exact", "clip_grad": 0.0, "buffer_size": CAPACITY,
               "reinit_prob": REINIT, "l2": L2},
        "optim": {"lr": LR, "betas": [0.0, 0.999]},
        "log": {"progress": False},
    })
    data = prepare_data(cfg.data, arrays=eight_gaussians())
    return Trainer(cfg, data)


class HandWritten:
    """The same CD iteration in plain PyTorch (same initial weights as ``net``)."""

    def __init__(self, net: torch.nn.Module, data: torch.Tensor, device: str):
        import copy

        self.net = copy.deepcopy(net)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LR, betas=(0.0, 0.999))
        self.data = data.to(device)
        self.g = torch.Generator(device=device).manual_seed(1)
        self.buffer = LOW + (HIGH - LOW) * torch.rand(CAPACITY, 2, generator=self.g, device=device)
        self.noise = math.sqrt(2 * STEP)
        self.device = device

    def negatives(self) -> torch.Tensor:
        g, dev = self.g, self.device
        slots = torch.randint(CAPACITY, (BATCH,), generator=g, device=dev)
        fresh = LOW + (HIGH - LOW) * torch.rand(BATCH, 2, generator=g, device=dev)
        reinit = torch.rand(BATCH, generator=g, device=dev) < REINIT
        x = torch.where(reinit[:, None], fresh, self.buffer[slots])
        for _ in range(STEPS):
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.net(x).sum(), x)
            x = (x.detach() - STEP * grad + self.noise * torch.randn(x.shape, generator=g, device=dev)).clamp(LOW, HIGH)
        self.buffer[slots] = x
        return x

    def iteration(self) -> None:
        g, dev = self.g, self.device
        x = self.negatives()
        pos = self.data[torch.randint(len(self.data), (BATCH,), generator=g, device=dev)]
        e = self.net(torch.cat([pos, x]))
        e_pos, e_neg = e[:BATCH], e[BATCH:]
        loss = e_pos.mean() - e_neg.mean() + L2 * (e_pos.square().mean() + e_neg.square().mean())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def timed(fn, iters: int, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--iters", type=int, default=10, help="iterations per timed block")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--default-malloc", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pinned = False if args.default_malloc else pin_malloc()
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(args.device, out)
        hand = HandWritten(trainer.net, trainer.data.x, args.device)
        step = [0]

        def ours() -> None:
            trainer.train_step(step[0])
            step[0] += 1

        for _ in range(3):  # warm-up: fill caches, first-call costs
            ours()
            hand.iteration()
        def ours_negatives() -> None:
            trainer.objective.negatives(trainer.net, BATCH)

        cases = {"CD iteration": (hand.iteration, ours), "negatives only": (hand.negatives, ours_negatives)}
        rows: dict[str, list[tuple[float, float, float]]] = {case: [] for case in cases}
        for r in range(args.repeats):
            for case, (theirs, mine) in cases.items():
                pair = [("hand", theirs), ("composer", mine)]
                if r % 2:
                    pair.reverse()
                t = {name: timed(fn, args.iters, args.device) for name, fn in pair}
                rows[case].append((t["hand"], t["composer"], t["composer"] / t["hand"]))
        if trainer.guard.check():
            raise SystemExit(f"the benchmark run diverged: {trainer.guard.check()}")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"thread(s), device {args.device}, malloc thresholds {'pinned' if pinned else 'default'}")
    print(f"batch {BATCH}, {STEPS} Langevin steps, buffer {CAPACITY}, MLP 2-128-128-1; "
          f"{args.repeats} repeats x {args.iters} iterations, interleaved")
    for case, got in rows.items():
        hand_ms = statistics.median(r[0] for r in got) * 1e3
        ours_ms = statistics.median(r[1] for r in got) * 1e3
        q = sorted(r[2] for r in got)
        print(f"{case:15} hand-written {hand_ms:7.2f} ms   composer {ours_ms:7.2f} ms   "
              f"median ratio {statistics.median(q):.3f} (min {q[0]:.3f}, max {q[-1]:.3f})")
    print("target: CD iteration ratio <= 1.05")


if __name__ == "__main__":
    main()
