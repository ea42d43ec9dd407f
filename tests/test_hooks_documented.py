"""Every hook a plugin can implement is documented: in its hookspec and in README.md or docs/."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from composer import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def hook_names() -> list[str]:
    """Names of the functions marked ``@hookspec`` in ``composer.hookspecs``."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return sorted(n for n, f in vars(hookspecs).items() if inspect.isfunction(f) and hasattr(f, marker))


def user_docs() -> str:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in files if p.is_file())


def test_the_hooks_are_found():  # guards the parametrised tests below against an empty list
    expected = {"register_commands", "register_concepts", "register_datasets", "register_experts", "register_samplers"}
    assert expected <= set(hook_names())


@pytest.mark.parametrize("name", hook_names())
def test_hookspec_has_a_docstring_and_typed_arguments(name):
    fn = getattr(hookspecs, name)
    assert inspect.getdoc(fn) and len(inspect.getdoc(fn).splitlines()) >= 2, f"{name} needs a docstring"
    sig = inspect.signature(fn)
    assert all(p.annotation is not p.empty for p in sig.parameters.values()), f"{name} needs type hints"


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_named_in_readme_or_docs(name):
    docs = user_docs()
    assert docs, "README.md is missing"
    assert name in docs, f"hook {name} is not documented in README.md or docs/*.md"
