"""BYOL (Grill et al. 2020) on the paper's backbones, as compared in MoCo v3 §6.1.

Online encoder (backbone -> projector -> predictor) and a target encoder (backbone -> projector) that is
an EMA of the online one, exactly MoCo v3's pair, with a different loss: the online prediction of one
view regresses the target's projection of the other, by the normalised MSE
    ||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z),
symmetrised over the two views and averaged over the batch. No negatives, so nothing is gathered across
GPUs. The paper's BYOL on ViT keeps BN in the hidden layers of the heads only (App. A); views keep
their own BN statistics, as BYOL's separate forwards do. Momentum m0 rises to 1 by MoCo v3's half-cosine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ByolConfig, MocoConfig, ModelConfig
from ..models import bn_views
from ._base import Encoder, MomentumFramework
from ._heads import build_head, online_encoder


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 2 - 2 cos(p_i, z_i); z is the target (no gradient expected through it)."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()


def symmetric_regression_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """L = l(p1, z2) + l(p2, z1): each view predicts the target's projection of the other."""
    return regression_loss(p1, z2) + regression_loss(p2, z1)


class BYOL(MomentumFramework):
    target: Encoder  # the momentum target (attach_target)

    def __init__(self, model_cfg: ModelConfig, cfg: ByolConfig, img_size: int, in_chans: int = 3,
                 moco: MocoConfig | None = None) -> None:
        """
        Args:
            model_cfg: the backbone and its ablation switches.
            cfg: the byol section (predictor depth, head BN, momentum; unset head sizes come from `moco`).
            img_size, in_chans: input crops.
            moco: the moco section, source of the shared head sizes (defaults: 4096 hidden, 256 out).
        """
        super().__init__()
        self.cfg = cfg
        self.base, dim, mlp_dim = online_encoder(model_cfg, cfg, moco, img_size, in_chans)
        # without a predictor (cfg.predictor false) the online projection is compared with the target's as it is
        self.predictor: nn.Module = build_head(cfg.pred_layers, dim, mlp_dim, dim, cfg.head_bn) if cfg.predictor \
            else nn.Identity()
        self.attach_target("target", cfg.momentum, cfg.momentum_cosine)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetrised regression loss of the two views [B, C, H, W] -> (loss, detached features of x1)."""
        b = x1.shape[0]
        x = torch.cat([x1, x2])  # [2B, C, H, W]
        with bn_views(self.bn_views):
            feats, z = self.base(x)
            p = self.predictor(z)
            with torch.no_grad():
                _, t = self.target(x)
        loss = symmetric_regression_loss(p[:b], p[b:], t[:b], t[b:])
        return loss, feats[:b].detach()
