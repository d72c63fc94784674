"""Collectives the losses need across GPUs; on one process each is the identity.

SimCLR's negatives are the other crops of the GLOBAL batch, and its gradient must reach the encoder
through them too, so its gather carries gradient (torch.distributed.nn's all_gather: the backward
sums each rank's gradient into the rank that produced the rows). SwAV's Sinkhorn normalises over the
global batch, so its sums are all-reduced (no gradient: the codes are targets).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[N, C] rows of every rank -> ([world*N, C] with gradient, offset of this rank's rows)."""
    if _world() == 1:
        return t, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous())), dist.get_rank() * t.shape[0]


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place over ranks (no gradient): op 'sum' or 'max'."""
    if _world() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def world_size() -> int:
    return _world()
