"""Per-step diagnostics recorded on the device without a host synchronisation per step.

Each step's chain energies, gradient norm and (Metropolis kernels) acceptance probabilities
go into one row of preallocated ring buffers of ``chunk`` rows: two or three small device
operations, and no allocation that outlives the step, so the allocator's heap does not fragment.
When a step's gradient is tiny (at most ``SMALL`` numbers, where those operations would cost more
than the step's arithmetic) the step's tensors are kept by reference instead (kernels never modify
them) and written into the rows at the flush: no operation at all per step. Every ``chunk`` steps
``flush`` reduces the rows into the per-step trace (mean/min/max energy, gradient norm, mean
acceptance) and returns, still on the device, whether every value was finite. Memory is
``O(chunk * B + steps)``, independent of how long the chains run.

With ``enabled=False`` nothing is recorded and ``flush`` only checks the current state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

TRACE_KEYS = ("energy_mean", "energy_min", "energy_max", "grad_norm", "acceptance")
SMALL = 256  # gradients up to this many numbers (1 KiB in float32) are recorded by reference


class TraceRecorder:
    """Ring buffers of ``chunk`` rows of ``B`` chains, reduced into ``(total,)`` traces.

    Args:
        total: number of steps to trace.
        chunk: rows of the ring buffers (steps between flushes).
        n: number of chains.
        acceptance: whether to trace acceptance probabilities.
        device, dtype: of the buffers.
        grad_numel: numbers in one step's gradient (``None``: no gradient); decides ``by_reference``.
        enabled: record the trace; if false, only the state at each flush is checked.
    """

    def __init__(
        self,
        total: int,
        chunk: int,
        n: int,
        acceptance: bool,
        device: torch.device,
        dtype: torch.dtype,
        grad_numel: int | None = None,
        enabled: bool = True,
    ):
        self.enabled = enabled
        keys = [k for k in TRACE_KEYS if k != "acceptance" or acceptance]
        self.table = torch.full((len(keys), total if enabled else 0), float("nan"), device=device, dtype=dtype)
        self.trace = dict(zip(keys, self.table.unbind(0))) if enabled else {}
        self.chunk, self.acceptance, self.device, self.dtype = chunk, acceptance, device, dtype
        self.row = 0
        self.by_reference = grad_numel is None or grad_numel <= SMALL
        self.kept: list[tuple[Tensor, Tensor | None, Tensor | None]] = []  # append to it to record by reference
        self.resize(n)

    def resize(self, n: int) -> None:
        """(Re)allocate the ring buffers for ``n`` chains (after chains stop); forgets kept rows."""
        self.n = n
        rows = self.chunk if self.enabled else 0
        self.energies = torch.empty((rows, n), device=self.device, dtype=self.dtype)
        self.norms = torch.empty((rows,), device=self.device, dtype=self.dtype)
        self.accepts = torch.empty((rows, n), device=self.device, dtype=self.dtype) if self.acceptance else None
        self._rows: tuple[list[Tensor], list[Tensor], list[Tensor]] | None = None  # row views, made on first use
        self.clear()

    def _row_views(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        if self._rows is None:
            accepts = list(self.accepts.unbind(0)) if self.accepts is not None else []
            self._rows = (list(self.energies.unbind(0)), list(self.norms.unbind(0)), accepts)
        return self._rows

    def clear(self) -> None:
        """Forget the kept rows."""
        self.row = 0
        self.kept.clear()

    def record(self, energy: Tensor, grad: Tensor | None, acceptance: Tensor | None) -> None:
        """Keep one step: ``energy (B,)``, ``grad (B, *event)`` or ``None``, ``acceptance (B,)`` or ``None``."""
        if not self.enabled:
            return
        if self.by_reference:
            self.kept.append((energy, grad, acceptance))
            return
        r = self.row
        energy_rows, norm_rows, accept_rows = self._rows or self._row_views()
        energy_rows[r].copy_(energy)
        if grad is None:
            norm_rows[r].zero_()
        else:
            torch.linalg.vector_norm(grad, out=norm_rows[r])  # over all chains: the cheapest reduction
        if self.acceptance:
            if acceptance is None:
                accept_rows[r].fill_(float("nan"))
            else:
                accept_rows[r].copy_(acceptance)
        self.row = r + 1

    def flush(self, start: int, state: Any) -> Tensor:
        """Reduce the kept rows into trace entries ``start, start + 1, ...`` and forget them.

        ``grad_norm`` is the root mean square over chains of the per-chain gradient L2 norm.

        Args:
            start: trace index of the first kept row.
            state: the current kernel state (checked when recording is disabled).

        Returns:
            0-dim bool tensor (on the device): every kept energy and gradient norm is finite (or
            so large that a mean overflows, which is treated as a divergence too).
        """
        if not self.enabled:
            return _state_finite(state)
        rows = len(self.kept) if self.by_reference else self.row
        if rows == 0:
            return torch.ones((), dtype=torch.bool, device=self.device)
        if self.by_reference:
            self._write_kept(rows)
        e = self.energies[:rows]
        lo, hi = torch.aminmax(e, dim=1)
        parts = [e.mean(dim=1), lo, hi, self.norms[:rows] / max(self.n, 1) ** 0.5]
        if self.accepts is not None:
            parts.append(self.accepts[:rows].mean(dim=1))
        stats = torch.stack(parts)
        self.table[:, start : start + rows] = stats
        self.row = 0
        return torch.isfinite(stats[:4]).all()  # a mean is non-finite if any of its terms is

    def _write_kept(self, rows: int) -> None:
        energies, grads, accepts = zip(*self.kept)
        self.kept.clear()
        torch.stack(energies, out=self.energies[:rows])
        if all(g is not None for g in grads):
            flat = torch.stack(grads).reshape(rows, -1)
            torch.linalg.vector_norm(flat, dim=1, out=self.norms[:rows])
        else:
            for r, g in enumerate(grads):
                self.norms[r] = 0.0 if g is None else torch.linalg.vector_norm(g)
        if self.accepts is not None:
            nan = torch.full_like(energies[0], float("nan"))
            torch.stack([nan if a is None else a for a in accepts], out=self.accepts[:rows])

    def note_force(self, step: int, grad: Tensor | None) -> None:
        """Trace only the gradient norm of step ``step`` (whose end point was not evaluated)."""
        if self.enabled and grad is not None:
            self.trace["grad_norm"][step] = torch.linalg.vector_norm(grad) / max(self.n, 1) ** 0.5

    def result(self, steps: int) -> dict[str, Tensor]:
        """The traces of the first ``steps`` steps (empty when recording is disabled)."""
        return {k: v[:steps] for k, v in self.trace.items()}


def _state_finite(state: Any) -> Tensor:
    """0-dim bool: the state's energies and gradient are finite (``None`` fields are skipped)."""
    ok = torch.isfinite(state.x).all()
    for t in (getattr(state, "energy", None), getattr(state, "grad", None)):
        if isinstance(t, Tensor):
            ok = ok & torch.isfinite(t).all()
    return ok


def bad_chains(state: Any) -> Tensor:
    """``(k,)`` indices of the chains whose energy, gradient or position is non-finite."""
    bad = ~torch.isfinite(state.x.reshape(state.x.shape[0], -1)).all(dim=1)
    energy, grad = getattr(state, "energy", None), getattr(state, "grad", None)
    if isinstance(energy, Tensor):
        bad |= ~torch.isfinite(energy)
    if isinstance(grad, Tensor):
        bad |= ~torch.isfinite(grad.reshape(grad.shape[0], -1)).all(dim=1)
    return bad.nonzero().flatten()
