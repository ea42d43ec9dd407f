"""The evaluation protocol's pieces, and a fast guard of the shipped weights (small N, fixed seed)."""

from __future__ import annotations

import torch
from composer_shapes import generate
from composer_shapes.compose import Condition, compose, conditions
from composer_shapes.data import HELDOUT_PAIRS
from composer_shapes.evaluate import concept_inference, judge, summary
from composer_shapes.recipe import sample
from composer_shapes.world import ATTRIBUTES

HELDOUT_FLOOR = 0.8
"""Mean joint accuracy over the three held-out pairs, 16 samples each (seeds 0-2): the issue's target for
held-out pairs. Measured 1.0 (48 of 48); `composer eval shapes` (N = 64) measures 96.4%. The floor is
~5.8 binomial standard errors (n = 48, p = 0.964: 0.027) below the full evaluation's figure, so only a
real regression of the shipped weights or the recipe trips it. The previous designs measured 0.31 and 0.06."""
RED_TRIANGLE_FLOOR = 0.75
"""Joint accuracy of `red & triangle` (16 samples, seed 0); measured 1.0 (98% at N = 64)."""


def test_judge_counts_negations_strictly():
    d = generate(64, "all", seed=5)
    x = torch.from_numpy(d["x"])
    ok = judge(x, [Condition("color", "red"), Condition("shape", "triangle", negated=True)])
    red = d["color"] == ATTRIBUTES["color"].index("red")
    not_triangle = d["shape"] != ATTRIBUTES["shape"].index("triangle")
    assert ok.numpy().tolist() == (red & not_triangle).tolist()
    # an empty canvas satisfies no condition, not even a negated one ("none of the values")
    assert not judge(torch.zeros(2, 3, 32, 32), [Condition("shape", "triangle", negated=True)]).any()


def test_compositions_are_sampled_as_written():
    assert compose(conditions("red", "~triangle")).formula() == "shapes.color=red & ~shapes.shape=triangle"
    assert compose(conditions("triangle")).formula() == "shapes.shape=triangle"
    energy = compose(conditions("red", "triangle", "~top_left"))
    assert len(energy.bases) == 1  # the prior, once


def test_heldout_pairs_stay_above_the_floor():
    """Guard of the shipped weights: 16 samples per held-out pair (fixed seeds), judged on colour and shape."""
    acc = {}
    for i, (s, c) in enumerate(HELDOUT_PAIRS):
        x = sample(compose(conditions(c, s)), n=16, seed=i).x
        acc[(c, s)] = float(judge(x, conditions(c, s)).float().mean())
    assert sum(acc.values()) / len(acc) >= HELDOUT_FLOOR, acc
    assert acc[("red", "triangle")] >= RED_TRIANGLE_FLOOR, acc


def test_concept_inference_is_accurate():
    acc = concept_inference(200, seed=7)
    assert min(acc.values()) >= 0.9, acc


def test_summary_reports_a_void_evaluation():
    results = {"classifier_accuracy": {"shape": 0.97}, "void": True,
               "groups": {"single": {"mean": 0.5}}, "concept_inference": {"shapes.color": 1.0}}
    text = summary(results)
    assert "VOID" in text and "single" in text and "50.0%" in text


def test_main_job_command_writes_a_grid_and_tensors(tmp_path, capsys):
    """The README's first command (with n = 8 for speed), through the installed entry point's registry."""
    from PIL import Image

    from composer import cli

    png, npz = tmp_path / "grid.png", tmp_path / "samples.npz"
    assert cli.main(["sample", "red & triangle & ~top_left", "-n", "8", "--seed", "0", "--out", str(png)]) == 0
    assert Image.open(png).format == "PNG"
    assert cli.main(["sample", "red & triangle & ~top_left", "-n", "8", "--seed", "0", "--out", str(npz)]) == 0
    import numpy as np

    data = np.load(npz)
    assert data["x"].shape == (8, 3, 32, 32) and data["x"].dtype == np.float32
    assert "wrote 8 samples" in capsys.readouterr().err
