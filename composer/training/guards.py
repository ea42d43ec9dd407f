"""Stability guard: detect a diverging training run without a host sync per step.

Each step folds ``|mean E(x+)|``, ``|mean E(x-)|`` and ``|loss|`` into a device-side flag
(non-finite or above the recipe's bounds); the trainer reads it every log interval and before
every checkpoint, so a checkpoint never holds a diverged model. What happens then is the
recipe's ``[guard] action``: ``"abort"`` raises ``TrainingDivergedError``; ``"rollback"``
reloads the last checkpoint with a halved learning rate (at most ``max_rollbacks`` times).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from composer.errors import ComposerError
from composer.training.config import GuardConfig


class TrainingDivergedError(ComposerError):
    """Training diverged (non-finite or exploding energies or loss)."""


class DivergenceGuard:
    """Accumulates a divergence flag on the device; ``check()`` turns it into a message.

    Args:
        cfg: the ``[guard]`` table.
    """

    def __init__(self, cfg: GuardConfig):
        self.cfg = cfg
        self.rollbacks = 0
        self._first_bad: Tensor | None = None  # step of the first bad update, -1 while none
        self._values: Tensor | None = None  # (|E+|, |E-|, |loss|) at that step

    def observe(self, step: int, e_pos: Tensor, e_neg: Tensor, loss: Tensor) -> None:
        """Record the scalars of update number ``step`` (1-based, as in logs; 0-dim tensors, no host sync)."""
        vals = torch.stack([e_pos.detach().abs(), e_neg.detach().abs(), loss.detach().abs()]).float()
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=vals.device)
            self._values = torch.zeros(3, device=vals.device)
            self._bounds = torch.tensor([self.cfg.max_energy, self.cfg.max_energy, self.cfg.max_loss],
                                        device=vals.device)
        bad = (~torch.isfinite(vals) | (vals > self._bounds)).any()
        fresh = bad & (self._first_bad < 0)
        self._first_bad = torch.where(fresh, torch.full_like(self._first_bad, step), self._first_bad)
        self._values = torch.where(fresh, vals, self._values)

    def check(self) -> str | None:
        """``None`` if every observed step was healthy, else a message naming the first bad step."""
        if self._first_bad is None or int(self._first_bad) < 0:
            return None
        step = int(self._first_bad)
        e_pos, e_neg, loss = (float(v) for v in self._values)
        parts = []
        for label, v, bound in (("|mean E(x+)|", e_pos, self.cfg.max_energy),
                                ("|mean E(x-)|", e_neg, self.cfg.max_energy), ("|loss|", loss, self.cfg.max_loss)):
            if not math.isfinite(v):
                parts.append(f"{label} is {v}")
            elif v > bound:
                parts.append(f"{label} = {v:.4g} exceeds {bound:g}")
        return f"training diverged at step {step}: {'; '.join(parts)}"

    def reset(self) -> None:
        """Forget the flag (after a rollback)."""
        self._first_bad = self._values = None

    def fail(self, message: str) -> TrainingDivergedError:
        """The error to raise for ``message``, with advice."""
        return TrainingDivergedError(
            f"{message}; lower [optim] lr, raise [cd] l2, clip gradients ([cd] clip_grad, [optim] clip_grad_norm) "
            "or set [guard] action = \"rollback\""
        )

    def can_roll_back(self) -> bool:
        """Whether the recipe asks for rollbacks and some are left."""
        return self.cfg.action == "rollback" and self.rollbacks < self.cfg.max_rollbacks
