"""``composer ood shapes``: the off-world sets break what they claim to, and the protocol runs end to end."""

from __future__ import annotations

import json

import pytest
import torch
from composer_shapes import offworld
from composer_shapes.ood import offworld_sets

from composer import cli


def test_offworld_sets_one_per_break_and_deterministic():
    sets = offworld_sets(12, seed=0)
    assert list(sets) == [*offworld.BREAKS, "noise"]
    assert all(v.shape == (12, 3, 32, 32) and v.dtype == torch.float32 for v in sets.values())
    assert all(float(v.min()) >= 0.0 and float(v.max()) <= 1.0 for v in sets.values())
    assert float(sets["empty"].abs().max()) == 0.0  # black canvases
    assert float(sets["color"].amax(dim=(1, 2, 3)).min()) > 0.3  # an object is there
    again = offworld_sets(12, seed=0)
    assert all(torch.equal(sets[k], again[k]) for k in sets)
    assert not torch.equal(offworld_sets(12, seed=1)["shape"], sets["shape"])


def test_ood_shapes_cli_writes_the_table(tmp_path, capsys):
    out = tmp_path / "ood.json"
    code = cli.main(["--threads", "1", "ood", "shapes", "-n", "16", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    assert result["expression"] == "shapes.prior" and result["n"] == 16
    assert set(result["sets"]) == {*offworld.BREAKS, "noise"}
    table = result["auroc"]
    assert all(0.0 <= v <= 1.0 for row in table.values() for v in row.values())
    # noise and off-world colours are plain for the prior; an empty canvas has *lower* energy than any world
    # image (AUROC 0 for the energy) and only the two-sided typicality score flags it
    assert table["energy@0.05"]["noise"] > 0.95 and table["energy@0.05"]["color"] > 0.9
    assert table["energy@0.05"]["empty"] < 0.1 and table["typicality@0.05"]["empty"] > 0.9
    assert "| score | color |" in captured.out


@pytest.mark.parametrize("args, message", [
    (["-n", "5"], "-n"),
    (["--json", "table.txt"], ".json"),
    (["no.such.expert"], "no.such.expert"),
])
def test_ood_shapes_bad_input_is_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["ood", "shapes", *args])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())
