"""Benchmark: do the default recipes return the README's 1-D and 2-D examples in the right proportions?

For every example, the exact share of each mode (and, where asked, a spread) is computed by quadrature of
``exp(-E)`` on a fine grid, and compared with ``n`` samples (default 4000) drawn by ``composer.sample`` with
the default recipe (what ``composer sample EXPR`` runs) and, for reference, with the built-in defaults alone
(``recipe=False``: unadjusted Langevin, step 0.01, 500 steps, the behaviour before SMC). A share passes
within 2 points; a log Z (estimated by SMC, exact by quadrature or in closed form) within 0.05 nats (an
example whose default recipe is not SMC is also sampled with ``sampler="smc"`` for its log Z).
Numbers are medians over ``--seeds`` seeds (default 3); "worst" is the largest deviation over the seeds. A
share passes when its median is within 2 points: a single run of even exact independent samples deviates
by more than 2 points with probability ~1% per mode at n = 4000 (binomial sd 0.8 points at 50%), and SMC's
shares spread ~1.3x more.

Usage: ``python benchmarks/exactness.py [--n 4000] [--seeds 3] [--eight runs/eight]``

``--eight DIR`` adds the trained eight-Gaussians expert of the README (``composer train eight.toml``), with
and without the upper half-space, sampled with ``--sampler smc`` (a trained checkpoint cannot tell that it is
multi-modal, so its default recipe is the one it was trained with).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

import composer

SCENES = {
    "upper": "toy.halfspace(normal=[0,1], offset=0)",
    "ring": "toy.ring(radius=2, width=0.2)",
    "scene": "ring & upper | toy.gaussian(mean=[0,-2], std=0.3)",
}


@dataclass
class Example:
    """A README example: its expression, mode labels ``x -> (B,) int`` and the grid box ``[-L, L]^d``."""

    name: str
    expr: str
    labels: Callable[[Tensor], Tensor]
    modes: list[str]
    half_width: float = 6.0
    spread: Callable[[Tensor], Tensor] | None = None  # a per-sample statistic whose std is compared
    exact_log_z: float | None = None  # closed form, else quadrature
    sampler: str | None = None
    extra: dict = field(default_factory=dict)


def side(x: Tensor) -> Tensor:
    return (x[:, 0] > 0).long()


def examples() -> list[Example]:
    return [
        Example("1-D mixture node", "toy.gaussian(mean=-2, std=0.5) | toy.gaussian(mean=2, std=1)", side,
                ["x < 0", "x > 0"], 8.0),
        Example("1-D toy.mixture", "toy.mixture(means=[[-2], [2]], std=[0.5, 1.0], weights=[0.35, 0.65])", side,
                ["x < 0", "x > 0"], 8.0, exact_log_z=0.0),
        Example("scene (scenes.toml)", "scene", lambda x: (x[:, 1] < -1).long(), ["half-ring", "gaussian"], 5.0),
        Example("ring & halfspace", "toy.ring(radius=2, width=0.2) & toy.halfspace(normal=[0,1], offset=0)", side,
                ["left", "right"], 4.0, spread=lambda x: x.norm(dim=1)),
        Example("ring(width=0.1)", "toy.ring(width=0.1)", side, ["left", "right"], 2.0,
                spread=lambda x: x.norm(dim=1)),
        Example("toy.mixture (README)", "toy.mixture(means=[[-2,0],[2,0]], std=0.5)", side, ["left", "right"], 5.0,
                exact_log_z=0.0),
        Example("3-mode toy.mixture",
                "toy.mixture(means=[[-2,0],[2,0],[0,2.5]], std=[0.3,0.6,0.4], weights=[0.2,0.5,0.3])",
                lambda x: torch.where(x[:, 1] > 1.25, 2, (x[:, 0] > 0).long()), ["left", "right", "top"], 5.0,
                exact_log_z=0.0),
        Example("product of Gaussians (README)",
                "toy.gaussian(mean=[0,0], std=1) & toy.gaussian(mean=[2,0], std=1)", side, ["x < 0", "x > 0"], 7.0,
                exact_log_z=math.log(math.pi) - 1.0),
    ]


def quadrature(energy: composer.Energy, ex: Example, dim: int, points: int = 1601) -> dict[str, object]:
    """Exact shares, log Z and spread by the midpoint rule on ``[-L, L]^dim`` (float64)."""
    e64 = energy.to(torch.float64)
    g = torch.linspace(-ex.half_width, ex.half_width, points, dtype=torch.float64)
    cell = float(g[1] - g[0]) ** dim
    grid = g[:, None] if dim == 1 else torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        energies = torch.cat([e64(grid[i:i + 250_000]) for i in range(0, grid.shape[0], 250_000)])
    log_p = -energies
    log_z = float(torch.logsumexp(log_p, 0)) + math.log(cell)
    w = torch.softmax(log_p, 0)
    labels = ex.labels(grid)
    shares = [float(w[labels == k].sum()) for k in range(len(ex.modes))]
    out: dict[str, object] = {"shares": shares, "log_z": log_z}
    if ex.spread is not None:
        s = ex.spread(grid)
        mean = float((w * s).sum())
        out["spread"] = math.sqrt(float((w * (s - mean) ** 2).sum()))
    energy.to(torch.float32)
    return out


def measure(energy: composer.Energy, ex: Example, n: int, seed: int, recipe: bool) -> dict[str, object]:
    t0 = time.process_time()
    kwargs = {"sampler": ex.sampler} if (ex.sampler and recipe) else {}
    r = composer.sample(energy, n=n, seed=seed, recipe=recipe, **kwargs)
    labels = ex.labels(r.x)
    out: dict[str, object] = {"shares": [float((labels == k).float().mean()) for k in range(len(ex.modes))],
                              "sampler": r.sampler, "cpu": time.process_time() - t0,
                              "log_z": r.log_z, "log_z_se": r.log_z_se}
    if ex.spread is not None:
        out["spread"] = float(ex.spread(r.x).std())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eight", default=None, help="folder of the trained eight-Gaussians expert")
    args = parser.parse_args()
    torch.set_num_threads(1)
    exs = examples()
    if args.eight:
        path = args.eight.replace("\\", "/")
        eight_labels = lambda x: (torch.round(torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)) % 8).long()  # noqa: E731
        exs.append(Example("trained eight", f'ckpt.load(path="{path}")', eight_labels,
                           [f"mode {k}" for k in range(8)], 3.5, sampler="smc"))
        exs.append(Example("trained eight & upper", f'ckpt.load(path="{path}") & upper', eight_labels,
                           [f"mode {k}" for k in range(8)], 3.5, sampler="smc"))
    print(f"n = {args.n}, seeds 0..{args.seeds - 1}; shares in %, median over seeds (worst |deviation| in points)")
    print(f"{'example':32s} {'mode':10s} {'exact':>7s} {'default recipe':>22s} {'langevin (before)':>22s}")
    failures = []
    for ex in exs:
        energy = composer.parse(ex.expr, definitions=SCENES)
        dim = int(energy.event_shape[0]) if energy.event_shape is not None else 2
        exact = quadrature(energy, ex, dim)
        runs = {rec: [measure(energy, ex, args.n, s, rec) for s in range(args.seeds)] for rec in (True, False)}
        sampler = runs[True][0]["sampler"]
        for k, mode in enumerate(ex.modes):
            cells = []
            for rec in (True, False):
                vals = [r["shares"][k] for r in runs[rec]]
                worst = max(abs(v - exact["shares"][k]) for v in vals) * 100
                off = abs(statistics.median(vals) - exact["shares"][k]) * 100
                cells.append(f"{100 * statistics.median(vals):6.1f} ({worst:4.1f})")
                if rec and off > 2.0:
                    failures.append(f"{ex.name} {mode}: {off:.1f} points")
            label = ex.name if k == 0 else ""
            print(f"{label:32s} {mode:10s} {100 * exact['shares'][k]:7.1f} {cells[0] + ' ' + sampler:>22s} "
                  f"{cells[1]:>22s}")
        if ex.spread is not None:
            cells = [f"{statistics.median(r['spread'] for r in runs[rec]):.4f}" for rec in (True, False)]
            print(f"{'':32s} {'spread':10s} {exact['spread']:7.4f} {cells[0]:>22s} {cells[1]:>22s}")
            if abs(float(cells[0]) - exact["spread"]) > 0.05 * exact["spread"]:
                failures.append(f"{ex.name} spread {cells[0]} vs {exact['spread']:.4f}")
        z_exact = ex.exact_log_z if ex.exact_log_z is not None else exact["log_z"]
        smc_runs = runs[True] if sampler == "smc" else [
            {"log_z": r.log_z, "log_z_se": r.log_z_se}
            for r in (composer.sample(energy, n=args.n, seed=s, sampler="smc") for s in range(args.seeds))]
        zs = [r["log_z"] for r in smc_runs if r["log_z"] is not None]
        if zs:
            worst = max(abs(z - z_exact) for z in zs)
            se = statistics.median(r["log_z_se"] for r in smc_runs)
            print(f"{'':32s} {'log Z':10s} {z_exact:7.4f} {statistics.median(zs):10.4f} +- {se:.4f} "
                  f"(worst |error| {worst:.4f})")
            if worst > 0.05:
                failures.append(f"{ex.name} log Z off by {worst:.3f}")
        cpu = statistics.median(r["cpu"] for r in runs[True])
        cpu_before = statistics.median(r["cpu"] for r in runs[False])
        print(f"{'':32s} {'cpu s':10s} {'':7s} {cpu:22.2f} {cpu_before:22.2f}")
    print("all targets met" if not failures else "MISSED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
