"""Per-sample scores and AUROC (``composer.scores``) against exact answers."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.scores import auroc, score


def test_auroc_exact_values():
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 1.0
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5  # ties count one half
    # Mann-Whitney by brute force on random data with ties
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 5, (40,), generator=g).double(), torch.randint(1, 6, (30,), generator=g).double()
    brute = ((b[:, None] > a[None]).double() + 0.5 * (b[:, None] == a[None]).double()).mean().item()
    assert auroc(a, b) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(composer.ComposerError):
        auroc(torch.tensor([]), torch.tensor([1.0]))


def test_scores_of_an_analytic_energy():
    e = composer.as_energy(lambda x: 0.5 * x.square().sum(-1), event_shape=(3,))
    x = torch.randn(7, 3)
    torch.testing.assert_close(score(e, x, "energy", batch=3), 0.5 * x.square().sum(-1))
    torch.testing.assert_close(score(e, x, "grad-norm", batch=4), x.norm(dim=1))
    with pytest.raises(composer.ComposerError, match="noise-conditional"):
        score(e, x, "levels")
    with pytest.raises(composer.ComposerError, match="unknown score"):
        score(e, x, "likelihood")


def test_levels_sums_sigma_squared_energies():
    class Noisy(composer.Energy):
        noise_conditional = True

        def forward(self, x, sigma=None):
            return x.square().sum(-1) / (2 * torch.as_tensor(sigma) ** 2)

    e = Noisy(event_shape=(2,))
    x = torch.randn(5, 2)
    torch.testing.assert_close(score(e, x, "levels", sigmas=[0.1, 1.0, 3.0]), 1.5 * x.square().sum(-1))


def test_typicality_is_the_two_sided_robust_z_of_the_energy():
    # E(x) = x for 1-D x; reference 0..10: median 5, MAD 3 (|r - 5| = 5,4,3,2,1,0,1,2,3,4,5)
    e = composer.as_energy(lambda x: x[:, 0], event_shape=(1,))
    reference = torch.arange(11.0)[:, None]
    x = torch.tensor([[5.0], [8.0], [-1.0], [20.0]])
    expected = (x[:, 0] - 5.0).abs() / (1.4826 * 3.0)
    torch.testing.assert_close(score(e, x, "typicality", reference=reference), expected)
    # an energy far *below* the reference's is as atypical as one far above
    assert score(e, torch.tensor([[-10.0]]), "typicality", reference=reference).item() == pytest.approx(
        score(e, torch.tensor([[20.0]]), "typicality", reference=reference).item())
    with pytest.raises(composer.ComposerError, match="needs reference"):
        score(e, x, "typicality")
    with pytest.raises(composer.ComposerError, match="at least 10"):
        score(e, x, "typicality", reference=reference[:3])
    with pytest.raises(composer.ComposerError, match="do not vary"):
        score(e, x, "typicality", reference=torch.ones(12, 1))


def test_auroc_table_matches_scores_computed_one_by_one():
    from composer.scores import auroc_table, markdown_table

    e = composer.as_energy(lambda x: x[:, 0], event_shape=(1,))
    g = torch.Generator().manual_seed(0)
    x_in, reference = torch.randn(50, 1, generator=g), torch.randn(200, 1, generator=g)
    sets = {"high": torch.randn(40, 1, generator=g) + 5.0, "low": torch.randn(40, 1, generator=g) - 5.0}
    specs = {"energy": {"kind": "energy"}, "typ": {"kind": "typicality"}}
    table = auroc_table(e, x_in, sets, specs, reference=reference)
    for name, spec in specs.items():
        extra = {"reference": reference} if spec["kind"] == "typicality" else {}
        for k, v in sets.items():
            want = auroc(score(e, x_in, **spec, **extra), score(e, v, **spec, **extra))
            assert table[name][k] == pytest.approx(want, abs=1e-4)
    # the energy misses the low set entirely; typicality catches both sides
    assert table["energy"]["low"] < 0.01 and table["typ"]["low"] > 0.99 and table["typ"]["high"] > 0.99
    assert markdown_table(table).splitlines()[0] == "| score | high | low |"
    with pytest.raises(composer.ComposerError, match="reference"):
        auroc_table(e, x_in, sets, {"typ": {"kind": "typicality"}})


def test_score_cli_typicality_reads_a_reference_file(tmp_path, capsys):
    import json

    import numpy as np

    from composer import cli

    np.savez(tmp_path / "ref.npz", x=np.arange(11.0, dtype=np.float32)[:, None].repeat(2, axis=1))
    np.savez(tmp_path / "x.npz", x=np.array([[5.0, 5.0], [8.0, 8.0]], dtype=np.float32))
    code = cli.main(["score", "toy.gaussian(mean=[0, 0])", str(tmp_path / "x.npz"), "--score", "typicality",
                     "--reference", str(tmp_path / "ref.npz"), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    s = json.loads(out.out.splitlines()[-1])["scores"]
    assert s[0] < s[1]
    code = cli.main(["score", "toy.gaussian(mean=[0, 0])", str(tmp_path / "x.npz"), "--score", "typicality"])
    err = capsys.readouterr().err
    assert code != 0 and "reference" in err and "Traceback" not in err
