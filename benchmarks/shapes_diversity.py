"""Benchmark: accuracy and free-attribute diversity of shapes compositions, shipped guidance vs ``NoiseGuidance``.

For each composition: ``n`` samples with the shipped recipe (seed ``i`` for the ``i``-th composition), judged
by the evaluation classifier; prints the accuracy, the total variation distance of each free attribute to the
world's uniform distribution and the judged distributions (``composer_shapes.evaluate.diversity``). With
``--guidance-below SIGMA`` the shape, size and position families guide (g = 10) only below noise level SIGMA
(``composer.NoiseGuidance``); the default is the shipped g = 10 at every level. ``--strata`` sets the families
the prior declares as mixtures (``composer_shapes.experts.declare_strata``; default the shipped colour only;
``none`` for a single run per composition, as before strata).

Usage: ``python benchmarks/shapes_diversity.py [--n 32] [--guidance-below 1.0] [--strata color,size]
[--compositions "red&triangle&~top_left,circle"]``
"""

from __future__ import annotations

import argparse
import time

import torch

from composer import NoiseGuidance

MAIN = "red&triangle&~top_left,red&triangle,circle,green&circle&small&bottom_right,red&~triangle,blue&square&top_right"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--guidance-below", type=float, default=None)
    parser.add_argument("--compositions", default=MAIN)
    parser.add_argument("--strata", default="color", help="families, comma-separated, or 'none'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from composer_shapes import classifier, experts
    from composer_shapes.compose import compose, conditions
    from composer_shapes.evaluate import diversity, judge
    from composer_shapes.recipe import sample

    families = [] if args.strata == "none" else [f"shapes.{f.strip()}" for f in args.strata.split(",")]
    experts.declare_strata(*families)
    if args.guidance_below is not None:
        for k in ("shapes.shape", "shapes.size", "shapes.position"):
            experts.GUIDANCE[k] = NoiseGuidance(10.0, args.guidance_below)
    for i, text in enumerate(args.compositions.split(",")):
        conds = conditions(*[v.strip() for v in text.split("&")])
        t = time.process_time()
        x = sample(compose(conds), n=args.n, seed=i).x
        pred = classifier.classify(x)
        acc = float(judge(x, conds, pred).float().mean())
        d = diversity(pred, conds)
        tv = ", ".join(f"{a} {v:.2f}" for a, v in d["tv"].items()) or "-"
        dist = "; ".join(f"{a}: " + " ".join(f"{k} {v:.0%}" for k, v in dd.items())
                         for a, dd in d["distribution"].items())
        print(f"{text:38s} accuracy {acc:6.1%}  TV {tv:32s} {dist}  ({time.process_time() - t:.1f} s cpu)",
              flush=True)


if __name__ == "__main__":
    main()
