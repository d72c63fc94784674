"""The heads of the other frameworks, built with MoCo v3's MLP builder (bias-free Linears, BN + ReLU).

One head shape for every framework, as in the paper's comparison: sizes a section leaves unset come
from the moco section. What differs is where the BN goes (`HeadBN`).
"""

from __future__ import annotations

from torch import nn

from ..config import ByolConfig, HeadBN, MocoConfig, SimclrConfig, SwavConfig
from ..moco.heads import build_mlp


def build_head(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, head_bn: HeadBN) -> nn.Sequential:
    """An MLP head with BN after every Linear ('all', the last one without affine), the hidden ones, or none."""
    return build_mlp(num_layers, in_dim, hidden_dim, out_dim, last_bn=head_bn == "all", use_bn=head_bn != "none")


def head_sizes(section: SimclrConfig | ByolConfig | SwavConfig, moco: MocoConfig, resnet: bool) -> tuple[int, int, int]:
    """(out dim, hidden dim, projector depth): the section's own, else the moco section's (one head shape for all)."""
    layers = section.proj_layers or moco.proj_layers or (2 if resnet else 3)
    return section.dim or moco.dim, section.mlp_dim or moco.mlp_dim, layers
