"""The README's Python example prints the exact product (tests/test_docs.py runs every block; this checks numbers)."""

from __future__ import annotations

import re
from pathlib import Path

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
