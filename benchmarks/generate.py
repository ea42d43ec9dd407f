"""Benchmark: ``composer generate``: overhead, ranks, memory, quality against budget, and usefulness.

Parts (``python benchmarks/generate.py PART [options]``, run from the repository root, one thread each):

- ``throughput``: ``composer.generate`` of ``--n`` shapes images of ``red & triangle`` in shards of
  ``--shard-size`` against the same images made by ``composer.sample`` calls of ``--shard-size`` chains
  (same seeds) and nothing else; interleaved rounds, CPU time of the process; the median of the paired
  ratios of samples/s (target >= 0.95: sharding, hashing and writing cost <= 5%).
- ``ranks``: the same dataset by ``torchrun --nproc-per-node 2`` against one process, one thread per
  process; wall time of the whole command (target >= 1.7x on 2 free cores).
- ``memory``: peak resident set of a fresh process generating a toy dataset of ``1e4`` and of ``1e6``
  samples in shards of 10,000 (flat in ``-n``: one shard at a time).
- ``budgets``: all 96 shapes combinations, ``--per`` images each, at several budgets (levels x steps per
  level); the shapes judge's accuracy (all four attributes right) against CPU seconds per 1,000 samples.
- ``useful``: the shapes classifier architecture trained from scratch (same steps, batch, augmentation,
  seed) on (a) real ``train``-split images, (b) a generated dataset of all 96 combinations (``--dataset``,
  a folder of ``composer generate``), (c) real ``all``-split images (reference), the same number of
  images each; accuracy per attribute on fresh real held-out-pair images (and on seen pairs).

Every part prints a table and, with ``--json FILE``, writes its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import composer

PLAN_96 = """# every combination of the shapes world's attributes (held-out pairs included)
count = {per}

[labels]
shape = ["circle", "square", "triangle"]
color = ["red", "green", "blue", "yellow"]
size = ["small", "large"]
position = ["top_left", "top_right", "bottom_left", "bottom_right"]

[[grid]]
expr = "{{color}} & {{shape}} & {{size}} & {{position}}"
"""


def cpu() -> float:
    return time.process_time()


# -- throughput ----------------------------------------------------------------------------------------
def bookkeeping(shard_size: int, repeats: int = 20) -> float:
    """CPU seconds to turn one shard of shapes images into npz bytes, hash them and write them atomically."""
    from composer.atomic import atomic_write_bytes
    from composer.generation.shards import npz_bytes, sha256

    rng = np.random.default_rng(0)
    arrays = {"x": rng.random((shard_size, 3, 32, 32), dtype=np.float32), "energy": np.zeros(shard_size, np.float32),
              "composition": np.zeros(shard_size, np.int64)}
    with tempfile.TemporaryDirectory() as tmp:
        t = cpu()
        for _ in range(repeats):
            data = npz_bytes(arrays)
            sha256(data)
            atomic_write_bytes(Path(tmp) / "shard.npz", data)
        return (cpu() - t) / repeats


def throughput(n: int, shard_size: int, rounds: int) -> dict[str, Any]:
    from composer.generation.shards import segment_seed

    per_shard = bookkeeping(shard_size)
    print(f"bookkeeping (npz bytes, sha256, atomic write with fsync) of one shard of {shard_size} images: "
          f"{1000 * per_shard:.2f} ms CPU", flush=True)
    if rounds == 0:
        return {"shard_size": shard_size, "bookkeeping_cpu_s_per_shard": per_shard}
    expr = "red & triangle"
    energy = composer.parse(expr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def run_generate(k: int) -> float:
            t = cpu()
            composer.generate(expr, Path(tmp) / f"g{k}", n=n, shard_size=shard_size, seed=k)
            return cpu() - t

        def run_sample(k: int) -> float:
            t = cpu()
            for i in range(-(-n // shard_size)):
                count = min(shard_size, n - i * shard_size)
                composer.sample(energy, n=count, seed=segment_seed(k, i, 0)).x.clamp(0, 1)
            return cpu() - t

        for k in range(rounds):
            order = [("generate", run_generate), ("sample", run_sample)]
            random.Random(k).shuffle(order)
            times = {name: fn(k) for name, fn in order}
            rows.append(times)
            print(f"round {k}: generate {times['generate']:.1f} s, sample {times['sample']:.1f} s CPU "
                  f"(ratio of samples/s {times['sample'] / times['generate']:.3f})", flush=True)
    ratios = [r["sample"] / r["generate"] for r in rows]
    out = {"n": n, "shard_size": shard_size, "bookkeeping_cpu_s_per_shard": per_shard, "rounds": rows,
           "median_ratio": statistics.median(ratios),
           "generate_samples_per_cpu_s": n / statistics.median(r["generate"] for r in rows),
           "sample_samples_per_cpu_s": n / statistics.median(r["sample"] for r in rows)}
    print(f"throughput: generate / sample samples per CPU second, median of {rounds} paired ratios: "
          f"{out['median_ratio']:.3f} (target >= 0.95)")
    return out


# -- ranks -----------------------------------------------------------------------------------------------
def ranks(n: int, shard_size: int, rounds: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            walls, cpus = {}, {}
            for procs in random.Random(k).sample([1, 2], 2):
                out = Path(tmp) / f"r{k}-{procs}"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
                       "-m", "composer", "generate", "red & triangle", "-n", str(n), "--shard-size", str(shard_size),
                       "--seed", str(k), "--out", str(out), "-q"]
                t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                walls[procs] = time.perf_counter() - t
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus[procs] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            same = all((Path(tmp) / f"r{k}-1" / f).read_bytes() == (Path(tmp) / f"r{k}-2" / f).read_bytes()
                       for f in os.listdir(Path(tmp) / f"r{k}-1"))
            rows.append({"one": walls[1], "two": walls[2], "cpu_one": cpus[1], "cpu_two": cpus[2], "identical": same})
            print(f"round {k}: 1 process {walls[1]:.1f} s wall / {cpus[1]:.1f} s CPU, 2 processes {walls[2]:.1f} s "
                  f"wall / {cpus[2]:.1f} s CPU in all (wall speed-up {walls[1] / walls[2]:.2f}; on two free cores "
                  f"at most {2 * cpus[1] / cpus[2]:.2f}; identical bytes: {same})", flush=True)
    speedup = statistics.median(r["one"] / r["two"] for r in rows)
    print(f"ranks: 2 processes vs 1, median wall speed-up {speedup:.2f} (target >= 1.7 on 2 free cores); "
          f"load average now {os.getloadavg()[0]:.1f}")
    ideal = statistics.median(2 * r["cpu_one"] / r["cpu_two"] for r in rows)
    print(f"ranks: CPU-time bound of the speed-up on two free cores (2 x CPU of 1 process / CPU of both): {ideal:.2f}")
    return {"n": n, "shard_size": shard_size, "rounds": rows, "median_speedup": speedup, "cpu_bound": ideal,
            "loadavg": os.getloadavg()[0]}


# -- memory ----------------------------------------------------------------------------------------------
MEMORY_CHILD = """
import resource, sys, composer
composer.generate("toy.gaussian(mean=[0,0], std=1)", sys.argv[1], n=int(sys.argv[2]), shard_size=10000, steps=20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory() -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10_000, 1_000_000):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(Path(tmp) / f"m{n}"), str(n)], env=env,
                                  check=True, capture_output=True, text=True)
            out[n] = {"peak_rss_mib": int(proc.stdout.split()[-1]) / 1024, "seconds": time.perf_counter() - t}
            print(f"memory: -n {n:>9,}: peak RSS {out[n]['peak_rss_mib']:.0f} MiB ({out[n]['seconds']:.1f} s)",
                  flush=True)
    growth = out[1_000_000]["peak_rss_mib"] - out[10_000]["peak_rss_mib"]
    print(f"memory: 100x the samples adds {growth:.1f} MiB of peak RSS (one shard of 10,000 2-D samples is "
          f"0.16 MiB of x)")
    return {"runs": out, "growth_mib": growth}


# -- budgets ---------------------------------------------------------------------------------------------
def judged(folder: Path) -> dict[str, float]:
    from composer_shapes.classifier import classify

    data = composer.generation.load_dataset(folder)
    pred = classify(torch.from_numpy(data["x"]))
    hits = {a: pred[a].numpy() == data[a] for a in ("shape", "color", "size", "position")}
    out = {a: float(h.mean()) for a, h in hits.items()}
    out["all_four"] = float(np.all(list(hits.values()), axis=0).mean())
    return out


def budgets(per: int, settings: list[tuple[int, int]], seed: int) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.toml"
        plan.write_text(PLAN_96.format(per=per))
        for levels, spl in settings:
            folder = Path(tmp) / f"b{levels}x{spl}"
            t = cpu()
            composer.generate(plan, folder, shard_size=96 * per, seed=seed, levels=levels, steps_per_level=spl)
            seconds = cpu() - t
            acc = judged(folder)
            rows.append({"levels": levels, "steps_per_level": spl, "evaluations": levels * spl,
                         "cpu_s_per_1000": 1000 * seconds / (96 * per), **acc})
            print(f"budget {levels:>2} levels x {spl} steps: {rows[-1]['cpu_s_per_1000']:7.0f} CPU s / 1000 samples, "
                  f"judged all four right {acc['all_four']:.1%} (shape {acc['shape']:.1%}, colour {acc['color']:.1%},"
                  f" size {acc['size']:.1%}, position {acc['position']:.1%})", flush=True)
    return {"per_combination": per, "rows": rows}


# -- usefulness -------------------------------------------------------------------------------------------
def train(x: np.ndarray, labels: dict[str, np.ndarray], steps: int, batch: int, seed: int):
    """The shapes classifier architecture from scratch on fixed images, the judge's augmentation and schedule."""
    from composer_shapes.classifier import ShapesClassifier, augment
    from torch import nn

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ShapesClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    warm = min(100, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 1.0) * 0.5 * (
        1 + np.cos(np.pi * min(max(s - warm, 0) / max(steps - warm, 1), 1.0))))
    xt = torch.from_numpy(x)
    yt = {a: torch.from_numpy(v.astype(np.int64)) for a, v in labels.items()}
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), batch))
        logits = model(augment(xt[idx], g))
        loss = sum(nn.functional.cross_entropy(logits[a], yt[a][idx]) for a in yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def accuracy_on(model, split: str, n: int, seed: int) -> dict[str, float]:
    from composer_shapes.classifier import classify
    from composer_shapes.data import generate

    data = generate(n, split, seed)
    pred = classify(torch.from_numpy(data["x"]), model)
    return {a: float((pred[a].numpy() == data[a]).mean()) for a in ("shape", "color", "size", "position")}


def useful(dataset: Path | None, images: int | None, only: str, steps: int, batch: int, seed: int,
           eval_n: int) -> dict[str, Any]:
    from composer_shapes.data import generate, is_heldout

    gen = composer.generation.load_dataset(dataset) if "b" in only else None
    n = len(gen["x"]) if gen is not None else images
    attrs = ("shape", "color", "size", "position")
    sources = {}
    if "a" in only:
        sources["(a) real train split"] = generate(n, "train", seed + 1)
    if gen is not None:
        sources["(b) generated, 96 combinations"] = gen
    if "c" in only:
        sources["(c) real all split (reference)"] = generate(n, "all", seed + 1)
    held_share = {k: float(is_heldout(v["shape"], v["color"]).mean()) for k, v in sources.items()}
    rows = {}
    for name, data in sources.items():
        t = time.perf_counter()
        model = train(np.asarray(data["x"], dtype=np.float32), {a: data[a] for a in attrs}, steps, batch, seed)
        rows[name] = {"heldout_pairs": accuracy_on(model, "heldout", eval_n, 777),
                      "seen_pairs": accuracy_on(model, "train", eval_n, 778),
                      "train_images": n, "heldout_pair_share": held_share[name],
                      "seconds": time.perf_counter() - t}
        h = rows[name]["heldout_pairs"]
        print(f"{name:34s} held-out pairs: " + ", ".join(f"{a} {h[a]:.1%}" for a in attrs)
              + "; seen pairs: " + ", ".join(f"{a} {v:.1%}" for a, v in rows[name]["seen_pairs"].items()), flush=True)
    return {"images": n, "steps": steps, "batch": batch, "eval_n": eval_n, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["throughput", "ranks", "memory", "budgets", "useful"])
    parser.add_argument("--n", type=int, default=128, help="throughput/ranks: images")
    parser.add_argument("--shard-size", type=int, default=64, help="throughput/ranks: shard size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per", type=int, default=2, help="budgets: images per combination")
    parser.add_argument("--budgets", default="5x1,10x1,30x1,30x2", help="budgets: LEVELSxSTEPS,...")
    parser.add_argument("--dataset", type=Path, help="useful: a generated folder of the 96 combinations")
    parser.add_argument("--only", default="abc", help="useful: which of (a), (b), (c) to train")
    parser.add_argument("--images", type=int, default=None, help="useful without (b): images per training set")
    parser.add_argument("--steps", type=int, default=1000, help="useful: training steps")
    parser.add_argument("--batch", type=int, default=128, help="useful: batch size")
    parser.add_argument("--eval-n", type=int, default=1000, help="useful: real images per evaluation split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part == "throughput":
        result = throughput(args.n, args.shard_size, args.rounds)
    elif args.part == "ranks":
        result = ranks(args.n, args.shard_size, args.rounds)
    elif args.part == "memory":
        result = memory()
    elif args.part == "budgets":
        settings = [tuple(int(v) for v in b.split("x")) for b in args.budgets.split(",")]
        result = budgets(args.per, settings, args.seed)
    else:
        if ("b" in args.only and args.dataset is None) or ("b" not in args.only and args.images is None):
            parser.error("useful needs --dataset DIR (composer generate of the 96 combinations), or --images N "
                         "with --only a,c")
        result = useful(args.dataset, args.images, args.only, args.steps, args.batch, args.seed, args.eval_n)
    result = {"part": args.part, "torch": torch.__version__, "peak_rss_mib":
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **result}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
