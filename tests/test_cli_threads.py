"""``composer --threads`` / ``COMPOSER_THREADS``: torch's intra-op threads (default 1)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from composer.cli import cli


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--threads", "3"], {}, 3),
    ([], {"COMPOSER_THREADS": "2"}, 2),
    (["--threads", "2"], {"COMPOSER_THREADS": "3"}, 2),  # the option wins over the variable
    ([], {}, 1),  # the default
])
def test_threads_option_and_variable(args, env, expected, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("COMPOSER_THREADS", raising=False)
    torch.set_num_threads(4)
    result = CliRunner().invoke(cli, [*args, "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == expected


def test_omp_num_threads_is_respected_and_bad_values_refused(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("COMPOSER_THREADS", raising=False)
    torch.set_num_threads(3)
    assert CliRunner().invoke(cli, ["list", "--json"]).exit_code == 0
    assert torch.get_num_threads() == 3  # the user's OMP_NUM_THREADS governs; composer leaves torch alone
    bad = CliRunner().invoke(cli, ["--threads", "-1", "list"])
    assert bad.exit_code == 2 and "--threads" in bad.output
