"""Profile of the README's main job, ``composer sample "red & triangle & ~top_left" -n 64 --out grid.png``.

Phases in one process, process CPU time: imports, plugin registry, parsing (weights load on first use),
each network's energy and input gradient on 64 images (median of 3), the whole composition per
evaluation, the whole sample with the shipped recipe, and the PNG.

Usage: ``python benchmarks/profile_main_job.py [--threads 1] [--no-sample]``. To profile another checkout
of the code, put it first on ``PYTHONPATH`` (``PYTHONPATH=OLD:OLD/plugins/shapes:OLD/plugins/toy``).
"""

from __future__ import annotations

import time

T0, C0 = time.perf_counter(), time.process_time()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402

C1 = time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-sample", action="store_true", help="skip the whole sample and the PNG")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import composer
    from composer.plugins import get_registry

    c2 = time.process_time()
    registry = get_registry()
    c3 = time.process_time()
    energy = composer.parse("red & triangle & ~top_left")
    c4 = time.process_time()
    from composer_shapes import experts, posteriors

    from composer.sampling.target import Target

    try:
        from composer.sampling.freeze import frozen
    except ImportError:  # an older checkout
        def frozen(_):
            return contextlib.nullcontext()

    torch.manual_seed(0)
    x, sigma = torch.rand(64, 3, 32, 32), torch.full((64,), 0.3)

    def cost(fn, reps: int = 3) -> float:
        times = []
        for _ in range(reps):
            xr = x.clone().requires_grad_(True)
            t = time.process_time()
            torch.autograd.grad(fn(xr).sum(), xr)
            times.append(time.process_time() - t)
        return sorted(times)[len(times) // 2]

    layout, color = experts._network("prior_layout")[0], experts._network("color")[0]
    shape, position = experts._network("shape")[0], experts._network("position")[0]
    parts = {
        "layout U-Net (prior)": lambda xr: layout(xr, None, sigma=sigma),
        "colour ray network, one call": lambda xr: posteriors.all_values(color, xr, sigma).sum(1),
        "shape posterior (triangle)": lambda xr: shape.energies_all(xr, sigma).sum(1),
        "position posterior (top_left)": lambda xr: position.energies_all(xr, sigma).sum(1),
    }
    with frozen(torch.nn.ModuleList([layout, color, shape, position])):
        costs = {k: cost(f) for k, f in parts.items()}
    with frozen(energy):
        whole = cost(lambda xr: Target(energy, sigma=sigma)(xr))
    print(f"{'import torch':40} {C1 - C0:7.2f} s")
    print(f"{'import composer':40} {c2 - C1:7.2f} s")
    print(f"{'plugin registry':40} {c3 - c2:7.2f} s")
    print(f"{'parse (+ weights)':40} {c4 - c3:7.2f} s")
    for k, v in costs.items():
        print(f"{k:40} {v * 1e3:7.1f} ms per evaluation (energy + input gradient, 64 images)")
    print(f"{'whole composition':40} {whole * 1e3:7.1f} ms per evaluation")
    if args.no_sample:
        return
    from composer.figures import save_samples_png
    from composer.sampling import sample

    t = time.process_time()
    result = sample(energy, n=64, seed=0, registry=registry)
    ts = time.process_time() - t
    with tempfile.TemporaryDirectory() as folder:
        t = time.process_time()
        save_samples_png(result.x, f"{folder}/grid.png", title=energy.formula())
        tp = time.process_time() - t
    print(f"{'sample (' + str(int(result.steps_run.max())) + ' steps)':40} {ts:7.2f} s")
    print(f"{'PNG':40} {tp:7.2f} s")
    print(f"{'total CPU':40} {time.process_time() - C0:7.2f} s (wall {time.perf_counter() - T0:.1f} s)")


if __name__ == "__main__":
    main()
