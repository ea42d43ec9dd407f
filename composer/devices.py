"""Device names from the command line or a recipe -> a usable ``torch.device``, or one clear error."""

from __future__ import annotations

import torch

from composer.errors import ComposerError


def check_device(name: object) -> torch.device:
    """The ``torch.device`` called ``name``, after checking that this machine can allocate on it.

    Raises:
        ComposerError: an unknown name, ``meta`` (no data), or a device this build or machine lacks.
    """
    if not isinstance(name, str) or not name.strip():
        raise ComposerError(f"device must be a name such as cpu, cuda or cuda:1, got {name!r}")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ComposerError(f"unknown device '{name}' (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "meta":
        raise ComposerError("device 'meta' holds no data; use cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ComposerError(f"device '{name}' requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ComposerError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA "
                            "device(s)")
    try:
        torch.empty(1, device=dev)
    except Exception as exc:  # mps on a build without it, a backend that cannot allocate...
        reason = " ".join(str(exc).split()).split(". ")[0]
        raise ComposerError(f"device '{name}' is not usable on this machine ({reason})") from None
    return dev


def available_memory(dev: torch.device) -> int | None:
    """Bytes that allocations on ``dev`` can use (total physical memory for the CPU), or ``None``."""
    try:
        if dev.type == "cuda":
            return int(torch.cuda.mem_get_info(dev)[1])
        if dev.type == "cpu":
            import os

            return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, RuntimeError, AttributeError):  # pragma: no cover - platform dependent
        return None
    return None
