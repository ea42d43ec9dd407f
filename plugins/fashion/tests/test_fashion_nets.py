"""The fashion networks: exact energy forms, normalisation, configs that rebuild them."""

from __future__ import annotations

import pytest
import torch
from composer_fashion.nets import NETWORKS, DenoisingUNet, NoisyClassifier


def test_denoising_energy_is_the_residual_of_its_denoiser():
    torch.manual_seed(0)
    net = DenoisingUNet(widths=[4, 8, 8], dim=8)
    for p in net.parameters():  # FiLM starts at the identity; perturb everything so the check is not trivial
        p.data.add_(0.1 * torch.randn_like(p))
    x, sigma = torch.rand(3, 1, 28, 28), torch.tensor([0.1, 0.5, 2.0])
    expected = 0.5 * ((x - net.denoise(x, sigma)) / sigma[:, None, None, None]).square().flatten(1).sum(1)
    torch.testing.assert_close(net(x, sigma=sigma), expected)
    # EDM preconditioning: at huge sigma c_skip -> 0 and c_out -> sigma_data, so D(x) stays O(1)
    big = net.denoise(x, 1e4)
    assert big.abs().max() < 50


def test_posterior_energies_are_a_normalised_distribution():
    torch.manual_seed(1)
    net = NoisyClassifier(num_classes=10, widths=[4, 8, 8], hidden=16, dim=8)
    x = torch.rand(5, 1, 28, 28)
    e = net.energies_all(x, 0.3)
    torch.testing.assert_close(torch.logsumexp(-e, dim=1), torch.zeros(5), atol=1e-5, rtol=0)
    cond = torch.tensor([0, 3, 9, 1, 1])
    torch.testing.assert_close(net(x, cond, sigma=0.3), e.gather(1, cond[:, None]).squeeze(1))


def test_configs_rebuild_the_networks():
    for net in (DenoisingUNet(widths=[4, 8, 8], dim=8), NoisyClassifier(num_classes=3, widths=[4, 8, 8], dim=8)):
        cfg = dict(net.config)
        rebuilt = NETWORKS[cfg.pop("type")](**cfg)
        rebuilt.load_state_dict(net.state_dict())
        x = torch.rand(2, 1, 28, 28)
        cond = torch.tensor([0, 2]) if isinstance(net, NoisyClassifier) else None
        torch.testing.assert_close(rebuilt(x, cond, sigma=0.2), net(x, cond, sigma=0.2))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(1, 28, 28\)"):
        DenoisingUNet(event_shape=[3, 32, 32])
    with pytest.raises(ValueError, match="unconditional"):
        DenoisingUNet(num_classes=10)
    with pytest.raises(ValueError, match="noise-conditional"):
        NoisyClassifier(num_classes=10, noise_conditional=False)
    with pytest.raises(ValueError, match="at least two"):
        NoisyClassifier(num_classes=1)
