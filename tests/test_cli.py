"""The `composer` command line: real commands, real files, one-line errors (never a traceback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import composer
from composer import cli, plugins
from composer.energy import ConditionalEnergy


class Bowl(composer.Energy):
    """E(x) = 0.5 * ||x - center||^2."""

    def __init__(self, center=(0.0, 0.0)):
        c = torch.as_tensor(center, dtype=torch.float32)
        super().__init__(c.shape)
        self.register_buffer("center", c)

    def forward(self, x):
        return 0.5 * ((x - self.center) ** 2).sum(-1)


class SideNet(torch.nn.Module):
    """Two values: 'left' has its minimum at x0=-1, 'right' at x0=+1."""

    def forward(self, x, cond):
        return 2.0 * (x[:, 0] - (2.0 * cond.float() - 1.0)) ** 2 + 0.5 * x[:, 1] ** 2


class LocalPlugin:
    side_net = SideNet()

    @composer.hookimpl
    def register_experts(self, register):
        register("local.bowl", Bowl, doc="A unit bowl.")

    @composer.hookimpl
    def register_concepts(self, register):
        values = ["left", "right"]
        register("local.side", values,
                 lambda v: ConditionalEnergy(self.side_net, torch.tensor(values.index(v)), (2,)), doc="Left or right.")

    @composer.hookimpl
    def register_datasets(self, register):
        def points(n=10, seed=0, split="train"):
            if split not in ("train", "test"):
                raise composer.ComposerError(f"unknown split '{split}' (valid: train, test)")
            g = np.random.default_rng(seed)
            return {"x": g.normal(size=(n, 2)).astype(np.float32), "label": np.zeros(n, np.int64),
                    "meta": {"split": split}}

        register("points", points, doc="Gaussian points.")


@pytest.fixture
def local_registry(monkeypatch):
    """The CLI's process-wide registry, with the local plugin added to the installed ones."""
    pm = plugins.PluginManager()
    pm.register(LocalPlugin(), "local")
    monkeypatch.setattr(plugins, "_DEFAULT", (pm, pm.build_registry()))
    yield


def run(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_shows_examples(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "Examples:" in out and "composer sample" in out
    for sub in ("list", "show", "sample", "dataset", "infer"):
        code, out, _ = run(capsys, sub, "--help")
        assert code == 0 and "Examples:" in out, sub


def test_list_names_plugins_experts_concepts_samplers(capsys, local_registry):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for needle in ("local.bowl", "local.side = {left, right}", "toy.gaussian", "langevin", "mala", "points"):
        assert needle in out
    code, out, _ = run(capsys, "list", "--json")
    info = json.loads(out)
    assert info["concepts"]["local.side"]["values"] == ["left", "right"]


def test_show_prints_formula_and_tree(capsys, local_registry):
    code, out, _ = run(capsys, "show", "local.bowl(center=[1, 2]) & 0.5 * ~right")
    assert code == 0
    assert "formula: local.bowl(center=[1, 2]) & 0.5 * ~local.side=right" in out
    assert "NOT, alpha 0.5" in out


def test_sample_product_of_gaussians_npz(tmp_path, capsys):
    out_file = tmp_path / "s.npz"
    code, _, err = run(capsys, "sample", "toy.gaussian(mean=[0,0], std=1) & toy.gaussian(mean=[2,0], std=1)",
                       "-n", "2000", "--out", str(out_file), "--seed", "1", "-q")
    assert code == 0, err
    with np.load(out_file) as data:
        x, e = data["x"], data["energy"]
    assert x.dtype == np.float32 and x.shape == (2000, 2) and e.shape == (2000,)
    # exact: N((1, 0), 0.5 I); the standard error of the mean is sqrt(0.5/2000) = 0.016 (more with
    # autocorrelation-free but discretised Langevin), so 0.08 is > 4 standard errors plus bias
    np.testing.assert_allclose(x.mean(0), [1.0, 0.0], atol=0.08)


def test_sample_png_and_trace(tmp_path, capsys, local_registry):
    png, trace = tmp_path / "ring.png", tmp_path / "trace.png"
    code, _, err = run(capsys, "sample", "local.bowl & left", "-n", "300", "--steps", "50",
                       "--out", str(png), "--trace", str(trace), "-q")
    assert code == 0, err
    for f in (png, trace):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000


def test_sample_with_definitions_file(tmp_path, capsys, local_registry):
    defs = tmp_path / "defs.toml"
    defs.write_text('pair = "local.bowl & left"\nscene = "pair | right"\n')
    code, out, err = run(capsys, "show", "scene", "--defs", str(defs))
    assert code == 0, err
    assert "local.bowl & local.side=left | local.side=right" in out


def test_dataset_and_infer(tmp_path, capsys, local_registry):
    f = tmp_path / "pts.npz"
    code, _, err = run(capsys, "dataset", "points", "-n", "7", "--seed", "3", "--out", str(f))
    assert code == 0, err
    with np.load(f) as data:
        assert data["x"].shape == (7, 2) and json.loads(str(data["meta"])) == {"split": "train"}
    x = np.array([[-1.0, 0.0], [1.2, 0.3], [-0.2, 5.0]], np.float32)
    np.save(tmp_path / "q.npy", x)
    code, out, err = run(capsys, "infer", str(tmp_path / "q.npy"), "--family", "local.side")
    assert code == 0, err
    assert [line.split("\t")[1] for line in out.strip().splitlines()] == ["left", "right", "left"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "toy.gaussian(mean=[0,0] & toy.ring", "--out", "s.npz"], "position"),
        (["sample", "toy.gausian(mean=[0,0], std=1)"], "did you mean: toy.gaussian"),
        (["sample", "toy.gaussian(mean=[0,0], sdt=1)"], "unexpected argument 'sdt'"),
        (["sample", "~toy.gaussian(mean=[0,0], std=1)"], "positive expert"),
        (["sample", "toy.gaussian(mean=[0,0], std=1)", "--out", "s.txt"], "must end in .npz or .png"),
        (["sample", "toy.gaussian(mean=[0,0], std=1)", "--out", "/no/such/dir/s.npz"], "does not exist"),
        (["sample", "toy.gaussian(mean=[0,0], std=1)", "--noise", "loud"], "neither 'exact' nor a number"),
        (["sample", "toy.gaussian(mean=[0,0], std=1)", "--sampler", "malla"], "did you mean: mala"),
        (["sample", "toy.gaussian(mean=[0,0], std=1)", "--device", "cuda:7"], "not available"),
        (["sample", "scene", "--defs", "/no/such.toml"], "such.toml"),
        (["sample", "toy.gaussian(mean=[0,0], std=1)", "-n", "0"], "-n"),
        (["infer", "/no/such.npz", "--family", "local.side"], "no such file"),
        (["infer", "x.npz", "--family", "local.sides"], "did you mean: local.side"),
        (["dataset", "points", "--split", "nope", "--out", "p.npz"], "unknown split 'nope'"),
        (["dataset", "pointz", "--out", "p.npz"], "did you mean: points"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, capsys, local_registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if args[0] == "infer" and args[1] == "x.npz":
        np.savez(tmp_path / "x.npz", x=np.zeros((2, 2), np.float32))
    code, out, err = run(capsys, *args)
    assert code != 0
    assert message in err, err
    assert "Traceback" not in err + out
    assert err.strip().count("\n") <= 3  # one message (plus the caret drawing for syntax errors)


def test_divergence_is_reported_not_nan(tmp_path, capsys, local_registry):
    out_file = tmp_path / "d.npz"
    code, _, err = run(capsys, "sample", "local.bowl & 5 * ~local.bowl", "--out", str(out_file), "-q",
                       "--steps", "200", "--step-size", "0.5")
    assert code == 1 and "unbounded below" in err and not out_file.exists()
    # asked for explicitly: a warning, then the run diverges as it must
    code, _, err = run(capsys, "sample", "local.bowl & 5 * ~local.bowl", "--out", str(out_file), "-q",
                       "--steps", "200", "--step-size", "0.5", "--allow-unbounded")
    assert code == 1 and "warning: the composition is unbounded below" in err and "diverged" in err
    assert not out_file.exists()


def test_plugin_group_is_made_once_and_shared():
    import click

    from composer import ComposerError
    from composer.cli import plugin_group

    root = click.Group("root")
    first, second = click.Command("a"), click.Command("b")
    plugin_group(root, "eval").add_command(first)
    plugin_group(root, "eval").add_command(second)
    assert set(root.commands) == {"eval"} and set(root.commands["eval"].commands) == {"a", "b"}
    assert "plugins" in root.commands["eval"].help
    root.add_command(click.Command("plain"))
    with pytest.raises(ComposerError, match="not a group"):
        plugin_group(root, "plain")
