"""An author's path: copy plugins/template, rename it, pip-install it, and see it in `composer`.

The copy is installed with ``pip install --no-deps --no-build-isolation --no-index --target DIR``: offline
(no index, the build backend of this environment) and into a temporary folder put on ``PYTHONPATH`` of
the ``composer`` subprocesses, so the test environment itself is never changed (an interrupted run
leaves nothing behind that would break ``composer list``). The temporary folder is the clean-up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "plugins" / "template"


def renamed_copy(dest: Path, name: str) -> Path:
    """``plugins/template`` copied to ``dest/composer-NAME`` with every ``template`` renamed to ``NAME``."""
    out = dest / f"composer-{name}"
    shutil.copytree(TEMPLATE, out, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    (out / "composer_template").rename(out / f"composer_{name}")
    for path in out.rglob("*"):
        if path.suffix in (".py", ".toml", ".md"):
            path.write_text(path.read_text().replace("template", name))
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(environment, work folder) with the renamed plugin ``acme`` installed for the subprocesses."""
    if not _has_pip():
        pytest.skip("pip is not available in this interpreter")
    pytest.importorskip("setuptools", reason="an offline build (--no-build-isolation) needs setuptools installed")
    tmp = tmp_path_factory.mktemp("author")
    project = renamed_copy(tmp, "acme")
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(project)], check=True, cwd=tmp, capture_output=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return env, tmp


def _has_pip() -> bool:
    return subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0


def composer(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "composer.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_the_renamed_copy_is_listed_with_its_parameters(installed):
    env, tmp = installed
    out = composer(env, tmp, "list", "--params")
    assert out.returncode == 0, out.stderr
    assert "acme.bowl  Quadratic bowl: E(x) = 0.5 * scale * ||x - center||^2.  [acme]" in out.stdout
    assert "center: Sequence[float] (required)" in out.stdout and "scale: float = 1" in out.stdout
    assert "acme.side = {west, east}" in out.stdout
    assert not out.stderr


def test_show_counts_the_flat_base_once(installed):
    env, tmp = installed
    out = composer(env, tmp, "show", "acme.bowl(center=[0, 0]) & ~acme.side=west & acme.side=east")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("[shared base, counted once] acme.flat") == 1
    assert "[NOT, alpha 1] acme.side=west" in out.stdout


def test_sample_writes_the_exact_composition(installed):
    env, tmp = installed
    out = composer(env, tmp, "sample", "acme.bowl(center=[0, 0]) & ~acme.side=west", "-n", "2000", "--steps", "300",
                   "--sampler", "mala", "--step-size", "0.2", "-q", "--out", "s.npz")
    assert out.returncode == 0, out.stderr
    assert re.search(r"wrote 2000 samples to s\.npz \(mean \[[-\d.]+, [-\d.]+\], mean energy", out.stderr)
    with np.load(tmp / "s.npz") as data:
        share = float((data["x"][:, 0] < 0).mean())
    # exact 12.9% (plugins/template/tests); 2000 chains: standard error 0.0075, tolerance ~5 standard errors
    assert abs(share - 0.129) < 0.04, share


def test_a_bad_parameter_is_one_line(installed):
    env, tmp = installed
    out = composer(env, tmp, "show", "acme.bowl(center=[0, 0], scale=-1)")
    assert out.returncode == 1
    assert out.stderr.startswith("composer: error: acme.bowl: scale must be > 0, got -1 at position 0:\n")
    assert "Traceback" not in out.stderr
