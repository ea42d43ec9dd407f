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
