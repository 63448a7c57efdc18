"""Process-group helpers for ``torchrun`` (DDP): setup, rank queries, small collectives.

``torchrun --nproc_per_node=N tools/train.py ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup_distributed` reads them and
starts NCCL (CUDA) or gloo (CPU). A plain ``python tools/train.py`` runs as a single process
with no process group. Every helper here is a no-op (or the identity) in a single process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from effdet.config import ConfigError

# Rank 0 evaluates while the other ranks wait at a barrier: allow long evaluations.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this context started the process group (and so ends it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else CPU. ``"cuda"`` under torchrun: ``cuda:LOCAL_RANK``."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} was asked for but no CUDA GPU is available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device: str | torch.device | None = None) -> DistContext:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); pick the device.

    Uses NCCL on CUDA and gloo on CPU. An already initialised process group is reused (and left
    running by :func:`cleanup_distributed`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    elif world_size > 1:
        dev = resolve_device(device, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                timeout=PROCESS_GROUP_TIMEOUT)
        owns = True
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


def cleanup_distributed(ctx: DistContext) -> None:
    """End the process group if :func:`setup_distributed` started it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def any_across_ranks(ctx: DistContext, *flags: bool) -> tuple[bool, ...]:
    """Element-wise logical OR of boolean flags over all ranks (one small all-reduce)."""
    if not ctx.distributed:
        return tuple(bool(f) for f in flags)
    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def gather_to_main(ctx: DistContext, obj: Any) -> list[Any] | None:
    """Collect one picklable object per rank on rank 0 (the list in rank order); ``None`` elsewhere."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's value of a picklable ``obj`` on every rank (decisions only rank 0 can make)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: nn.Module, ctx: DistContext, sync_bn: bool = True) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on ``ctx.device``); identity in one process.

    On CUDA with ``sync_bn``, BatchNorm layers become ``SyncBatchNorm`` (statistics over the
    global batch, as in the official recipe). On CPU (gloo) BatchNorm stays per process and
    DDP broadcasts rank 0's running statistics before every forward.
    """
    if not ctx.distributed:
        return model
    if sync_bn and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


__all__ = ["DistContext", "resolve_device", "setup_distributed", "cleanup_distributed", "barrier",
           "any_across_ranks", "broadcast_from_main", "gather_to_main", "wrap_model",
           "PROCESS_GROUP_TIMEOUT"]
