"""``composer --threads`` / ``COMPOSER_THREADS``: torch's intra-op threads (default: one per idle core)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import composer.threads as threads_module
from composer.cli import cli
from composer.threads import idle_threads


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--threads", "3"], {}, 3),
    ([], {"COMPOSER_THREADS": "2"}, 2),
    (["--threads", "2"], {"COMPOSER_THREADS": "3"}, 2),  # the option wins over the variable
])
def test_threads_option_and_variable(args, env, expected, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("COMPOSER_THREADS", raising=False)
    torch.set_num_threads(4)
    result = CliRunner().invoke(cli, [*args, "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == expected


@pytest.mark.parametrize(("cores", "load", "expected"), [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 7.5, 1), (8, 3.2, 5), (1, 0.0, 1), (4, 0.0, 4),
])
def test_idle_threads_counts_idle_cores(cores, load, expected):
    assert idle_threads(cores, load) == expected


def test_the_probe_counts_cores_left_idle_by_other_processes(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module.os, "cpu_count", lambda: 2)

    def ticks(user, idle):  # the first line of /proc/stat: user nice system idle iowait irq softirq steal
        stat.write_text(f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 ...\n")

    for busy_user, expected in ((100, 2), (200, 1), (150, 1), (130, 2)):  # 200 ticks in the window
        ticks(1000, 5000)
        probe = threads_module.IdleProbe(str(stat))
        ticks(1000 + busy_user, 5000 + 200 - busy_user)  # we are one core (100 ticks) of the 200
        assert probe.threads(own=1.0) == expected, busy_user
        ticks(1000, 5000)
        probe = threads_module.IdleProbe(str(stat))
        ticks(1000 + busy_user - 100, 5000 + 300 - busy_user)  # the same others, while we sleep
        assert probe.threads() == expected, busy_user
    ticks(1000, 5000)
    probe = threads_module.IdleProbe(str(stat))
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (1.5, 1.5, 1.5))
    assert probe.threads() == 1  # a window too short to tell: the load average decides
    assert threads_module.IdleProbe(str(tmp_path / "missing")).threads() == 1


def test_the_default_follows_the_load(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("COMPOSER_THREADS", raising=False)
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "_cpu_ticks", lambda stat="": None)  # no /proc/stat: the load average
    for load, expected in ((0.1, 2), (1.5, 1)):
        monkeypatch.setattr(threads_module.os, "getloadavg", lambda load=load: (load, load, load))
        torch.set_num_threads(4)
        assert CliRunner().invoke(cli, ["dataset", "nothing", "--out", "x.npz"]).exit_code == 1
        assert torch.get_num_threads() == expected
    torch.set_num_threads(4)
    assert CliRunner().invoke(cli, ["list", "--json"]).exit_code == 0
    assert torch.get_num_threads() == 4  # listing computes nothing: torch left alone


def test_omp_num_threads_is_respected_and_bad_values_refused(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("COMPOSER_THREADS", raising=False)
    torch.set_num_threads(3)
    assert CliRunner().invoke(cli, ["list", "--json"]).exit_code == 0
    assert torch.get_num_threads() == 3  # the user's OMP_NUM_THREADS governs; composer leaves torch alone
    bad = CliRunner().invoke(cli, ["--threads", "-1", "list"])
    assert bad.exit_code == 2 and "--threads" in bad.output
