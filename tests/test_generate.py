"""``composer generate``: plans, shard layout and bytes, the manifest, resume, verify, labels, bad input.

Toy compositions (2-D Gaussians, a few Langevin steps) keep every test to a second or two; the
killed-process and torchrun tests are in ``test_generate_kill.py`` and ``test_generate_distributed.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import composer
from composer.cli import main
from composer.generation import DatasetError, PlanError, load_dataset, read_plan, verify
from composer.generation.shards import Segment, npz_bytes, segment_seed, segments

GAUSS = "toy.gaussian(mean=[0,0], std=1)"
DEFS = 'left = "toy.gaussian(mean=[-2,0], std=0.5)"\nright = "toy.gaussian(mean=[2,0], std=0.5)"\n'
PLAN = """
count = 5
[labels]
side = ["left", "right"]
height = ["low", "high"]

[[grid]]
expr = "{side}"
over = ["side"]
labels = { height = "low" }

[[compositions]]
expr = "toy.gaussian(mean=[0,3], std=0.5)"
count = 3
labels = { side = 1, height = "high" }
"""


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def run(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def toy_plan(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "defs.toml").write_text(DEFS)
    (tmp_path / "plan.toml").write_text(PLAN)
    return tmp_path / "plan.toml", tmp_path / "defs.toml"


# -- layout and bytes -------------------------------------------------------------------------------
def test_segments_cut_compositions_at_shard_boundaries():
    counts = [3, 5, 2]
    assert segments(counts, 4, 0) == [Segment(0, 0, 3), Segment(1, 3, 1)]
    assert segments(counts, 4, 1) == [Segment(1, 0, 4)]
    assert segments(counts, 4, 2) == [Segment(2, 0, 2)]
    assert segments(counts, 4, 3) == []
    assert sum(s.count for i in range(3) for s in segments(counts, 4, i)) == 10


def test_segment_seeds_differ_and_repeat():
    seeds = {segment_seed(0, i, c) for i in range(20) for c in range(5)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert segment_seed(7, 3, 1) == segment_seed(7, 3, 1) != segment_seed(8, 3, 1)


def test_npz_bytes_are_deterministic_and_readable(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.array([1, 2, 3])}
    data = npz_bytes(arrays)
    assert data == npz_bytes({k: v.copy() for k, v in arrays.items()})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert [i.date_time for i in zf.infolist()] == [(1980, 1, 1, 0, 0, 0)] * 2  # no clock in the bytes
    (tmp_path / "a.npz").write_bytes(data)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        assert f.files == ["x", "y"]
        np.testing.assert_array_equal(f["x"], arrays["x"])
        np.testing.assert_array_equal(f["y"], arrays["y"])


# -- one composition ----------------------------------------------------------------------------------
def test_generate_writes_shards_and_index(tmp_path):
    out = tmp_path / "ds"
    r = composer.generate(GAUSS, out, n=10, shard_size=4, seed=3, steps=20)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-000000.npz", "shard-000001.npz",
                                                     "shard-000002.npz"]
    index = json.loads((out / "index.json").read_text())
    assert index == r.index and index["complete"] and index["format"] == "composer-dataset/1"
    assert index["seed"] == 3 and index["shard_size"] == 4 and index["num_samples"] == 10
    assert index["plan"]["compositions"] == [{"expr": GAUSS, "count": 10, "labels": {}}]
    assert index["sampler"]["options"]["steps"] == 20 and index["sampler"]["recipes"][0]["sampler"] == "langevin"
    assert {"python", "torch", "numpy", "ebm-composer"} <= set(index["versions"])
    for shard, count in zip(index["shards"], [4, 4, 2]):
        data = (out / shard["file"]).read_bytes()
        assert shard["count"] == count and shard["bytes"] == len(data)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
        with np.load(out / shard["file"]) as f:
            assert f["x"].shape == (count, 2) and f["x"].dtype == np.float32 and f["energy"].shape == (count,)
    # shard 1 holds samples 4..7: one sampler call of 4 chains seeded by (seed, shard 1, composition 0)
    expected = composer.sample(composer.parse(GAUSS), n=4, steps=20, seed=segment_seed(3, 1, 0)).x.numpy()
    with np.load(out / "shard-000001.npz") as f:
        np.testing.assert_array_equal(f["x"], expected)


def test_same_arguments_same_bytes_other_seed_other_bytes(tmp_path):
    a = composer.generate(GAUSS, tmp_path / "a", n=9, shard_size=4, seed=1, steps=10)
    composer.generate(GAUSS, tmp_path / "b", n=9, shard_size=4, seed=1, steps=10)
    c = composer.generate(GAUSS, tmp_path / "c", n=9, shard_size=4, seed=2, steps=10)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert all(s["sha256"] != t["sha256"] for s, t in zip(a.index["shards"], c.index["shards"]))


def test_resume_remakes_missing_and_partial_shards_only(tmp_path):
    out = tmp_path / "ds"
    composer.generate(GAUSS, out, n=12, shard_size=4, steps=10)
    before = files(out)
    (out / "shard-000000.npz").unlink()                           # lost
    (out / "shard-000002.npz").write_bytes(b"torn")              # damaged
    (out / ".composer-tmp-abc.npz").write_bytes(b"partial")      # what a killed writer leaves
    r = composer.generate(GAUSS, out, n=12, shard_size=4, steps=10)
    assert r.made == [0, 2] and r.skipped == [1]
    assert files(out) == before


def test_label_plan_with_grid_and_definitions(tmp_path, toy_plan):
    plan_path, defs = toy_plan
    plan = read_plan(plan_path)
    assert [(i.expr, i.count, i.labels) for i in plan.items] == [
        ("left", 5, {"side": 0, "height": 0}), ("right", 5, {"side": 1, "height": 0}),
        ("toy.gaussian(mean=[0,3], std=0.5)", 3, {"side": 1, "height": 1})]
    out = tmp_path / "ds"
    assert run("generate", plan_path, "--defs", defs, "--out", out, "--shard-size", 4, "--steps", 200,
               "--step-size", 0.05, "-q") == 0
    data = load_dataset(out, labels="side")
    np.testing.assert_array_equal(data["composition"], [0] * 5 + [1] * 5 + [2] * 3)
    np.testing.assert_array_equal(data["side"], [0] * 5 + [1] * 8)
    np.testing.assert_array_equal(data["height"], [0] * 10 + [1] * 3)
    np.testing.assert_array_equal(data["y"], data["side"])
    assert data["values"].tolist() == ["left", "right"]
    # the samples are where their compositions put them (means -2, 2 and (0, 3); std 0.5, 200 steps)
    assert (data["x"][:5, 0] < 0).all() and (data["x"][5:10, 0] > 0).all() and (data["x"][10:, 1] > 1).all()


def test_training_reads_a_generated_folder(tmp_path, toy_plan):
    from composer.training.config import DataConfig
    from composer.training.data import prepare_data

    plan_path, defs = toy_plan
    out = tmp_path / "ds"
    composer.generate(plan_path, out, shard_size=4, steps=5, defs=str(defs))
    data = prepare_data(DataConfig(path=str(out), labels="side"))
    assert data.x.shape == (13, 2) and data.values == ["left", "right"]
    assert data.y.tolist() == [0] * 5 + [1] * 8


def test_budget_respaces_the_noise_ladder():
    from composer.generation.run import geometric_ladder, sampler_kwargs

    e = composer.as_energy(lambda x, sigma=None: 0.5 * (x**2).sum(-1), event_shape=(2,))
    e.sampling_recipe = {"sigmas": [8.0, 2.0, 0.5], "steps": 6}
    assert sampler_kwargs(e, {}, 5, None) == {"sigmas": geometric_ladder(8.0, 0.5, 5), "steps": 10}
    assert sampler_kwargs(e, {}, None, 3) == {"sigmas": [8.0, 2.0, 0.5], "steps": 9}
    assert geometric_ladder(8.0, 0.5, 5) == pytest.approx([8.0, 4.0, 2.0, 1.0, 0.5])
    with pytest.raises(composer.ComposerError, match="not both"):
        sampler_kwargs(e, {"steps": 3}, 5, None)
    with pytest.raises(composer.ComposerError, match="noise ladder"):
        sampler_kwargs(composer.as_energy(lambda x: x.sum(-1), event_shape=(2,)), {}, 4, None)


def test_verify_command(tmp_path, capsys):
    out = tmp_path / "ds"
    composer.generate(GAUSS, out, n=8, shard_size=4, steps=5)
    assert run("generate", "--verify", out) == 0
    assert "2 shards, 8 samples" in capsys.readouterr().err


# -- bad input: one line, exit != 0, nothing lost ------------------------------------------------------
def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("composer: error: ") and "\n" not in err, err
    return err


def test_unwritable_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    assert run("generate", GAUSS, "-n", 4, "--out", tmp_path / "file" / "ds") == 1
    assert "cannot create output folder" in one_line_error(capsys)
    assert run("generate", GAUSS, "-n", 4, "--out", tmp_path / "file") == 1
    assert "is a file" in one_line_error(capsys)
    assert (tmp_path / "file").read_text() == "keep"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert run("generate", GAUSS, "-n", 4, "--out", locked) == 1
        assert "not writable" in one_line_error(capsys)


def test_plan_with_unknown_value_or_label(tmp_path, capsys, toy_plan):
    _, defs = toy_plan
    bad = tmp_path / "bad.toml"
    bad.write_text(PLAN.replace('side = 1, height = "high"', 'side = 1, height = "middle"'))
    assert run("generate", bad, "--defs", defs, "--out", tmp_path / "ds") == 1
    assert "unknown height 'middle'; values: low, high" in one_line_error(capsys)
    bad.write_text(PLAN.replace('side = 1, height = "high"', 'side = 1, colour = "red"'))
    assert run("generate", bad, "--defs", defs, "--out", tmp_path / "ds") == 1
    assert "unknown label 'colour'" in one_line_error(capsys)
    bad.write_text(PLAN.replace("[0,3]", "[0,3]) & toy.nosuch(") + "")
    assert run("generate", bad, "--defs", defs, "--out", tmp_path / "ds") == 1
    assert "toy.nosuch" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()  # nothing written before the plan is known good


def test_count_zero(tmp_path, capsys, toy_plan):
    _, defs = toy_plan
    bad = tmp_path / "zero.toml"
    bad.write_text(PLAN.replace("count = 3", "count = 0"))
    assert run("generate", bad, "--defs", defs, "--out", tmp_path / "ds") == 1
    assert "count must be >= 1, got 0" in one_line_error(capsys)
    assert run("generate", GAUSS, "-n", 0, "--out", tmp_path / "ds") == 2  # click's range check
    with pytest.raises(PlanError, match="count must be >= 1"):
        composer.generate(GAUSS, tmp_path / "ds", n=0)
    assert not (tmp_path / "ds").exists()


def test_mismatched_resume_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "ds"
    assert run("generate", GAUSS, "-n", 8, "--shard-size", 4, "--steps", 5, "--out", out, "-q") == 0
    capsys.readouterr()
    before = files(out)
    assert run("generate", GAUSS, "-n", 8, "--shard-size", 4, "--steps", 5, "--out", out, "--seed", 1) == 1
    assert "different seed (0 there, 1 here)" in one_line_error(capsys)
    assert run("generate", GAUSS, "-n", 9, "--shard-size", 4, "--steps", 5, "--out", out) == 1
    assert "different plan" in one_line_error(capsys)
    assert run("generate", GAUSS, "-n", 8, "--shard-size", 4, "--steps", 6, "--out", out) == 1
    assert "different sampler" in one_line_error(capsys)
    assert files(out) == before


def test_folder_with_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert run("generate", GAUSS, "-n", 4, "--out", tmp_path) == 1
    assert "not empty and holds no dataset" in one_line_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_corrupted_shard_under_verify_then_repaired(tmp_path, capsys):
    out = tmp_path / "ds"
    composer.generate(GAUSS, out, n=12, shard_size=4, steps=5)
    before = files(out)
    data = bytearray((out / "shard-000001.npz").read_bytes())
    data[-30] ^= 0xFF  # one flipped byte, same size
    (out / "shard-000001.npz").write_bytes(bytes(data))
    assert run("generate", "--verify", out) == 1
    err = one_line_error(capsys)
    assert "1 of 3 shards damaged: shard-000001.npz (sha256 differs from the record)" in err
    with pytest.raises(DatasetError):
        load_dataset(out)  # training refuses it too
    r = composer.generate(GAUSS, out, n=12, shard_size=4, steps=5)  # the same command repairs it
    assert r.made == [1] and files(out) == before
    verify(out)


def test_verify_of_an_incomplete_or_missing_dataset(tmp_path, capsys):
    assert run("generate", "--verify", tmp_path / "nothing") == 1
    assert "holds no generated dataset" in one_line_error(capsys)
    out = tmp_path / "ds"
    composer.generate(GAUSS, out, n=8, shard_size=4, steps=5)
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "complete": False}))
    assert run("generate", "--verify", out) == 1
    assert "incomplete" in one_line_error(capsys)

