"""The evaluation classifier: shipped weights load offline without pickle, judge real images
correctly and refuse off-world ones; training is reproducible."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from composer_shapes import ATTRIBUTES
from composer_shapes.classifier import (
    NONE,
    WEIGHTS_PATH,
    ShapesClassifier,
    accuracy,
    classify,
    load_classifier,
    offworld_rejection,
    probabilities,
    save_classifier,
    train_classifier,
)

import composer


@pytest.fixture(scope="module")
def model() -> ShapesClassifier:
    return load_classifier()


def test_shipped_weights_are_small_safetensors_with_metadata():
    raw = WEIGHTS_PATH.read_bytes()
    assert len(raw) < 1_000_000
    (header_len,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length, then a JSON header
    header = json.loads(raw[8:8 + header_len])
    info = json.loads(header["__metadata__"]["info"])
    assert info == json.loads(WEIGHTS_PATH.with_suffix(".json").read_text())
    assert info["config"]["attributes"] == ATTRIBUTES
    assert min(info["eval"]["accuracy"].values()) >= 0.98


def test_loading_never_unpickles(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    m = load_classifier()
    assert isinstance(m, ShapesClassifier) and not m.training


def test_accuracy_on_fresh_real_images(model):
    # seed 4242 is neither the training stream nor the seed of the stored figures
    acc = accuracy(model, n=500, split="all", seed=4242)
    assert min(acc.values()) >= 0.98, acc
    noisy = accuracy(model, n=500, split="all", seed=4242, noise=0.05)
    assert min(noisy.values()) >= 0.97, noisy
    held = accuracy(model, n=200, split="heldout", seed=4242)  # the pairs the experts never see
    assert min(held.values()) >= 0.98, held


def test_strict_on_off_world_images(model):
    out = offworld_rejection(model, n=400, seed=99)
    assert out["orange_as_red"] <= 0.1, out
    assert out["empty"] == 1.0 and min(out[k] for k in ("color", "shape", "size", "position")) >= 0.9, out
    pred = classify(torch.zeros(3, 3, 32, 32), model)
    assert all((v == NONE).all() for v in pred.values())


def test_classify_and_probabilities_contract(model):
    x = torch.rand(5, 3, 32, 32)
    probs = probabilities(x, model)
    pred = classify(x, model)
    for a, values in ATTRIBUTES.items():
        assert probs[a].shape == (5, len(values) + 1)
        torch.testing.assert_close(probs[a].sum(-1), torch.ones(5))
        assert pred[a].dtype == torch.int64 and pred[a].shape == (5,)
        assert ((pred[a] >= NONE) & (pred[a] < len(values))).all()
    strict = classify(x, model, min_confidence=1.01)  # no probability reaches it: everything is NONE
    assert all((v == NONE).all() for v in strict.values())
    with pytest.raises(composer.ComposerError, match=r"\(B, 3, 32, 32\)"):
        classify(np.zeros((3, 32, 32), np.float32), model)


def test_training_is_reproducible_and_round_trips(tmp_path):
    kw = dict(steps=3, batch_size=16, seed=5, progress=False, eval_n=8)
    m1, info = train_classifier(**kw)
    m2, _ = train_classifier(**kw)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    path = tmp_path / "c.safetensors"
    save_classifier(m1, path, info)
    loaded = load_classifier(path)
    x = torch.rand(4, 3, 32, 32)
    for a in ATTRIBUTES:
        torch.testing.assert_close(loaded(x)[a], m1(x)[a], rtol=0, atol=0)
    assert info["recipe"]["seed"] == 5 and json.loads(path.with_suffix(".json").read_text()) == info


def test_missing_or_malformed_weights_are_checkpoint_errors(tmp_path):
    with pytest.raises(composer.CheckpointError, match="not found"):
        load_classifier(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(composer.CheckpointError, match="malformed"):
        load_classifier(bad)
