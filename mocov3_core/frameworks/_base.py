"""What the training loop needs from a self-supervised method, and the parts the methods share.

Every framework is an nn.Module with:
- ``base``: the online Encoder (backbone -> projector). Its name is fixed so that checkpoints of every
  framework hold the backbone under ``base.backbone.`` and evaluation loads them the same way;
- ``forward(x1, x2)`` -> (loss, detached backbone features of view 1 for the kNN monitor);
- ``target_momentum``: (m0, cosine) of its momentum (EMA) encoder, or None when it has none; the loop looks
  m up in `train/schedules.py` and calls ``update_momentum(m)`` right after the optimizer step;
- ``head_groups()``: the head parameters whose gradient norms the monitor follows (projector, predictor);
- ``after_backward(epoch)``: a hook between backward and the optimizer step, given the fractional epoch
  (SwAV freezes its prototypes).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..moco.momentum import MomentumUpdater
from ..models import wrap_batchnorms


class Encoder(nn.Module):
    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone.features(x)  # type: ignore[operator]
        return feats, self.projector(feats)


class Framework(nn.Module):
    base: Encoder
    target_momentum: tuple[float, bool] | None = None
    # how many views share one forward for the BN statistics: 2 = per view (MoCo v3, BYOL: each view normalised
    # with its own statistics, as separate forwards do); 1 = all 2B crops in one BN batch (SimCLR's choice)
    bn_views: int = 2

    @property
    def backbone(self) -> nn.Module:
        return self.base.backbone

    def head_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"projector": list(self.base.projector.parameters()), "predictor": []}

    def update_momentum(self, m: float) -> None:
        """EMA of the online encoder into the target; frameworks without a target do nothing."""

    def after_backward(self, epoch: float) -> None:
        """Called after backward, before the gradient norms and the optimizer step; epoch is fractional."""

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError




class MomentumFramework(Framework):
    """A framework with a predictor on the online side and a momentum (EMA) copy of the online encoder as its
    target (MoCo v3, BYOL). A subclass builds `base` and `predictor`, then calls `attach_target`."""

    predictor: nn.Module
    ema: MomentumUpdater

    def attach_target(self, name: str, momentum: float, cosine: bool) -> None:
        """Register a no-gradient copy of `base` as attribute `name` (its checkpoint prefix), wrap the BNs, and
        follow `base` with EMA from m0 = momentum (cosine to 1 when `cosine`)."""
        target = copy.deepcopy(self.base)
        for p in target.parameters():
            p.requires_grad = False
        setattr(self, name, target)
        wrap_batchnorms(self)
        self.ema = MomentumUpdater(self.base, target)
        self.target_momentum = (momentum, cosine)

    def head_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"projector": list(self.base.projector.parameters()), "predictor": list(self.predictor.parameters())}

    def update_momentum(self, m: float) -> None:
        self.ema(m)
