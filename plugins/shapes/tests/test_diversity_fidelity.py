"""Valid samples of every shapes expert, the evaluation's diversity measure and the renderer-fit fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from composer_shapes.classifier import NONE
from composer_shapes.compose import conditions
from composer_shapes.data import generate
from composer_shapes.evaluate import baseline_energy, diversity
from composer_shapes.experts import FAMILIES, make_value, prior
from composer_shapes.fidelity import best_fit, fidelity, object_count
from composer_shapes.world import ATTRIBUTES

import composer

EXPERTS = [("shapes.prior", None)] + [(name, v) for name, a in FAMILIES.items() for v in ATTRIBUTES[a]]


@pytest.mark.parametrize("name,value", EXPERTS)
def test_every_image_expert_returns_samples_in_its_domain(name, value):
    # 4 steps over a 30-level ladder stop at sigma ~ 0.1: the chains are still noisy and (the recipe does not
    # clamp) leave [0, 1]; sample() projects the returned samples into the expert's domain
    energy = prior() if value is None else make_value(name, value)
    r = composer.sample(energy, n=2, steps=4, seed=0)
    assert r.x.min() >= 0.0 and r.x.max() <= 1.0
    assert torch.isfinite(r.energy).all()


def test_the_baseline_expert_returns_samples_in_its_domain():
    r = composer.sample(baseline_energy("triangle", "red"), n=2, steps=4, seed=0)
    assert r.x.min() >= 0.0 and r.x.max() <= 1.0


def test_diversity_is_the_total_variation_to_the_uniform_world():
    n = 8
    pred = {"shape": torch.full((n,), 2), "color": torch.zeros(n, dtype=torch.long),
            "size": torch.tensor([1] * 6 + [0, NONE]), "position": torch.tensor([1, 2, 3, 1, 2, 3, 0, 1])}
    d = diversity(pred, conditions("red", "triangle", "~top_left"))
    assert set(d["tv"]) == {"size", "position"}  # colour and shape are fixed
    # size: 6/8 large, 1/8 small, 1/8 none: 0.5 (|0.75 - 0.5| + |0.125 - 0.5| + 0.125) = 0.375
    assert d["tv"]["size"] == pytest.approx(0.375)
    # position over the 3 allowed quadrants: 3/8, 2/8, 2/8 and 1/8 in the negated one
    assert d["tv"]["position"] == pytest.approx(0.5 * (abs(3 / 8 - 1 / 3) + 2 * abs(2 / 8 - 1 / 3) + 1 / 8))
    assert d["offworld_size"] == pytest.approx(1 / 8) and d["offworld_color"] == 0.0
    assert d["max_tv"] == pytest.approx(0.375)


def test_fidelity_recovers_real_images_and_rejects_two_objects():
    data = generate(24, "all", 3)
    x = torch.from_numpy(data["x"])
    fit = best_fit(x)
    assert (fit["iou"] >= 0.95).all()
    assert np.array_equal(fit["shape"].numpy(), data["shape"]) and np.array_equal(fit["color"].numpy(), data["color"])
    assert object_count(x).tolist() == [1] * 24
    two = torch.maximum(x[:4], torch.roll(x[4:8], shifts=(16, 16), dims=(2, 3)))  # a second object elsewhere
    assert (object_count(two) >= 2).all()
    assert fidelity(two)["faithful"] == 0.0
    blurred = torch.nn.functional.avg_pool2d(x[:8], 3, stride=1, padding=1)  # soft edges: not the world's object
    assert fidelity(blurred)["iou_ok"] < 0.5
