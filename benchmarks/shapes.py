"""Benchmark: the README's main job, composer against the same networks written out by hand.

``red & triangle & ~top_left`` from the shipped shapes experts, 64 images, interleaved in one process
(each round runs both contenders once, in a shuffled order) and reported as the median of the paired
ratios composer / hand-written:

- ``evaluation``: one energy + input gradient at a fixed noise level. composer: ``energy(x, sigma=s)``
  of the parsed expression (Bayes-form algebra: the shared prior once, the likelihood rows, the
  complement for the negation). Hand-written: the same networks summed directly,
  ``layout + colour mixture + 1 * -log p(red | x) + 10 * -log p(triangle | x)
  - 10 log(1 - p(top_left | x))``.
- ``sample``: the whole annealed run with the shipped recipe (30 levels from 20 to 0.008, 2 Langevin
  steps of ``0.3 sigma^2`` per level, the ``ddim`` predictor between levels, 90 evaluations).
  composer: ``composer_shapes.recipe.sample``. Hand-written: the same predictor-corrector loop over the
  hand-written energy (an evaluation at the start of each level, then per step
  ``x - step * grad + sqrt(2 step) z``).

Both contenders give the same samples up to float rounding (checked first and printed as the largest
pixel difference). CPU time of the process, one thread by default (robust on a shared machine).

Usage: ``python benchmarks/shapes.py [--rounds 7] [--threads 1] [--n 64]``
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import torch
from torch import Tensor

import composer
from composer.energy import complement


def hand_energy(nets: dict, x: Tensor, sigma: Tensor) -> Tensor:
    """``red & triangle & ~top_left`` written out: ``(B, 3, 32, 32), (B,) -> (B,)``."""
    from composer_shapes.experts import GUIDANCE

    colour = -torch.log_softmax(-nets["ray"].energies_all(x, sigma), dim=1)[:, 0]  # red
    shape = nets["shape"](x, torch.full_like(sigma, 2, dtype=torch.long), sigma)  # triangle
    where = nets["position"](x, torch.zeros_like(sigma, dtype=torch.long), sigma)  # top_left
    g_pos = GUIDANCE["shapes.position"]
    return (nets["layout"](x, None, sigma) + nets["mixture"](x, None, sigma) + GUIDANCE["shapes.color"] * colour
            + GUIDANCE["shapes.shape"] * shape + complement(g_pos * where, g_pos))


def grad_of(fn, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    e = fn(x, sigma)
    (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


def hand_sample(fn, x: Tensor, ladder: list[float], steps_per_level: int, factor: float,
                generator: torch.Generator) -> Tensor:
    """Predictor-corrector annealing as the shipped recipe runs it."""
    b, g, prev = x.shape[0], None, None
    for s in ladder:
        sigma = torch.full((b,), s)
        if g is not None:
            x = x - prev * (prev - s) * g  # ddim predictor, reusing the last gradient
        _, g = grad_of(fn, x, sigma)
        step = factor * s * s
        for _ in range(steps_per_level):
            x = x - step * g + math.sqrt(2 * step) * torch.randn(x.shape, generator=generator)
            _, g = grad_of(fn, x, sigma)
        prev = s
    return x


def cpu_time(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def interleaved(composer_run, hand_run, rounds: int) -> tuple[dict[str, list[float]], list[float]]:
    """CPU times of both contenders over ``rounds`` rounds (shuffled order each), and the paired ratios."""
    times: dict[str, list[float]] = {"composer": [], "hand-written": []}
    ratios = []
    for _ in range(rounds):
        order = [("composer", composer_run), ("hand-written", hand_run)]
        random.shuffle(order)
        t = {who: cpu_time(run) for who, run in order}
        ratios.append(t["composer"] / t["hand-written"])
        for who in t:
            times[who].append(t[who])
    return times, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the whole-sample comparison")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from composer_shapes import experts
    from composer_shapes.recipe import DEFAULT, sample

    energy = composer.parse("red & triangle & ~top_left")
    nets = {"layout": experts._prior_part("shapes.prior_layout"), "mixture": experts._prior_part("shapes.color"),
            "ray": experts._network("shapes.color")[0], "shape": experts._posterior("shapes.shape"),
            "position": experts._posterior("shapes.position")}

    def composer_fn(x: Tensor, sigma: Tensor) -> Tensor:
        return energy(x, sigma=sigma)

    def hand_fn(x: Tensor, sigma: Tensor) -> Tensor:
        return hand_energy(nets, x, sigma)

    x = 0.5 + 0.3 * torch.randn(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((args.n,), 0.3)
    e_c, g_c = grad_of(composer_fn, x, sigma)
    e_h, g_h = grad_of(hand_fn, x, sigma)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), n = {args.n}")
    print(f"same energy: max |diff| / max |E| = {((e_c - e_h).abs().max() / e_h.abs().max()).item():.1e}, "
          f"gradient {((g_c - g_h).abs().max() / g_h.abs().max()).item():.1e}")

    times, ratios = interleaved(lambda: grad_of(composer_fn, x, sigma), lambda: grad_of(hand_fn, x, sigma),
                                max(20, 3 * args.rounds))
    print(f"evaluation: hand-written {statistics.median(times['hand-written']) * 1e3:.1f} ms, composer "
          f"{statistics.median(times['composer']) * 1e3:.1f} ms, median ratio {statistics.median(ratios):.3f} "
          f"({len(ratios)} rounds)")

    kwargs = DEFAULT.as_kwargs()
    init = kwargs["init"](args.n, generator=torch.Generator().manual_seed(1))
    ladder = DEFAULT.ladder()

    def run_composer() -> Tensor:
        return sample(energy, n=args.n, seed=0, init=init.clone()).x

    def run_hand() -> Tensor:
        gen = torch.Generator().manual_seed(0)
        return hand_sample(hand_fn, init.clone(), ladder, DEFAULT.steps_per_level, DEFAULT.step_factor,
                           gen).clamp(0, 1)

    diff = (run_composer() - run_hand()).abs().max().item()
    print(f"sample: largest pixel difference between the two contenders {diff:.2e} (both draw the same noise)")
    times, ratios = interleaved(run_composer, run_hand, args.rounds)
    print(f"sample: hand-written {statistics.median(times['hand-written']):.2f} s, composer "
          f"{statistics.median(times['composer']):.2f} s, median ratio {statistics.median(ratios):.3f} "
          f"(min ratio {min(times['composer']) / min(times['hand-written']):.3f}, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
