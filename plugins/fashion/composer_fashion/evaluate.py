"""``composer eval fashion``: class-conditional samples and inpainting judged by the independent judge.

The protocol (fixed seeds, the shipped weights and recipe):

1. The judge (``composer_fashion.judge``) is measured on the 10,000 test images.
2. ``n`` samples (default 64) of every value of ``fashion.class`` (``fashion.class=VALUE``, the recipe of
   ``composer_fashion.recipe``); a sample counts when the judge gives it the requested class.
3. Fréchet distance in the judge's penultimate features between the class samples (``fd_n`` of them,
   balanced over the classes) and the test set, next to two references at the same ``N``: ``fd_n`` train
   images (the floor: how far real images of the same count are) and ``fd_n`` blurred test images
   (Gaussian blur, std 1 pixel: what "recognisable but soft" costs).
4. Inpainting: ``inpaint_per_class`` test images of each class with their left half observed
   (``composer.observe``, noise ``0.05``) completed under ``fashion.class=TRUE_CLASS``; the completion
   counts when the judge gives it that class. Observed pixels: mean absolute change and the share within
   three noise standard deviations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch import Tensor

from composer_fashion.data import CLASSES, as_float, load
from composer_fashion.frechet import frechet_distance

OBS_NOISE = 0.05


def blur(x: Tensor, std: float = 1.0) -> Tensor:
    """Gaussian blur (separable, 5 taps) of ``(N, 1, H, W)`` images."""
    t = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / std) ** 2)
    k = k / k.sum()
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))


def class_samples(per_class: int, seed: int, echo: Callable[[str], None], batch: int = 128) -> dict[str, Tensor]:
    """``{value: (per_class, 1, 28, 28)}`` samples of every ``fashion.class`` value."""
    from composer_fashion.experts import make_value
    from composer_fashion.recipe import sample

    out = {}
    for i, value in enumerate(CLASSES):
        t0, parts = time.time(), []
        for j in range(0, per_class, batch):
            parts.append(sample(make_value(value), n=min(batch, per_class - j), seed=seed + 1000 * i + j).x)
        out[value] = torch.cat(parts)
        echo(f"sampled {per_class} x fashion.class={value} ({time.time() - t0:.0f} s)")
    return out


def inpaint(per_class: int, seed: int, mask: str = "left") -> dict[str, Any]:
    """Complete ``per_class`` test images of each class from their ``mask`` half under their true class."""
    from composer.observe import Observe, parse_mask
    from composer_fashion.experts import make_value
    from composer_fashion.judge import predict
    from composer_fashion.recipe import sample

    test = load("test")
    x_all, y_all = torch.from_numpy(as_float(test["x"])), torch.from_numpy(test["y"])
    m = parse_mask(mask, (1, 28, 28))
    hits, deltas, within, total = [], [], [], 0
    examples: list[tuple[Tensor, Tensor]] = []
    for c, value in enumerate(CLASSES):
        idx = torch.nonzero(y_all == c).flatten()[:per_class]
        obs = x_all[idx]
        res = sample(make_value(value) & Observe(obs, m, OBS_NOISE), n=len(idx), seed=seed + c).x
        labels, _ = predict(res)
        hits.append((labels == c).float())
        d = (res - obs)[:, m].abs()
        deltas.append(d.mean().item())
        within.append((d <= 3 * OBS_NOISE).float().mean().item())
        total += len(idx)
        examples.append((obs[:1], res[:1]))
    acc = torch.cat(hits)
    return {"n": total, "mask": mask, "noise": OBS_NOISE, "accuracy": round(acc.mean().item(), 4),
            "per_class": {v: round(h.mean().item(), 4) for v, h in zip(CLASSES, hits)},
            "observed_mean_abs_change": round(float(np.mean(deltas)), 4),
            "observed_within_3_noise": round(float(np.mean(within)), 4)}


def evaluate(n: int = 64, fd_n: int = 640, inpaint_per_class: int = 10, seed: int = 0,
             figure: str | Path | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the protocol (module docstring); returns the figures as a dict."""
    from composer_fashion.judge import load_judge, predict, test_accuracy

    t_start = time.process_time()
    judge_model, judge_info = load_judge()
    result: dict[str, Any] = {"seed": seed, "n_per_class": n,
                              "judge": {"test_accuracy": test_accuracy(judge_model),
                                        "shipped_info": judge_info}}
    echo(f"judge test accuracy {result['judge']['test_accuracy']:.2%}")
    per_class = max(n, -(-fd_n // len(CLASSES)))
    samples = class_samples(per_class, seed, echo)
    acc = {}
    for c, value in enumerate(CLASSES):
        labels, _ = predict(samples[value][:n], judge_model)
        acc[value] = round((labels == c).float().mean().item(), 4)
    result["class_accuracy"] = acc
    result["class_accuracy_mean"] = round(float(np.mean(list(acc.values()))), 4)
    echo("judged correct: " + ", ".join(f"{k} {v:.0%}" for k, v in acc.items()))

    test = torch.from_numpy(as_float(load("test")["x"]))
    train = torch.from_numpy(as_float(load("train")["x"]))
    g = torch.Generator().manual_seed(seed)
    k = fd_n // len(CLASSES)
    gen = torch.cat([samples[v][:k] for v in CLASSES])
    f_test = predict(test, judge_model)[1].numpy()
    f_gen = predict(gen, judge_model)[1].numpy()
    f_train = predict(train[torch.randperm(train.shape[0], generator=g)[: gen.shape[0]]], judge_model)[1].numpy()
    f_blur = predict(blur(test[torch.randperm(test.shape[0], generator=g)[: gen.shape[0]]]), judge_model)[1].numpy()
    result["frechet"] = {"n": int(gen.shape[0]), "samples_vs_test": round(frechet_distance(f_gen, f_test), 2),
                         "train_vs_test_floor": round(frechet_distance(f_train, f_test), 2),
                         "blurred_test_vs_test": round(frechet_distance(f_blur, f_test), 2)}
    echo(f"Fréchet (judge features, N={gen.shape[0]}): {result['frechet']}")
    if inpaint_per_class > 0:
        t0 = time.time()
        result["inpainting"] = inpaint(inpaint_per_class, seed)
        echo(f"inpainting: {result['inpainting']} ({time.time() - t0:.0f} s)")
    result["cpu_s"] = round(time.process_time() - t_start, 1)
    if figure:
        from composer.observe_cli import save_grid_png

        save_grid_png(torch.cat([samples[v][:8] for v in CLASSES]), str(figure), nrow=8)
    return result


@click.command("fashion", epilog="""
\b
Examples:
  composer eval fashion -n 8 --fd-n 80 --inpaint-per-class 1 --json quick.json
  composer eval fashion --json fashion_eval.json --figure fashion_eval.png
""")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples per class judged.")
@click.option("--fd-n", type=click.IntRange(min=20), default=640, show_default=True,
              help="Samples (balanced over classes) for the Fréchet distance.")
@click.option("--inpaint-per-class", type=click.IntRange(min=0), default=10, show_default=True,
              help="Test images per class completed from their left half (0: skip).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default="fashion_eval.json", show_default=True)
@click.option("--figure", type=click.Path(dir_okay=False), default=None, help="PNG of 8 samples per class.")
def eval_fashion(n: int, fd_n: int, inpaint_per_class: int, seed: int, json_out: str, figure: str | None) -> None:
    """Judge class-conditional samples and inpaintings of the fashion experts; Fréchet distance."""
    from composer.atomic import atomic_write_text

    result = evaluate(n, fd_n, inpaint_per_class, seed, figure, echo=lambda s: click.echo(s, err=True))
    atomic_write_text(json_out, json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps({k: result[k] for k in ("class_accuracy_mean", "frechet")}))
