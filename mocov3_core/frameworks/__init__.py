"""The self-supervised frameworks of the paper's comparison (§6.1, Table 4) behind one interface.

MoCo v3 (`mocov3.py`, on the heads, loss and momentum update of `mocov3_core.moco`), SimCLR, BYOL and
SwAV share the backbones, the data, the augmentation, the stability monitor, checkpoints and evaluation;
`build_framework` picks one by `PretrainConfig.framework`.
"""

from __future__ import annotations

from ..config import PretrainConfig
from ._base import Encoder, Framework
from ._heads import build_head
from .byol import BYOL, regression_loss, symmetric_regression_loss
from .mocov3 import MoCo
from .simclr import SimCLR, nt_xent_loss
from .swav import SwAV, sinkhorn, swapped_prediction_loss

FRAMEWORKS = ("mocov3", "simclr", "byol", "swav")


def build_framework(cfg: PretrainConfig, in_chans: int = 3) -> Framework:
    """The framework named by cfg.framework, on cfg.model's backbone at cfg.data.crop_size."""
    img = cfg.data.crop_size
    if cfg.framework == "mocov3":
        return MoCo(cfg.model, cfg.moco, img, in_chans)
    if cfg.framework == "simclr":
        return SimCLR(cfg.model, cfg.simclr, img, in_chans, cfg.moco)
    if cfg.framework == "byol":
        return BYOL(cfg.model, cfg.byol, img, in_chans, cfg.moco)
    if cfg.framework == "swav":
        return SwAV(cfg.model, cfg.swav, img, in_chans, cfg.moco)
    raise ValueError(f"framework: unknown {cfg.framework!r}; known: {', '.join(FRAMEWORKS)}")


__all__ = ["BYOL", "FRAMEWORKS", "Encoder", "Framework", "MoCo", "SimCLR", "SwAV", "build_framework", "build_head",
           "nt_xent_loss", "regression_loss", "sinkhorn", "swapped_prediction_loss", "symmetric_regression_loss"]
