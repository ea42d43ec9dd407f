"""The shipped shapes networks run their convolutions channels-last (speed only): the same energies and
gradients as the plain NCHW reference path, to float rounding."""

from __future__ import annotations

import torch

import composer
from composer.sampling.target import Target


def test_main_job_energies_and_gradients_match_the_reference_convolutions():
    """Reference: oneDNN disabled (PyTorch's own NCHW convolution kernels), a different algorithm; float32
    sums of a few thousand products differ by ~1e-6 relative, so 1e-4 relative is a safe bound that an
    actual change of the computation (a wrong layout, a transposed weight) would exceed by orders."""
    energy = composer.parse("red & triangle & ~top_left")
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    target = Target(energy, sigma=torch.full((8,), 0.3))
    e, g = target.value_and_grad(x)
    with torch.backends.mkldnn.flags(enabled=False):
        e_ref, g_ref = target.value_and_grad(x)
    torch.testing.assert_close(e, e_ref, rtol=1e-4, atol=1e-4 * float(e_ref.abs().max()))
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4 * float(g_ref.abs().max()))
    from composer_shapes.nets import UNet
    from composer_shapes.posteriors import ViewPosterior

    nets = [m for m in energy.modules() if isinstance(m, (UNet, ViewPosterior))]
    convs = [c for n in nets for c in n.modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


def test_the_colour_network_runs_once_per_evaluation_with_the_same_energies(monkeypatch):
    """The prior's colour mixture and red's Bayes likelihood share one call of the colour network inside the
    sampler's evaluation scope; outside it (a plain call) each part calls it. Same energies; gradients
    agree to float rounding (one backward pass through the shared call sums what two passes summed at x)."""
    from composer_shapes import posteriors

    calls = []
    original = posteriors._all_values
    monkeypatch.setattr(posteriors, "_all_values", lambda *a: calls.append(1) or original(*a))
    energy = composer.parse("red & triangle & ~top_left")
    torch.manual_seed(1)
    x = torch.rand(8, 3, 32, 32)
    sigma = torch.full((8,), 0.2)
    e, g = Target(energy, sigma=sigma).value_and_grad(x)
    assert len(calls) == 1
    xr = x.clone().requires_grad_(True)
    e_ref = energy(xr, sigma=sigma)
    (g_ref,) = torch.autograd.grad(e_ref.sum(), xr)
    assert len(calls) == 3
    torch.testing.assert_close(e, e_ref.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5 * float(g_ref.abs().max()))


def test_film_in_one_pass_equals_the_written_formula():
    """``addcmul(bias, h, 1 + gain)`` is ``h * (1 + gain) + bias`` up to one rounding (fused multiply-add)."""
    from composer_shapes.nets import FiLM

    torch.manual_seed(0)
    film = FiLM(8, 16)
    torch.nn.init.normal_(film.proj.weight)
    torch.nn.init.normal_(film.proj.bias)
    h = torch.randn(4, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    emb = torch.randn(4, 8)
    gain, bias = film.proj(emb)[:, :, None, None].chunk(2, dim=1)
    expected = h * (1 + gain) + bias
    out = film(h, emb)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    g1, g2 = torch.autograd.grad(out.square().sum(), h)[0], torch.autograd.grad(expected.square().sum(), h)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)
