"""MoCo v3 as a framework (its heads, loss and momentum update are in `mocov3_core.moco`, which the other
frameworks reuse): query encoder (backbone -> projector -> predictor) and momentum encoder (backbone -> projector).

Both views go through each encoder in ONE forward of 2B images; BN statistics stay per view
(`models/norm.py`), so this equals the official code's separate forwards while launching half the kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import MocoConfig, ModelConfig
from ..moco.heads import build_mlp
from ..moco.loss import symmetric_loss
from ..models import bn_views, build_backbone
from ._base import Encoder, MomentumFramework

__all__ = ["Encoder", "MoCo"]


class MoCo(MomentumFramework):
    momentum: Encoder  # the momentum encoder (attach_target)

    def __init__(self, model_cfg: ModelConfig, cfg: MocoConfig, img_size: int, in_chans: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        backbone = build_backbone(model_cfg, img_size, in_chans)
        resnet = model_cfg.arch.startswith("resnet")
        width: int = backbone.num_features  # type: ignore[assignment]
        proj_layers = cfg.proj_layers or (2 if resnet else 3)
        projector = build_mlp(proj_layers, width, cfg.mlp_dim, cfg.dim, last_bn=True, use_bn=cfg.head_bn)
        self.base = Encoder(backbone, projector)
        # the ResNet predictor ends on its Linear (last_bn=False); the ViT one on BN(affine=False)
        self.predictor: nn.Module = (build_mlp(cfg.pred_layers, cfg.dim, cfg.mlp_dim, cfg.dim, last_bn=not resnet,
                                               use_bn=cfg.head_bn) if cfg.predictor else nn.Identity())
        self.attach_target("momentum", cfg.momentum, cfg.momentum_cosine)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetrised loss of the two views [B, C, H, W] each -> (loss, detached backbone features of x1)."""
        b = x1.shape[0]
        x = torch.cat([x1, x2])  # [2B, C, H, W]: view 1 rows then view 2 rows
        with bn_views(self.bn_views):
            feats, z = self.base(x)
            q = self.predictor(z)
            with torch.no_grad():
                _, k = self.momentum(x)
        loss = symmetric_loss(q[:b], q[b:], k[:b], k[b:], self.cfg.temperature)
        return loss, feats[:b].detach()
