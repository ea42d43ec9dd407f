"""The README's Python examples run as written (the plugin example registers and composes)."""

from __future__ import annotations

import re
import types
from pathlib import Path

import torch

import composer
from composer.plugins import PluginManager

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> dict[str, str]:
    """Python code blocks of the README keyed by the section (## heading) they are in."""
    blocks: dict[str, str] = {}
    for section in re.split(r"^## ", README.read_text(), flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        for code in re.findall(r"```python\n(.*?)```", section, flags=re.S):
            blocks.setdefault(title, code)
    return blocks


def test_python_example_runs_and_prints_the_exact_product(capsys):
    exec(compile(python_blocks()["In Python"], "README:In Python", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "toy.gaussian(mean=[0, 0], std=1) & toy.gaussian(mean=[2, 0], std=1)"
    mean = [float(v) for v in re.findall(r"-?\d+\.\d+", lines[1])]
    var = [float(v) for v in re.findall(r"-?\d+\.\d+", lines[2])]
    # exact answer N((1, 0), 0.5 I); 4000 chains: standard error of the mean 0.011, of the variance 0.011
    assert abs(mean[0] - 1) < 0.05 and abs(mean[1]) < 0.05
    assert all(abs(v - 0.5) < 0.05 for v in var)


def test_plugin_example_registers_and_composes():
    module = types.ModuleType("composer_quadratic")
    exec(compile(python_blocks()["Write a plugin"], "README:Write a plugin", "exec"), module.__dict__)
    pm = PluginManager(entry_points=False)
    pm.register(module, "quadratic")
    reg = pm.build_registry()
    assert not reg.failures
    bowl = reg.make_expert("quadratic.bowl", center=[1, 1])
    x = torch.randn(8, 2)
    torch.testing.assert_close(bowl(x), 0.5 * ((x - 1) ** 2).sum(-1))
    ring = composer.as_energy(lambda x: (x.norm(dim=-1) - 2) ** 2, event_shape=(2,))
    torch.testing.assert_close((bowl & ring)(x), bowl(x) + ring(x))
    assert composer.sample(bowl & ring, n=16, steps=5, seed=0).x.shape == (16, 2)
