"""The observation expert ``composer.observe``: exact energy, noise-aware levels, masks, files, composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import composer
from composer.observe import ObservationError, Observe, load_image, parse_mask


def test_energy_is_the_masked_gaussian_log_likelihood():
    y = torch.rand(1, 4, 6)
    m = parse_mask("left", (1, 4, 6))
    e = Observe(y, m, noise=0.1)
    x = torch.rand(3, 1, 4, 6)
    expected = ((x - y)[:, :, :, :3] ** 2).flatten(1).sum(1) / (2 * 0.01)
    torch.testing.assert_close(e(x), expected)
    # noise-aware along the ladder: variance noise^2 + sigma^2, per chain
    sigma = torch.tensor([0.0, 0.3, 1.0])
    torch.testing.assert_close(e(x, sigma=sigma), expected * 0.01 / (0.01 + sigma**2))
    assert e.noise_conditional and e.event_shape == (1, 4, 6)


def test_one_observation_per_chain():
    y = torch.rand(2, 1, 3, 3)
    e = Observe(y, None, noise=1.0)
    x = torch.zeros(2, 1, 3, 3)
    torch.testing.assert_close(e(x), 0.5 * y.flatten(1).square().sum(1))
    with pytest.raises(ObservationError, match="2 observed images for 3 chains"):
        e(torch.zeros(3, 1, 3, 3))


@pytest.mark.parametrize("spec, first, last", [
    ("all", 1, 1), ("top", 1, 0), ("bottom", 0, 1), ("left", 1, 0), ("right", 0, 1), ("box=0:2,0:1", 1, 0),
    ("hole=0:2,0:1", 0, 1),
])
def test_masks(spec, first, last):
    """Whether the top-left and the bottom-right pixels are observed."""
    m = parse_mask(spec, (1, 4, 4))
    assert m.dtype == torch.bool and (int(m[0, 0, 0]), int(m[0, 3, 3])) == (first, last)


def test_mask_counts_exact():
    shape = (1, 28, 28)
    assert int(parse_mask("left", shape).sum()) == 28 * 14
    assert int(parse_mask("box=4:20,4:10", shape).sum()) == 16 * 6
    assert int(parse_mask("hole=4:20,4:10", shape).sum()) == 28 * 28 - 16 * 6
    for bad in ("diagonal", "box=0:30,0:5", "box=5:5,0:3"):
        with pytest.raises(ObservationError):
            parse_mask(bad, shape)


def test_gaussian_posterior_by_composition():
    """Prior N(0, I) & observe(y, noise s) is N(y / (1 + s^2), s^2 / (1 + s^2)) on observed entries and
    N(0, 1) elsewhere: check the energy's gradient against that posterior's score exactly."""
    s = 0.5
    y = torch.tensor([[[1.0, -2.0]]])  # event (1, 1, 2)
    mask = torch.tensor([[[True, False]]])
    prior = composer.as_energy(lambda x: 0.5 * x.flatten(1).square().sum(1), event_shape=(1, 1, 2))
    post = prior & Observe(y, mask, noise=s)
    x = torch.randn(5, 1, 1, 2, requires_grad=True)
    (g,) = torch.autograd.grad(post(x).sum(), x)
    mean = torch.tensor([1.0 / (1 + s * s), 0.0])
    prec = torch.tensor([(1 + s * s) / (s * s), 1.0])
    torch.testing.assert_close(g.view(5, 2), (x.detach().view(5, 2) - mean) * prec)


def test_load_image_png_and_npz(tmp_path):
    from PIL import Image

    a = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    Image.fromarray(a, mode="L").save(tmp_path / "a.png")
    torch.testing.assert_close(load_image(str(tmp_path / "a.png")), torch.from_numpy(a)[None].float() / 255)
    x = np.random.default_rng(0).random((5, 1, 3, 4)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x=x)
    torch.testing.assert_close(load_image(f"{tmp_path / 'b.npz'}:3"), torch.from_numpy(x[3]))
    assert load_image(f"{tmp_path / 'b.npz'}:0,2").shape == (2, 1, 3, 4)
    for bad, msg in ((f"{tmp_path / 'b.npz'}:9", "out of range"), (str(tmp_path / "c.png"), "not found"),
                     (f"{tmp_path / 'b.npz'}:x", "integers")):
        with pytest.raises(ObservationError, match=msg):
            load_image(bad)


def test_registered_in_the_language(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.full((2, 1, 4, 4), 0.5, dtype=np.float32))
    e = composer.parse(f'composer.observe(image="{tmp_path / "o.npz"}:1", mask="top", noise=0.1)')
    assert isinstance(e, Observe)
    torch.testing.assert_close(e(torch.zeros(1, 1, 4, 4)), torch.tensor([8 * 0.25 / 0.02]))
    with pytest.raises(composer.ComposerError, match="positive"):
        composer.parse(f'composer.observe(image="{tmp_path / "o.npz"}", noise=-1)')
