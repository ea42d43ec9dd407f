"""The evaluation protocol's pieces, and a fast guard of the shipped weights (small N, fixed seed)."""

from __future__ import annotations

import torch
from composer_shapes import generate
from composer_shapes.compose import Condition, complete, conditions, parse_values, prepare
from composer_shapes.data import HELDOUT_PAIRS
from composer_shapes.evaluate import concept_inference, judge, summary
from composer_shapes.recipe import sample
from composer_shapes.world import ATTRIBUTES

COLOUR_FLOOR = 0.3
"""Mean share of held-out pair samples (16 per pair, seeds 0-2) judged the right colour; measured 0.60."""
TRIANGLE_FLOOR = 0.25
"""Share of `red & triangle` samples (16, seed 0) judged triangles; measured 0.56."""


def test_judge_counts_negations_strictly():
    d = generate(64, "all", seed=5)
    x = torch.from_numpy(d["x"])
    ok = judge(x, [Condition("color", "red"), Condition("shape", "triangle", negated=True)])
    red = d["color"] == ATTRIBUTES["color"].index("red")
    not_triangle = d["shape"] != ATTRIBUTES["shape"].index("triangle")
    assert ok.numpy().tolist() == (red & not_triangle).tolist()
    # an empty canvas satisfies no condition, not even a negated one ("none of the values")
    assert not judge(torch.zeros(2, 3, 32, 32), [Condition("shape", "triangle", negated=True)]).any()


def test_completion_adds_marginals_and_complements():
    formula = complete(conditions("triangle")).formula()
    assert formula.startswith("shapes.shape=triangle & (") and "shapes.color=yellow" in formula
    assert "|" not in complete(conditions("red", "circle")).formula()
    neg = complete(conditions("red", "~triangle")).formula()
    assert neg == "shapes.color=red & (shapes.shape=circle | shapes.shape=square)"
    main = prepare(parse_values("red & triangle & ~top_left")).formula()
    assert main == ("shapes.color=red & shapes.shape=triangle & (shapes.position=top_right | "
                    "shapes.position=bottom_left | shapes.position=bottom_right)")
    both = prepare(parse_values("triangle & ~triangle")).formula()  # a family with a positive value: as written
    assert both.startswith("shapes.shape=triangle & ~shapes.shape=triangle & (")


def test_heldout_pairs_stay_above_the_floor():
    """Guard of the shipped weights (16 samples per held-out pair, fixed seeds): colour and shape are
    judged separately, because the joint held-out accuracy is still low (see the README)."""
    colour, shape = [], {}
    for i, (s, c) in enumerate(HELDOUT_PAIRS):
        x = sample(complete(conditions(c, s)), n=16, seed=i).x
        colour.append(float(judge(x, [Condition("color", c)]).float().mean()))
        shape[s] = float(judge(x, [Condition("shape", s)]).float().mean())
    assert sum(colour) / len(colour) >= COLOUR_FLOOR, colour
    assert shape["triangle"] >= TRIANGLE_FLOOR, shape


def test_concept_inference_is_accurate():
    acc = concept_inference(200, seed=7)
    assert min(acc.values()) >= 0.9, acc


def test_summary_reports_a_void_evaluation():
    results = {"classifier_accuracy": {"shape": 0.97}, "void": True,
               "groups": {"single": {"mean": 0.5}}, "concept_inference": {"shapes.color": 1.0}}
    text = summary(results)
    assert "VOID" in text and "single" in text and "50.0%" in text
