"""The heads of the other frameworks, built with MoCo v3's MLP builder (bias-free Linears, BN + ReLU).

One head shape for every framework, as in the paper's comparison: sizes a section leaves unset come
from the moco section. What differs is where the BN goes (`HeadBN`).
"""

from __future__ import annotations

from torch import nn

from ..config import ByolConfig, HeadBN, MocoConfig, ModelConfig, SimclrConfig, SwavConfig
from ..moco.heads import build_mlp
from ..models import build_backbone
from ._base import Encoder


def build_head(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, head_bn: HeadBN) -> nn.Sequential:
    """An MLP head with BN after every Linear ('all', the last one without affine), the hidden ones, or none."""
    return build_mlp(num_layers, in_dim, hidden_dim, out_dim, last_bn=head_bn == "all", use_bn=head_bn != "none")


def head_sizes(section: SimclrConfig | ByolConfig | SwavConfig, moco: MocoConfig, resnet: bool) -> tuple[int, int, int]:
    """(out dim, hidden dim, projector depth): the section's own, else the moco section's (one head shape for all)."""
    layers = section.proj_layers or moco.proj_layers or (2 if resnet else 3)
    return section.dim or moco.dim, section.mlp_dim or moco.mlp_dim, layers


def online_encoder(model_cfg: ModelConfig, section: SimclrConfig | ByolConfig | SwavConfig, moco: MocoConfig | None,
                   img_size: int, in_chans: int) -> tuple[Encoder, int, int]:
    """The backbone with the section's projector -> (encoder, out dim, hidden dim)."""
    backbone = build_backbone(model_cfg, img_size, in_chans)
    dim, mlp_dim, layers = head_sizes(section, moco or MocoConfig(), model_cfg.arch.startswith("resnet"))
    projector = build_head(layers, backbone.num_features, mlp_dim, dim, section.head_bn)  # type: ignore[arg-type]
    return Encoder(backbone, projector), dim, mlp_dim
