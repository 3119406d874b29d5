"""Scale-out through ``torchrun``: process-group setup, rank helpers and SyncBN.

One process per device. ``torchrun --nproc_per_node=N -m detect.cli train ...`` sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them everything here degrades to a single
process (rank 0 of 1) and every helper is a no-op. Backend: NCCL on CUDA, gloo on CPU.

Only rank 0 prints, writes files and evaluates; the others wait at :func:`barrier`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from detect.utils import select_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Read the torchrun environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise RuntimeError(f"bad torchrun environment (RANK/LOCAL_RANK/WORLD_SIZE): {e}") from None
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def setup(device_spec: str = "auto", timeout_min: float = 30.0) -> tuple[DistInfo, torch.device]:
    """Pick this process's device and, under torchrun, join the process group.

    Under torchrun a CUDA device spec becomes ``cuda:LOCAL_RANK`` (one GPU per process);
    'cpu' (or no CUDA) uses gloo. Returns ``(info, device)``.
    """
    info = env_dist_info()
    device = select_device(device_spec)
    if not info.distributed:
        if device.type == "cuda":
            if device.index is None:  # "cuda" means the current device; set_device wants an index
                device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(device)
        return info, device
    if device.type == "cuda":
        if torch.cuda.device_count() <= info.local_rank:
            raise RuntimeError(
                f"torchrun started {info.world_size} processes but this node has only "
                f"{torch.cuda.device_count()} CUDA devices; lower --nproc_per_node"
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=timeout_min)}
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return info, device


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_(t: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce of ``t`` over the ranks ('sum', 'min' or 'max'); asynchronous to
    the host on CUDA (no sync). A no-op for a single process."""
    if info.distributed:
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(t, op=ops[op])
    return t


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for a single process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, bn: str) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel (a no-op for one process).

    ``bn == "sync"`` turns every BatchNorm into SyncBatchNorm first, so batch statistics are
    computed over the global batch (PyTorch supports SyncBN on CUDA only). DDP broadcasts
    rank 0's parameters and buffers when it wraps, so every rank starts identical.
    """
    if not info.distributed:
        return model
    if bn == "sync":
        if device.type != "cuda":
            raise ValueError("bn='sync' needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); use --bn frozen or train")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP (or ``torch.compile``) wrapper."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
