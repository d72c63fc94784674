"""The momentum (EMA) encoder update, with foreach kernels instead of a Python loop per tensor.

Only trainable tensors are averaged: frozen ones (the fixed random patch projection, the sin-cos
position table) start as copies and stay bit-identical in both encoders, as the paper's run does since
the EMA of two equal tensors is the tensor itself. BN running buffers are not averaged: the momentum
encoder keeps its own, as in the official code (they are never used).
"""

from __future__ import annotations

import torch
from torch import nn


class MomentumUpdater:
    def __init__(self, online: nn.Module, target: nn.Module) -> None:
        pairs = [(p, t) for p, t in zip(online.parameters(), target.parameters(), strict=True) if p.requires_grad]
        self.online: list[torch.Tensor] = [p for p, _ in pairs]
        self.target: list[torch.Tensor] = [t for _, t in pairs]

    @torch.no_grad()
    def __call__(self, m: float) -> None:
        """target = m * target + (1 - m) * online, in one fused kernel per device and dtype."""
        if m >= 1.0:
            return
        torch._foreach_lerp_(self.target, self.online, 1.0 - m)
