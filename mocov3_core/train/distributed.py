"""torch.distributed set-up when launched with torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def shutdown_distributed(info: DistInfo) -> None:
    """Leave the process group together: every rank waits for the others (rank 0 writes the last checkpoint
    after the loop), then tears it down. A rank that exits while a peer still holds the connection open can
    abort in gloo's destructor (seen: SIGABRT in a 2-process CPU run)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any: a stop asked of rank 0 (a cancel, a shutdown) stops all
    ranks at the same step, so none is left waiting in a collective for a peer that has left the loop."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# What gloo and NCCL say when a peer process or its machine went away (their errors are RuntimeErrors).
_PEER_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe", "socket timeout",
              "timed out", "nccl communicator was aborted", "ncclremoteerror", "ncclsystemerror")


def peer_lost(exc: BaseException) -> bool:
    """`exc` says another rank is gone (its process died, its machine went away), not that this rank failed:
    the run should be resumed on machines that work, not marked failed."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(p in text for p in _PEER_LOST)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t)
        t /= info.world_size
    return t
