"""SwAV (Caron et al. 2020) on the paper's backbones, as compared in MoCo v3 §6.1, with two crops only.

The projection z of each crop is l2-normalised and scored against K l2-normalised prototypes c_k:
s = z . c (a cosine in [-1, 1]). For each view, codes q are computed from its scores, without
gradient, by Sinkhorn-Knopp: q is the soft assignment closest to exp(s / eps) whose prototypes each
receive an equal share B/K of the (global) batch, which is what keeps every crop from collapsing onto
one prototype. Each view then predicts the OTHER view's codes with a softmax over s / τ:
    L = 1/2 [ -sum_k q1_k log softmax(s2 / τ)_k  -  sum_k q2_k log softmax(s1 / τ)_k ], averaged over the batch.
As SwAV does, the prototypes are renormalised before every step and get no update during the first
iterations. The paper's SwAV on ViT has no BN in the heads (App. A); both crops go through one forward.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MocoConfig, ModelConfig, SwavConfig
from ..models import bn_views, wrap_batchnorms
from ._base import Framework
from ._collectives import all_reduce_, world_size
from ._heads import online_encoder


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """[N, K] scores of the local crops -> [N, K] codes. Every row sums to 1; over the global batch of B rows,
    every column sums to B/K (exactly after the row step, approximately after the last column step)."""
    scores = scores.float()
    shift = all_reduce_(scores.max().clone(), "max")  # exp(s/eps) overflows for small eps: a common shift is free
    q = torch.exp((scores - shift) / epsilon).T  # [K, N]
    k = q.shape[0]
    b = q.shape[1] * world_size()
    q /= all_reduce_(q.sum())
    for _ in range(iters):
        # 1) every prototype gets 1/K of the mass
        q /= all_reduce_(q.sum(dim=1, keepdim=True))
        q /= k
        # 2) every crop gets 1/B of the mass
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).T  # rows (crops) sum to 1


def swapped_prediction_loss(s1: torch.Tensor, s2: torch.Tensor, temperature: float, epsilon: float,
                            iters: int) -> torch.Tensor:
    """1/2 [CE(codes of view 1, softmax(s2/τ)) + CE(codes of view 2, softmax(s1/τ))], mean over the batch."""
    q1 = sinkhorn(s1.detach(), epsilon, iters)
    q2 = sinkhorn(s2.detach(), epsilon, iters)
    ce12 = -(q1 * F.log_softmax(s2.float() / temperature, dim=1)).sum(dim=1).mean()
    ce21 = -(q2 * F.log_softmax(s1.float() / temperature, dim=1)).sum(dim=1).mean()
    return 0.5 * (ce12 + ce21)


class SwAV(Framework):
    bn_views = 1  # SwAV forwards the crops of one resolution as one batch

    def __init__(self, model_cfg: ModelConfig, cfg: SwavConfig, img_size: int, in_chans: int = 3,
                 moco: MocoConfig | None = None) -> None:
        """
        Args:
            model_cfg: the backbone and its ablation switches.
            cfg: the swav section (prototypes, τ, ε, iterations, freezing; unset head sizes come from `moco`).
            img_size, in_chans: input crops.
            moco: the moco section, source of the shared head sizes (defaults: 4096 hidden, 256 out).
        """
        super().__init__()
        self.cfg = cfg
        self.base, dim, mlp_dim = online_encoder(model_cfg, cfg, moco, img_size, in_chans)
        self.prototypes = nn.Linear(dim, cfg.num_prototypes, bias=False)  # weight [K, dim]: one prototype per row
        self.normalize_prototypes()
        wrap_batchnorms(self)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def head_groups(self) -> dict[str, list[nn.Parameter]]:
        # the prototypes are the last layer of SwAV's head: the monitor follows them in the predictor's slot
        return {"projector": list(self.base.projector.parameters()), "predictor": list(self.prototypes.parameters())}

    def after_backward(self, epoch: float) -> None:
        if epoch < self.cfg.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None  # no update at all, weight decay included (SwAV's freezing)

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, C, H, W] -> (backbone features [M, D], prototype scores [M, K])."""
        with bn_views(self.bn_views):
            feats, z = self.base(x)
        # scores in fp32 even under autocast: Sinkhorn takes exp(s / 0.05), where bf16's 3 digits of s would be
        # an error of several percent in every code (the matmul is [2B, dim] x [dim, K], cheap beside the backbone)
        # (a device without autocast, the meta device `train/flops.py` counts on, has nothing to turn off)
        fp32 = torch.autocast(x.device.type, enabled=False) if torch.amp.is_autocast_available(x.device.type) \
            else contextlib.nullcontext()
        with fp32:
            return feats, F.linear(F.normalize(z.float(), dim=1), self.prototypes.weight.float())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Swapped prediction of the two views [B, C, H, W] -> (loss, detached backbone features of x1)."""
        self.normalize_prototypes()  # the optimizer step moved them off the sphere
        b = x1.shape[0]
        feats, s = self.scores(torch.cat([x1, x2]))  # [2B, K]: view 1 rows then view 2 rows
        loss = swapped_prediction_loss(s[:b], s[b:], self.cfg.temperature, self.cfg.epsilon, self.cfg.sinkhorn_iters)
        return loss, feats[:b].detach()
