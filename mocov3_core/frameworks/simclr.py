"""SimCLR (Chen, Kornblith, Norouzi, Hinton 2020) on the paper's backbones, as compared in MoCo v3 §6.1.

One encoder, no predictor, no momentum encoder. The loss is NT-Xent over the 2N crops of the batch:
each crop's positive is the other view of its image and its negatives are the other 2N - 2 crops of
BOTH views. Under DDP the crops of every rank are gathered WITH gradient (unlike MoCo v3's keys, these
negatives come from the encoder being trained), so the gradient equals one device holding the whole
2B x 2B similarity matrix once DDP averages over ranks. BN sees all 2B crops as one batch (SimCLR's
choice, option (i) of the paper's App. A). At initialisation the loss is about ln(2B - 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import MocoConfig, ModelConfig, SimclrConfig
from ..models import bn_views, wrap_batchnorms
from ._base import Framework
from ._collectives import gather_with_grad
from ._heads import online_encoder


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of the local 2N crops [N, C] x 2 against the global 2B crops, self excluded."""
    n = z1.shape[0]
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    g1, offset = gather_with_grad(z1)
    g2, _ = gather_with_grad(z2)
    b = g1.shape[0]  # global batch
    keys = torch.cat([g1, g2])  # [2B, C]: view 1 of every rank, then view 2 of every rank
    queries = torch.cat([z1, z2])  # [2N, C]
    logits = queries @ keys.T / temperature  # [2N, 2B]
    idx = torch.arange(n, device=z1.device) + offset  # this rank's images in the global batch
    own = torch.cat([idx, idx + b])  # column of each query itself
    positive = torch.cat([idx + b, idx])  # column of its other view
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(2 * n, device=z1.device), own] = True
    logits = logits.masked_fill(self_mask, float("-inf"))  # a crop is never its own negative
    return F.cross_entropy(logits, positive)


class SimCLR(Framework):
    bn_views = 1

    def __init__(self, model_cfg: ModelConfig, cfg: SimclrConfig, img_size: int, in_chans: int = 3,
                 moco: MocoConfig | None = None) -> None:
        """
        Args:
            model_cfg: the backbone and its ablation switches.
            cfg: the simclr section (head BN, temperature; unset head sizes come from `moco`).
            img_size, in_chans: input crops.
            moco: the moco section, source of the shared head sizes (defaults: 4096 hidden, 256 out).
        """
        super().__init__()
        self.cfg = cfg
        self.base, dim, mlp_dim = online_encoder(model_cfg, cfg, moco, img_size, in_chans)
        wrap_batchnorms(self)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NT-Xent of the two views [B, C, H, W] each -> (loss, detached backbone features of x1)."""
        b = x1.shape[0]
        with bn_views(self.bn_views):
            feats, z = self.base(torch.cat([x1, x2]))  # [2B, ...]: view 1 rows then view 2 rows
        return nt_xent_loss(z[:b], z[b:], self.cfg.temperature), feats[:b].detach()
