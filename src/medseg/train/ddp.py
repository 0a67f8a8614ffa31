"""Distributed data parallel training under ``torchrun`` (one process per GPU, or several on CPU).

``torchrun --nproc_per_node N -m medseg.train CONFIG.yaml`` sets RANK, WORLD_SIZE and LOCAL_RANK;
:func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU). Without those variables
everything here is a no-op for one process, so the loop has a single code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from medseg.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank among world_size processes, local_rank on its machine."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """DistInfo from torchrun's environment variables (one process when they are absent)."""
    try:
        return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                        int(os.environ.get("WORLD_SIZE", 1)))
    except ValueError:
        raise InputError("RANK / LOCAL_RANK / WORLD_SIZE must be integers (as torchrun sets them)") from None


def resolve_device(preference: str, info: DistInfo) -> torch.device:
    """``auto`` -> cuda when available else cpu; under torchrun CUDA processes use cuda:LOCAL_RANK."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise InputError(f"config key 'train.device': {preference!r} is not a device (cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"config key 'train.device' is {preference!r} but CUDA is not available; use cpu or auto")
        if device.index is None:
            device = torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def setup(preference: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; returns (DistInfo, this process's device)."""
    info = from_env()
    device = resolve_device(preference, info)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size, **kwargs)
    return info, device


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself.

    ``find_unused_parameters``: objectives may leave trainable heads out of the loss (the
    supervised loss does not use the IoU head), which plain DDP treats as an error.
    """
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process (picklable objects)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
