"""An analytic expert with parameters and validation: ``template.bowl``."""

from collections.abc import Sequence

import torch

import composer


class Bowl(composer.Energy):
    """Quadratic bowl: E(x) = 0.5 * scale * ||x - center||^2.

    Args:
        center: ``(D,)`` list of numbers; ``D`` is the dimension of the samples.
        scale: positive curvature (the inverse variance of ``exp(-E)``).
    """

    def __init__(self, center: Sequence[float], scale: float = 1.0):
        center = torch.as_tensor(center, dtype=torch.float32)
        if center.dim() != 1 or center.numel() == 0:
            raise composer.CompositionError(f"template.bowl: center must be a list of numbers, got {center.tolist()}")
        if not scale > 0:
            raise composer.CompositionError(f"template.bowl: scale must be > 0, got {scale}")
        super().__init__(event_shape=center.shape)
        self.register_buffer("center", center)  # a buffer follows .to(device)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B,)``."""
        return 0.5 * self.scale * (x - self.center).pow(2).sum(-1)
