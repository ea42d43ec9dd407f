"""Checkpoint files: bit-identical round trips, atomic writes, no unpickling, validation, experts from files."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from composer import CheckpointError, ConditionalEnergy
from composer.nets import MLPEnergy
from composer.plugins import build_registry
from composer.training import builtin
from composer.training import checkpoint as ckpt


def _meta(net: MLPEnergy, values=None, **extra):
    return {"kind": "expert", "name": "toy2d", "network": net.config, "event_shape": [2],
            "domain": [[-3.0, -3.0], [3.0, 3.0]], "objective": "cd", "values": values, "step": 7, **extra}


def _net(num_classes: int = 0, seed: int = 0) -> MLPEnergy:
    torch.manual_seed(seed)
    net = MLPEnergy((2,), hidden=(8, 8), num_classes=num_classes)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net


def _write(path, net, values=None):
    ckpt.save_checkpoint(path, {f"model.{k}": v for k, v in net.state_dict().items()}, _meta(net, values))


def test_round_trip_is_bit_identical(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.f32": torch.randn(3, 4, generator=g),
        "a.f64": torch.randn(5, generator=g, dtype=torch.float64),
        "b.bf16": torch.randn(2, 2, generator=g).to(torch.bfloat16),
        "rng.state": torch.Generator().manual_seed(3).get_state(),  # uint8
        "c.i64": torch.arange(4),
        "d.view": torch.randn(4, 4, generator=g).t(),  # non-contiguous
        "e.nan": torch.tensor([float("nan"), -0.0, float("inf")]),
    }
    meta = {"kind": "training", "name": "x", "network": {"type": "mlp"}, "event_shape": [2], "domain": None,
            "objective": "cd", "values": ["a", "b"], "step": 3, "recipe": {"nested": [1, 2.5, None]}}
    path = tmp_path / "c.safetensors"
    ckpt.save_checkpoint(path, tensors, meta)
    loaded, got = ckpt.load_checkpoint(path)
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        assert loaded[k].view(torch.uint8).flatten().tolist() == v.contiguous().view(torch.uint8).flatten().tolist(), k
    assert got == {"format": ckpt.FORMAT, "version": ckpt.VERSION, **meta, "sha256": ckpt.tensors_digest(tensors)}
    again = tmp_path / "again.safetensors"
    ckpt.save_checkpoint(again, loaded, {k: v for k, v in got.items() if k not in ("format", "version", "sha256")})
    assert again.read_bytes() == path.read_bytes()


def test_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    """A crash between writing and renaming leaves the previous checkpoint intact and readable."""
    path = tmp_path / "checkpoints" / "step-00000001.safetensors"
    net = _net()
    _write(path, net)
    before = path.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"model.x": torch.zeros(3)}, _meta(net))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".composer-tmp-*")), "an interrupted write removes its temporary file"
    # kill -9 gives the writer no chance to clean up: such a leftover is never taken for a checkpoint
    (path.parent / ".composer-tmp-abc123.safetensors").write_bytes(b"torn")
    assert ckpt.latest_checkpoint(tmp_path) == path  # temporary files are never taken for checkpoints
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert not list(path.parent.glob(".composer-tmp-*")) and path.exists()


def test_loading_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps({"model.x": Evil()}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        ckpt.load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        ckpt.expert_from_checkpoint(bad)
    torch.save({"w": torch.zeros(2)}, tmp_path / "torch.pt")
    with pytest.raises(CheckpointError):
        ckpt.read_metadata(tmp_path / "torch.pt")
    assert not marker.exists()


@pytest.mark.parametrize("header, message", [
    (None, "no composer metadata"),
    ({"composer": "{not json"}, "not valid JSON"),
    ({"composer": json.dumps({"format": "composer.checkpoint", "version": 1})}, "metadata lacks kind, name"),
    ({"composer": json.dumps({"format": "other", "version": 1, "kind": "expert", "name": "n", "network": {},
                              "event_shape": [2], "domain": None, "objective": "cd", "values": None, "step": 0})},
     "unknown format 'other'"),
    ({"composer": json.dumps({"format": "composer.checkpoint", "version": 99, "kind": "expert", "name": "n",
                              "network": {}, "event_shape": [2], "domain": None, "objective": "cd", "values": None,
                              "step": 0})}, "version 99 is newer"),
    ({"composer": json.dumps({"format": "composer.checkpoint", "version": 1, "kind": "expert", "name": "n",
                              "network": {}, "event_shape": [2], "domain": None, "objective": "cd", "values": [1],
                              "step": 0})}, "'values' must be a list of names"),
])
def test_metadata_is_validated(tmp_path, header, message):
    path = tmp_path / "m.safetensors"
    save_file({"model.x": torch.zeros(1)}, str(path), metadata=header)
    with pytest.raises(CheckpointError, match=message):
        ckpt.read_metadata(path)


def test_missing_file_and_mismatched_weights(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ckpt.expert_from_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no expert.safetensors and no checkpoint"):
        ckpt.expert_from_checkpoint(tmp_path)
    net = _net()
    weights = {f"model.{k}": v for k, v in net.state_dict().items() if k != "head.bias"}
    weights["model.extra"] = torch.zeros(1)
    ckpt.save_checkpoint(tmp_path / "w.safetensors", weights, _meta(net))
    with pytest.raises(CheckpointError, match="missing: head.bias; unexpected: extra"):
        ckpt.expert_from_checkpoint(tmp_path / "w.safetensors")


def test_expert_from_checkpoint_reproduces_the_network(tmp_path):
    net = _net()
    _write(tmp_path / "expert.safetensors", net)
    expert = ckpt.expert_from_checkpoint(tmp_path)  # a folder resolves to its expert.safetensors
    x = torch.randn(16, 2)
    assert torch.equal(expert(x), net(x))
    assert expert.event_shape == (2,) and expert.formula() == "toy2d" and expert.checkpoint_meta["step"] == 7
    low, high = expert.domain
    assert low.tolist() == [-3.0, -3.0] and high.tolist() == [3.0, 3.0]
    assert not any(p.requires_grad for p in expert.parameters())
    with pytest.raises(CheckpointError, match="unconditional expert; it has no value 'red'"):
        ckpt.expert_from_checkpoint(tmp_path, value="red")
    with pytest.raises(CheckpointError, match="not a concept family"):
        ckpt.family_from_checkpoint(tmp_path)


def test_family_from_checkpoint_shares_one_network(tmp_path):
    net = _net(num_classes=3)
    path = tmp_path / "family.safetensors"
    _write(path, net, values=["red", "green", "blue"])
    family = ckpt.family_from_checkpoint(path)
    assert list(family) == ["red", "green", "blue"]
    assert all(isinstance(e, ConditionalEnergy) for e in family.values())
    assert family["red"].network is family["blue"].network
    x = torch.randn(5, 2)
    assert torch.equal(family["green"](x), net(x, torch.ones(5, dtype=torch.long)))
    torch.testing.assert_close((family["red"] & family["blue"])(x),
                               net(x, torch.zeros(5, dtype=torch.long)) + net(x, torch.full((5,), 2)))
    assert ckpt.expert_from_checkpoint(path, value="blue").formula() == "toy2d=blue"
    with pytest.raises(CheckpointError, match=r"concept family \(values: red, green, blue\); pass value="):
        ckpt.expert_from_checkpoint(path)
    with pytest.raises(CheckpointError, match="'pink' is not a value"):
        ckpt.expert_from_checkpoint(path, value="pink")
    values, factory = ckpt.concept_from_checkpoint(path)
    assert values == ["red", "green", "blue"]
    assert factory("red").network is factory("green").network  # loaded once, shared
    with pytest.raises(CheckpointError, match="'pink' is not a value"):
        factory("pink")


def test_plugin_registers_checkpoints_in_a_few_lines(tmp_path):
    """The README snippet: a plugin ships a file and registers its family and an unconditional expert."""
    import composer
    from composer import training

    fam, single = tmp_path / "color.safetensors", tmp_path / "eight.safetensors"
    _write(fam, _net(num_classes=2), values=["red", "blue"])
    _write(single, _net(seed=1))

    class MyPlugin:
        @composer.hookimpl
        def register_experts(self, register):
            register("mine.eight", lambda: training.expert_from_checkpoint(single))

        @composer.hookimpl
        def register_concepts(self, register):
            values, factory = training.concept_from_checkpoint(fam)
            register("mine.color", values, factory)

    reg = build_registry([MyPlugin()], entry_points=False)
    product = reg.make_concept("mine.color", "red") & reg.make_concept("mine.color", "blue") & reg.make_expert(
        "mine.eight")
    assert product(torch.zeros(3, 2)).shape == (3,)
    assert reg.concept("mine.color").values == ("red", "blue")


def test_ckpt_load_expert_in_the_language(tmp_path):
    """``ckpt.load(path=...)`` needs no code: values of one file share one network (one batched call)."""
    from composer.language import parse

    net = _net(num_classes=2)
    _write(tmp_path / "expert.safetensors", net, values=["left", "up"])
    reg = build_registry(entry_points=False)
    expr = f'ckpt.load(path="{tmp_path}", value="left") & ckpt.load(path="{tmp_path}", value="up")'
    energy = parse(expr, registry=reg)
    x = torch.randn(4, 2)
    torch.testing.assert_close(energy(x), net(x, torch.zeros(4, dtype=torch.long)) + net(x, torch.ones(4).long()))
    assert energy.terms[0].network is energy.terms[1].network
    with pytest.raises(composer_error()):
        parse(f'ckpt.load(path="{tmp_path}")', registry=reg)
    assert builtin.load(str(tmp_path), value="up").formula() == "toy2d=up"


def composer_error():
    from composer import ComposerError

    return ComposerError
