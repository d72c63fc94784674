"""ResNet-50 for the paper's ResNet comparisons: timm's resnet50 with zero-initialised last BN per block
(torchvision's zero_init_residual=True in the official code), the 2048-d pooled vector as features."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn


class MocoResNet(nn.Module):
    def __init__(self, name: str = "resnet50", in_chans: int = 3) -> None:
        super().__init__()
        self.net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, zero_init_last=True)
        self.num_features: int = self.net.num_features  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, 2048], global-average-pooled

    def no_weight_decay(self) -> set[str]:
        return set()

    def layer_groups(self) -> dict[str, list[nn.Parameter]]:
        net: Any = self.net
        stem = [*net.conv1.parameters(), *net.bn1.parameters()]
        return {"patch_proj": stem, "first_block": list(net.layer1.parameters()),
                "last_block": list(net.layer4.parameters())}
