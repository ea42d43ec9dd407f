"""Benchmark: composer's sampler against a minimal hand-written Langevin loop.

Contenders run interleaved in one process (each repeat runs every contender once, in a shuffled
order); each repeat gives a paired ratio composer / hand-written and the table shows medians. Cases (issue 3):

    (a) MLP energy 2->128->128->1, batch 1024, 100 steps
    (b) MLP energy 64->256->256->1, batch 1024, 100 steps
    (c) product of three MLP experts (a) and a weighted negation, batch 1024, 100 steps
    (d) MLP (a), batch 16, 100 steps (fixed per-step overhead)

plus peak memory of case (a) for 10 vs 1000 steps (CPU: increase of the peak resident set of a
fresh process over the run; GPU: peak allocated bytes). With CUDA, every case also runs on the
GPU, eager and with ``compile=True``.

On Linux/glibc the script first pins malloc's mmap and trim thresholds (``mallopt``, what the
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables do): with the
default dynamic thresholds, PyTorch's CPU activations of a few hundred KiB are returned to the
kernel and page-faulted back in at a rate that depends on the process's allocation history
(thousands of faults per 100 steps, for either contender, varying run to run), which swamps the
overhead being measured. ``--default-malloc`` keeps glibc's defaults.

Peers (when installed: ``pip install -e ".[bench]"``; skipped with a note otherwise), on the same
energies, step 0.01 and exact noise ``sqrt(2 * 0.01)``, from the same start:

    ebmkit 0.16.0     ``ebm.samplers.LangevinDynamics(step_size, steps, noise_scale).sample(module, x0)``
                      (freezes the module's parameters for the chain)
    torchebm 0.8.9    ``torchebm.samplers.LangevinDynamics(model, step_size, noise_scale=1.0).sample(x, n_steps)``
                      (Euler-Maruyama: noise ``sqrt(2 * step) * noise_scale``)

Usage: ``python benchmarks/sampler.py [--repeats 9] [--device cpu|cuda|all] [--no-memory] [--default-malloc]
[--lean] [--cases abcd] [--steps 100] [--no-peers] [--compile] [--graph] [--bf16]``
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import composer
from composer.sampling import sample

STEP = 0.01
NOISE = math.sqrt(2 * STEP)  # the "exact" noise of composer, written out for the hand loop


def pin_malloc() -> bool:
    """Fix glibc's mmap/trim thresholds so freed activations stay mapped (see the docstring)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):
        return False


def mlp(d_in: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))


class MLPEnergy(composer.Energy):
    """An expert around an MLP: ``E(x) = net(x)``."""

    def __init__(self, net: nn.Module, d_in: int, label: str):
        super().__init__(event_shape=(d_in,), label=label)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


def hand_written(fn: Callable[[Tensor], Tensor], x: Tensor, steps: int) -> Tensor:
    """The minimal loop of the issue (detaching each step so no graph is kept)."""
    for _ in range(steps):
        x = x.detach().requires_grad_()
        g = torch.autograd.grad(fn(x).sum(), x)[0]
        x = x.detach() - STEP * g + NOISE * torch.randn_like(x)
    return x


class PlainEnergy(nn.Module):
    """The hand-written energy as one module (what the peers take): ``forward(x) = fn(x)``, ``nets`` registered."""

    def __init__(self, fn: Callable[[Tensor], Tensor], nets: list[nn.Module]):
        super().__init__()
        self.fn, self.nets = fn, nn.ModuleList(nets)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def make_case(name: str, device: str) -> tuple[composer.Energy, Callable[[Tensor], Tensor], int, int]:
    """(composer energy, the same energy as a plain function, event dim, batch)."""
    fn, nets, energy, dim, batch = _case(name, device)
    return energy, fn, dim, batch


def _case(name: str, device: str) -> tuple[Callable[[Tensor], Tensor], list[nn.Module], composer.Energy, int, int]:
    torch.manual_seed(0)
    if name in ("a", "d"):
        net = mlp(2, 128).to(device)
        return (lambda x: net(x).squeeze(-1)), [net], MLPEnergy(net, 2, "mlp"), 2, 1024 if name == "a" else 16
    if name == "b":
        net = mlp(64, 256).to(device)
        return (lambda x: net(x).squeeze(-1)), [net], MLPEnergy(net, 64, "mlp"), 64, 1024
    nets = [mlp(2, 128).to(device) for _ in range(4)]
    experts = [MLPEnergy(m, 2, f"e{i}") for i, m in enumerate(nets)]
    energy = experts[0] & experts[1] & experts[2] & 0.5 * ~experts[3]

    def fn(x: Tensor) -> Tensor:
        return nets[0](x).squeeze(-1) + nets[1](x).squeeze(-1) + nets[2](x).squeeze(-1) - 0.5 * nets[3](x).squeeze(-1)

    return fn, nets, energy, 2, 1024


def peers(fn: Callable[[Tensor], Tensor], nets: list[nn.Module], x0: Tensor, steps: int) -> dict[str, Callable]:
    """The installed peer libraries' Langevin samplers on the same energy, step and noise (see the docstring)."""
    out: dict[str, Callable] = {}
    try:
        from ebm.samplers import LangevinDynamics as EbmkitLangevin

        module = PlainEnergy(fn, nets)
        ebm_sampler = EbmkitLangevin(step_size=STEP, steps=steps, noise_scale=NOISE)
        out["ebmkit"] = lambda: ebm_sampler.sample(module, x0)
    except ImportError:
        pass
    try:
        from torchebm.core import BaseModel
        from torchebm.samplers import LangevinDynamics as TorchebmLangevin

        class Model(BaseModel):
            def __init__(self) -> None:
                super().__init__(device=x0.device)
                self.nets = nn.ModuleList(nets)

            def forward(self, x: Tensor) -> Tensor:
                return fn(x)

        te_sampler = TorchebmLangevin(Model(), step_size=STEP, noise_scale=1.0, device=x0.device)
        out["torchebm"] = lambda: te_sampler.sample(x=x0, n_steps=steps)
    except ImportError:
        pass
    return out


def missing_peers() -> list[str]:
    """Peers that are not installed."""
    import importlib.util

    found = importlib.util.find_spec
    return [name for name, mod in (("ebmkit", "ebm"), ("torchebm", "torchebm")) if found(mod) is None]


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds of one run: CPU time of this process on the CPU (robust to other processes on a shared
    machine; equal to wall time for one busy thread), wall time around synchronisations on a GPU."""
    if device == "cuda":
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t
    t = time.process_time()
    fn()
    return time.process_time() - t


def run_case(name: str, device: str, repeats: int, steps: int, compiled: bool, budget: float = 2.0,
             lean: bool = False, with_peers: bool = True, graph: bool = False, bf16: bool = False) -> dict:
    """Time the contenders on one case: at least ``repeats`` rounds, more for cheap cases (about ``budget``
    seconds of the hand-written loop, at most 100 rounds)."""
    fn, nets, energy, dim, batch = _case(name, device)
    x0 = torch.randn(batch, dim, device=device)
    contenders = {
        "hand-written": lambda: hand_written(fn, x0, steps),
        "composer": lambda: sample(energy, steps=steps, init=x0, step_size=STEP, seed=0),
    }
    if with_peers:
        contenders.update(peers(fn, nets, x0, steps))
    if lean:
        contenders["composer lean"] = lambda: sample(energy, steps=steps, init=x0, step_size=STEP, seed=0,
                                                     trace=False, energies=False)
    if compiled:
        contenders["composer compile"] = lambda: sample(energy, steps=steps, init=x0, step_size=STEP, seed=0,
                                                        compile=True)
    if graph:
        contenders["composer graph"] = lambda: sample(energy, steps=steps, init=x0, step_size=STEP, seed=0,
                                                      graph=True)
    if bf16:
        contenders["composer bf16"] = lambda: sample(energy, steps=steps, init=x0, step_size=STEP, seed=0,
                                                     autocast=torch.bfloat16)
    for k, f in list(contenders.items()):  # warm up (and compile); a contender that fails is dropped, with a note
        try:
            f()
        except Exception as e:  # noqa: BLE001 - reported, the other contenders still run
            if k in ("hand-written", "composer"):
                raise
            print(f"note: ({name}) {device} {k} failed and is skipped: {type(e).__name__}: {str(e)[:200]}")
            del contenders[k]
    once = timed(contenders["hand-written"], device)
    repeats = max(repeats, min(100, math.ceil(budget / max(once, 1e-6))))  # cheap cases get more repeats
    times: dict[str, list[float]] = {k: [] for k in contenders}
    order = list(contenders)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # no contender always runs first
        for k in order:
            times[k].append(timed(contenders[k], device))
    base = times["hand-written"]
    row = {"case": name, "device": device, "batch": batch, "steps": steps, "repeats": repeats}
    for k, ts in times.items():
        row[k] = statistics.median(ts)
        if k != "hand-written":
            row[f"ratio {k}"] = statistics.median([t / b for t, b in zip(ts, base)])  # paired, then median
            row[f"min ratio {k}"] = min(ts) / min(base)  # fastest runs: least disturbed by other processes
    for peer in ("ebmkit", "torchebm"):
        if peer in times:
            row[f"composer / {peer}"] = statistics.median([c / p for c, p in zip(times["composer"], times[peer])])
    return row


MEMORY_SNIPPET = """
import sys, torch
sys.path.insert(0, {path!r})
from sampler import make_case, hand_written, STEP
from composer.sampling import sample

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

energy, fn, dim, batch = make_case("a", "cpu")
x0 = torch.randn(batch, dim)
run = (lambda k: sample(energy, steps=k, init=x0, step_size=STEP, seed=0)) if {who!r} == "composer" else (
    lambda k: hand_written(fn, x0, k))
run(2)  # warm up: lazy initialisation is not what is measured
for steps in (10, 1000):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM) to the current size
    before = status("VmRSS:")
    run(steps)
    print(status("VmHWM:") - before)
"""


def memory_cpu(who: str) -> tuple[float, float]:
    """Peak RSS increase (MiB) over a run of case (a) for 10, then 1000 steps, in a fresh process."""
    import os

    code = MEMORY_SNIPPET.format(path=os.path.dirname(os.path.abspath(__file__)), who=who)
    code = f"import torch; torch.set_num_threads({torch.get_num_threads()})\n" + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kib = [int(v) for v in out.stdout.split()[-2:]]
    return kib[0] / 1024, kib[1] / 1024


def memory_cuda(who: str) -> tuple[float, float]:
    """Peak allocated bytes (MiB) above the start while running case (a) for 10, then 1000 steps."""
    energy, fn, dim, batch = make_case("a", "cuda")
    x0 = torch.randn(batch, dim, device="cuda")
    peaks = []
    for steps in (10, 1000):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        if who == "composer":
            sample(energy, steps=steps, init=x0, step_size=STEP, seed=0)
        else:
            hand_written(fn, x0, steps)
        torch.cuda.synchronize()
        peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
    return peaks[0], peaks[1]


def format_row(row: dict) -> str:
    """One line: every contender's median time and its ratio to the hand-written loop, then composer / peer."""
    parts = [f"({row['case']}) {row['device']} batch {row['batch']} runs {row['repeats']}:",
             f"hand-written {row['hand-written'] * 1e3:.1f} ms"]
    for k in row:
        if k.startswith("ratio "):
            who = k[len("ratio "):]
            parts.append(f"{who} {row[who] * 1e3:.1f} ms ({row[k]:.3f}, min {row['min ratio ' + who]:.3f})")
    parts += [f"{k} {row[k]:.3f}" for k in row if k.startswith("composer / ")]
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="minimum rounds per case")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's dynamic malloc thresholds")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared machine, 2-thread timings vary 5x)")
    parser.add_argument("--lean", action="store_true",
                        help="also time sample(..., trace=False, energies=False), the path for short CD runs")
    parser.add_argument("--cases", default="abcd", help="which cases to run, e.g. 'ad'")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--no-peers", action="store_true", help="skip ebmkit and torchebm even when installed")
    parser.add_argument("--compile", action="store_true", help="also time compile=True (always on CUDA)")
    parser.add_argument("--graph", action="store_true", help="also time graph=True (captured steps)")
    parser.add_argument("--bf16", action="store_true", help="also time autocast=torch.bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pinned = False if args.default_malloc else pin_malloc()
    devices = ["cpu"] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append("cuda")
    elif args.device == "cuda":
        sys.exit("no CUDA device")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, malloc thresholds {'pinned' if pinned else 'default'}"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    if not args.no_peers and missing_peers():
        print(f"note: {', '.join(missing_peers())} not installed (pip install -e '.[bench]'): skipped")
    rows = []
    for device in devices:
        for name in args.cases:
            row = run_case(name, device, args.repeats, args.steps, compiled=device == "cuda" or args.compile,
                           lean=args.lean, with_peers=not args.no_peers, graph=args.graph, bf16=args.bf16)
            rows.append(row)
            print(format_row(row), flush=True)
    if not args.no_memory:
        for device in devices:
            measure = memory_cpu if device == "cpu" else memory_cuda
            unit = "peak RSS increase" if device == "cpu" else "peak allocated"
            for who in ("hand-written", "composer"):
                m10, m1000 = measure(who)
                rows.append({"memory": who, "device": device, "steps10_mib": m10, "steps1000_mib": m1000})
                print(f"memory {device} {who:12} {unit}: 10 steps {m10:8.1f} MiB, 1000 steps {m1000:8.1f} MiB",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
