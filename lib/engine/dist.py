"""Distributed helpers for torchrun (like detectron2 ``utils/comm.py``).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain ``python tools/train_val.py`` has none
of them and runs as a single process (rank 0 of 1). NCCL is used with CUDA, gloo on CPU.
Only the main process (rank 0) logs, saves checkpoints and evaluates. Where tensors go is
decided here too (:func:`select_device`, :func:`move_to_device`), for the trainer and the tester.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, number of processes, rank on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """The rank layout given by torchrun's environment variables (single process without them)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as err:
        raise RuntimeError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {err}") from None


def select_device(info: DistInfo) -> torch.device:
    """CUDA device ``local_rank`` when CUDA is available, else the CPU (decided once, in tools/)."""
    if torch.cuda.is_available():
        device = torch.device("cuda", info.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Copy every tensor of a (nested) batch to ``device``; other values are kept as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group of a torchrun launch (nothing to do for a single process)."""
    if info.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over all processes (a copy; the input itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_true(flag: bool, device: torch.device) -> bool:
    """True only if ``flag`` is True on every process (used to stop all ranks together)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)
