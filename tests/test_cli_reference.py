"""The reference and the small things a new user trips over: `list --params`, a closed pipe, plain `--help`,
the sample summary, shape checks of `as_energy`, figure titles, and the generated API page's staleness check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import composer
from composer import cli
from composer.registry import factory_parameters


def run(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_params_come_from_the_factory_signature(capsys):
    code, out, _ = run(capsys, "list", "--params")
    assert code == 0
    box = out[out.index("  toy.box "):].splitlines()
    assert "(sharpness/2)" in box[0]  # the docstring names the argument, not a symbol
    assert box[1:4] == ["      low: float | Sequence[float] | Tensor (required)",
                        "      high: float | Sequence[float] | Tensor (required)",
                        "      sharpness: float = 100"]
    code, out, _ = run(capsys, "list", "--json")
    ring = json.loads(out)["experts"]["toy.ring"]["params"]
    assert ring == [{"name": "radius", "type": "float", "default": "1"},
                    {"name": "width", "type": "float", "default": "0.1"},
                    {"name": "dim", "type": "int", "default": "2"}]


def test_factory_parameters_of_plain_functions_and_kwargs():
    def f(a, b: int = 3, *, c: str = "x"): ...

    def g(**anything): ...

    assert factory_parameters(f) == [{"name": "a", "type": ""}, {"name": "b", "type": "int", "default": "3"},
                                     {"name": "c", "type": "str", "default": '"x"'}]
    assert factory_parameters(g) is None


def test_a_reader_that_leaves_early_is_not_an_error():
    """`composer list | head -1`: the pipe closes before composer writes; exit 0, nothing on stderr."""
    p = subprocess.Popen([sys.executable, "-m", "composer.cli", "list", "--params"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0, err
    assert err == b""


def test_help_has_no_rst_marks(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "``" not in out
    for name in cli.cli.commands:
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and "``" not in out, name


def test_sample_summary_reads_for_points_and_for_images():
    points = cli.sample_summary(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1.0, 2.0]))
    assert points == "mean [2.000, 3.000], mean energy 1.5"
    images = cli.sample_summary(torch.linspace(-0.5, 1.5, 2 * 3 * 4 * 4).view(2, 3, 4, 4), torch.tensor([7.0, 9.0]))
    assert images == "shape 3x4x4, range [-0.5, 1.5], mean energy 8"


def test_as_energy_rejects_a_b_by_1_output_at_the_first_call():
    e = composer.as_energy(torch.nn.Linear(2, 1), event_shape=(2,))
    with pytest.raises(composer.CompositionError, match=r"shape \(3, 1\); expected \(3,\), .*; squeeze it"):
        e(torch.zeros(3, 2))
    with pytest.raises(composer.CompositionError, match=r"returned a float; expected \(3,\)"):
        composer.as_energy(lambda x: 1.0, event_shape=(2,))(torch.zeros(3, 2))
    ok = composer.as_energy(lambda x: torch.nn.functional.linear(x, torch.ones(1, 2)).squeeze(-1), event_shape=(2,))
    assert ok(torch.ones(3, 2)).tolist() == [2.0, 2.0, 2.0]


def test_long_titles_are_wrapped_inside_the_figure():
    from composer.figures import _pyplot, wrap_title

    title = " & ".join(f"toy.gaussian(mean=[{i}, 0], std=1)" for i in range(6))
    lines = wrap_title(title, 60).splitlines()
    assert 2 <= len(lines) <= 4 and all(len(s) <= 60 for s in lines)
    assert " ".join(lines) == title
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)  # the size save_points_png draws at
    text = ax.set_title(wrap_title(title, 60), fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    box = text.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (box, fig.bbox)
    plt.close(fig)
    assert wrap_title("x " * 400, 60).endswith("...") and len(wrap_title("x " * 400, 60).splitlines()) == 4


def test_docgen_check_fails_on_a_stale_page(tmp_path):
    from composer import docgen

    page = tmp_path / "api.md"
    page.write_text("# API reference\n")
    assert docgen.main(["--check", "--out", str(page)]) == 1
    assert docgen.main(["--out", str(page)]) == 0
    assert docgen.main(["--check", "--out", str(page)]) == 0
