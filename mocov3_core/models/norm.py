"""BatchNorm with per-view statistics, so both views can share one forward pass.

The official code forwards x1 and x2 separately, so every BN normalises the B images of one view
(paper App. A, "BatchNorm", option ii; SimCLR's option i pools all 2B crops and "should lead to
different results"). We concatenate the views into one [2B, ...] batch for speed and keep the
statistics per view: inside ``bn_views(2)`` each wrapped BN splits its input into the views,
normalises each with its own batch statistics (updating the running stats once per view, exactly as
two separate forwards do) and concatenates them again. Outside training, or with one view, it is a
plain BN. The wrapper holds the BN as a child, so ``convert_sync_batchnorm`` still finds and converts
it for DDP, and the statistics then span the view across all GPUs, as SyncBN does in the official code.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_VIEWS: contextvars.ContextVar[int] = contextvars.ContextVar("bn_views", default=1)


@contextlib.contextmanager
def bn_views(n: int) -> Iterator[None]:
    """Within this block, BN inputs are n equal views stacked along the batch dimension."""
    token = _VIEWS.set(n)
    try:
        yield
    finally:
        _VIEWS.reset(token)


class PerViewBatchNorm(nn.Module):
    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = _VIEWS.get()
        if views == 1 or not self.training:
            return self.bn(x)
        assert x.shape[0] % views == 0, f"batch {x.shape[0]} does not split into {views} views"
        return torch.cat([self.bn(chunk) for chunk in x.chunk(views)])


class TokenBatchNorm(nn.Module):
    """BatchNorm over the channels of [B, T, D] tokens (ViT-BN's MLP-block norm, paper §6.3)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        # rows stay batch-major, so a per-view split of the rows is a split of the views
        return self.norm(x.reshape(b * t, d)).reshape(b, t, d)


def wrap_batchnorms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm in `module` (in place) by a PerViewBatchNorm around it."""
    for name, child in module.named_children():
        if isinstance(child, PerViewBatchNorm):
            continue
        if isinstance(child, _BatchNorm):
            setattr(module, name, PerViewBatchNorm(child))
        else:
            wrap_batchnorms(child)
    return module
