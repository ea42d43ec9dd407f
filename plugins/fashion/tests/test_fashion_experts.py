"""End to end on fake data: `composer train` with the plugin's configs (2 steps), then the experts,
`composer sample`, `composer inpaint`, `composer score` and `composer ood` on those weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from composer_fashion import experts
from conftest import write_fake

import composer
from composer.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Weights of 2 training steps of each config on fake data, in a folder used via COMPOSER_FASHION_WEIGHTS."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("data")
    write_fake(root, n_train=40, n_test=30)
    mp.setenv("COMPOSER_FASHION_DIR", str(root))
    out = tmp_path_factory.mktemp("weights")
    for name in ("prior", "class", "background"):  # background: the config trains (mutated data)
        run = tmp_path_factory.mktemp(f"run-{name}")
        shutil.rmtree(run)
        assert main(["train", str(CONFIGS / f"{name}.toml"), "--steps", "2", "--output", str(run), "-q"]) == 0
        shutil.copy(run / "expert.safetensors", out / f"{name}.safetensors")
    mp.setenv("COMPOSER_FASHION_WEIGHTS", str(out))
    experts.load_network.cache_clear()
    experts.prior.cache_clear()
    yield out
    experts.load_network.cache_clear()
    experts.prior.cache_clear()
    mp.undo()


def test_family_is_bayes_form_over_one_prior(weights):
    reg = composer.get_registry()
    assert reg.concepts["fashion.class"].values == ("tshirt", "trouser", "pullover", "dress", "coat", "sandal",
                                                   "shirt", "sneaker", "bag", "boot")
    bag, boot = composer.parse("fashion.class=bag"), composer.parse("fashion.class=boot")
    assert bag.base is boot.base is composer.parse("fashion.prior")
    x = torch.rand(4, 1, 28, 28)
    post = experts.posterior().energies_all(x, 0.1)
    expected = bag.base(x, sigma=0.1) + experts.GUIDANCE * post[:, 8]
    torch.testing.assert_close(bag(x, sigma=0.1), expected)
    # the shared prior is counted once in a product
    both = composer.parse("fashion.class=bag & fashion.class=boot")
    torch.testing.assert_close(both(x, sigma=0.1), expected + experts.GUIDANCE * post[:, 9])


def test_unknown_value_is_one_clear_error():
    with pytest.raises(composer.ComposerError, match="not a value of fashion.class"):
        experts.make_value("hat")


def test_sample_inpaint_score_commands(weights, tmp_path, capsys):
    assert main(["sample", "fashion.class=bag", "-n", "3", "--out", str(tmp_path / "s.npz"), "-q"]) == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (3, 1, 28, 28) and np.isfinite(f["x"]).all()
    assert main(["dataset", "fashion", "--split", "test", "-n", "4", "--out", str(tmp_path / "t.npz")]) == 0
    assert main(["inpaint", "fashion.class=sneaker", "--image", f"{tmp_path / 't.npz'}:0,1", "--mask", "left",
                 "-n", "2", "--out", str(tmp_path / "i.npz"), "-q"]) == 0
    with np.load(tmp_path / "i.npz") as f:
        assert f["x"].shape == (4, 1, 28, 28) and f["mask"][0, :, :14].all() and not f["mask"][0, :, 14:].any()
        # observed pixels stay near the observation (noise 0.05; a few noise std after annealing)
        obs = np.repeat(f["observed"], 2, axis=0)
        assert np.abs((f["x"] - obs)[:, :, :, :14]).mean() < 0.1
    assert main(["inpaint", "fashion.class=bag", "--image", f"{tmp_path / 't.npz'}:0", "--mask", "box=1:5,1:5",
                 "-n", "2", "--out", str(tmp_path / "i.png"), "-q"]) == 0
    assert (tmp_path / "i.png").stat().st_size > 0
    assert main(["score", "fashion.prior", str(tmp_path / "t.npz"), "--score", "levels",
                 "--out", str(tmp_path / "sc.npz")]) == 0
    with np.load(tmp_path / "sc.npz") as f:
        assert f["score"].shape == (4,) and np.isfinite(f["score"]).all()


def test_cli_errors_are_one_line(weights, tmp_path, capsys):
    assert main(["inpaint", "fashion.class=bag", "--image", str(tmp_path / "none.png"), "--out",
                 str(tmp_path / "o.png")]) == 1
    assert main(["inpaint", "fashion.class=bag", "--image", str(tmp_path / "none.npz:0"), "--mask", "diagonal",
                 "--out", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "Traceback" not in err and "observed image not found" in err
    assert main(["score", "fashion.prior", str(tmp_path / "none.npz"), "--score", "magic"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_ood_protocol_runs(weights, tmp_path):
    from composer_fashion.ood import ood_sets, run_protocol

    x_in, sets, notes = ood_sets(10, seed=0)
    assert x_in.shape == (10, 1, 28, 28) and all(v.shape == (10, 1, 28, 28) for v in sets.values())
    assert sets["constant"].flatten(1).std(1).max() == 0 and 0 <= float(sets["noise"].min())
    torch.testing.assert_close(sets["flipped"].flip(-2).flip(-2), sets["flipped"])
    result = run_protocol(composer.parse("fashion.prior"), n=10, scores={
        "levels": {"kind": "levels"}, "typ": {"kind": "typicality", "sigma": 0.1}})
    for name in ("levels", "typ"):
        assert set(result["auroc"][name]) == set(result["sets"])
        assert all(0.0 <= v <= 1.0 for v in result["auroc"][name].values())
