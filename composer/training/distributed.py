"""Data-parallel training under ``torchrun``: process group, DDP wrapping, gathers for checkpoints.

``torchrun --nproc_per_node=N -m composer.training CONFIG.toml`` (or ``composer train`` under
torchrun) runs the same trainer in N processes. Each rank:

- takes rows ``[rank * b, (rank + 1) * b)`` of every global batch (``b = batch_size / N``), so
  the DDP-averaged gradient is the gradient of the full global batch;
- keeps its own replay-buffer shard (``buffer_size / N`` chains) and sampler generator
  (seeded ``seed + rank``);
- sends its shard and generator state to rank 0 at each checkpoint; only rank 0 writes files.

The backend is NCCL for CUDA devices and gloo on CPU. Outside torchrun (no ``WORLD_SIZE`` > 1 in
the environment) everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class DistInfo:
    """Where this process sits in the run.

    Attributes:
        rank, world_size, local_rank: as set by torchrun (0, 1, 0 for a single process).
        device: this rank's device.
        owns_group: whether ``init_distributed`` created the process group (and must destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device = "cpu") -> DistInfo:
    """Join the torchrun process group if there is one (``WORLD_SIZE`` > 1), else a single process.

    Args:
        device: the recipe's device; ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun.
    """
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistInfo(device=device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        owns = True
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return DistInfo(rank, world, local_rank, device, owns)


def wrap(network: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(network)`` when distributed, else ``network`` itself."""
    if not info.enabled:
        return network
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(network, device_ids=ids)


def gather(t: Tensor, info: DistInfo) -> list[Tensor]:
    """Every rank's ``t`` (same shape on all ranks), in rank order; ``[t]`` for one process."""
    if not info.enabled:
        return [t]
    out = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t.contiguous())
    return out


def any_rank(flag: bool, info: DistInfo) -> bool:
    """Whether ``flag`` is true on at least one rank (so every rank takes the same decision)."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if ``init_distributed`` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
