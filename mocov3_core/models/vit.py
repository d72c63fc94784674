"""The paper's Vision Transformer, built on timm's VisionTransformer.

What MoCo v3 adds to a standard ViT (docs/method.md §2; official vits.py):
- a fixed 2-D sin-cos position embedding, with an all-zero slot for the class token, never trained;
- the output is the class token after the final LayerNorm (timm's 'token' pooling);
- qkv initialised as if Q, K and V were separate DxD matrices, every other Linear Xavier-uniform
  (timm's weight_init='moco');
- the patch projection initialised Xavier-uniform as a linear map 3*p*p -> D and, by default, frozen
  (the "random patch projection" of §4.2 that removes the instability);
- ViT-S with 12 heads (head dim 32), unlike DeiT-S;
and the paper's ablations: learned / no position embedding, GAP with or without the final LN,
ViT-BN (BN in the MLP blocks, §6.3) and the convolutional stem of Xiao et al. (11 blocks).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .norm import TokenBatchNorm

PosEmbed = Literal["sincos", "learned", "none"]
Pool = Literal["cls", "gap", "gap_no_ln"]


def sincos_2d(grid: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """[grid*grid, dim] table: concat(sin(r w), cos(r w), sin(c w), cos(c w)) for row r, column c.

    Frequencies w_d = 1 / temperature^(d / (dim/4)); tokens in row-major order (docs/method.md §2.3).
    """
    assert dim % 4 == 0, f"embed dim {dim} must be divisible by 4 for the 2-D sin-cos embedding"
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    r = rows.flatten()[:, None] * omega[None]  # [T, D/4]
    c = cols.flatten()[:, None] * omega[None]
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1).float()


class ConvStem(nn.Module):
    """4 x (3x3 conv stride 2, BN, ReLU) from D/8 to D channels, then a 1x1 conv: total stride 16."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 **_: Any) -> None:
        super().__init__()
        assert patch_size == 16, "the convolutional stem has a fixed stride of 16"
        assert embed_dim % 8 == 0, f"embed dim {embed_dim} must be divisible by 8 for the conv stem"
        layers: list[nn.Module] = []
        chans, width = in_chans, embed_dim // 8
        for _i in range(4):
            layers += [nn.Conv2d(chans, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            chans, width = width, width * 2
        layers.append(nn.Conv2d(chans, embed_dim, 1))
        self.proj = nn.Sequential(*layers)
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.dynamic_img_pad = False

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, H', W'] -> [B, T, D]


class LinearPatchEmbed(PatchEmbed):
    """timm's patch embedding computed as one matrix multiply: [B, 3, H, W] -> patches [B, T, 3*p*p] -> [B, T, D].

    The same map as its stride-p convolution (the same `proj` weights and checkpoint keys, equal to float
    rounding), but a GEMM of shape (B*T) x 3p^2 x D, which the GPU's tensor cores run at full rate. A convolution
    with a 16x16 kernel and stride 16 falls to cuDNN's generic kernels with layout conversions around them
    (docs/benchmarks.md measured 3.3 ms a call, ~5% of a ViT-S step on an H200, before `cudnn.benchmark`).
    Other layouts (padding, NCHW output) use timm's convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_img_pad or not self.flatten:
            return super().forward(x)
        b, c, h, w = x.shape
        p, q = self.patch_size
        assert (h, w) == tuple(self.img_size), f"input {h}x{w} does not match the model's {self.img_size}"
        patches = x.reshape(b, c, h // p, p, w // q, q).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * q)
        out = F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)
        return self.norm(out)


class MocoViT(VisionTransformer):
    """timm's VisionTransformer with the paper's embedding, initialisation and ablation switches."""

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 384,
                 depth: int = 12, num_heads: int = 12, pos_embed: PosEmbed = "sincos", pool: Pool = "cls",
                 stop_grad_patch_proj: bool = True, mlp_norm: Literal["ln", "bn"] = "ln", conv_stem: bool = False,
                 drop_path_rate: float = 0.0) -> None:
        """
        Args:
            img_size: square input size; must be a multiple of patch_size.
            patch_size: patch side (16 at 224; 4 or 7 for 28-32 pixel images).
            embed_dim, depth, num_heads: width, blocks and heads (ViT-S: 384, 12, 12).
            pos_embed: 'sincos' fixed 2-D table (paper), 'learned', or 'none'.
            pool: 'cls' token after the final LN (paper), 'gap' after the final LN, 'gap_no_ln' without it.
            stop_grad_patch_proj: freeze the randomly initialised patch projection (paper §4.2).
            mlp_norm: 'bn' replaces the LayerNorm before each MLP by BatchNorm (ViT-BN, paper §6.3).
            conv_stem: the convolutional stem instead of the patch projection (then stop-grad is a no-op).
            drop_path_rate: stochastic depth (0 in pretraining, 0.1 in fine-tuning).
        """
        assert pos_embed in ("sincos", "learned", "none"), f"unknown pos_embed {pos_embed!r}"
        assert pool in ("cls", "gap", "gap_no_ln"), f"unknown pool {pool!r}"
        assert img_size % patch_size == 0, f"image size {img_size} is not a multiple of patch size {patch_size}"
        use_cls = pool == "cls"
        kwargs: dict[str, Any] = {"embed_layer": ConvStem if conv_stem else LinearPatchEmbed}
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=4.0, qkv_bias=True, class_token=use_cls,
            global_pool="token" if use_cls else "avg", fc_norm=False,
            pos_embed="none" if pos_embed == "none" else "learn", weight_init="moco",
            norm_layer=partial(nn.LayerNorm, eps=1e-6), drop_path_rate=drop_path_rate, **kwargs)
        self.pos_embed_kind = pos_embed
        self.pool_kind = pool
        self.conv_stem = conv_stem
        if pool == "gap_no_ln":
            self.norm = nn.Identity()
        if mlp_norm == "bn":
            for block in self.blocks:
                block.norm2 = TokenBatchNorm(embed_dim)
        if pos_embed == "sincos":
            self._set_sincos_pos_embed()
        if not conv_stem:
            self._init_patch_proj()
            if stop_grad_patch_proj:
                for p in self.patch_embed.proj.parameters():
                    p.requires_grad = False
        self.stop_grad_patch_proj = stop_grad_patch_proj and not conv_stem

    def _set_sincos_pos_embed(self) -> None:
        grid = self.patch_embed.grid_size[0]
        table = sincos_2d(grid, self.embed_dim)
        if self.cls_token is not None:  # the class token's slot is all zeros
            table = torch.cat([torch.zeros(1, self.embed_dim), table])
        assert self.pos_embed is not None and self.pos_embed.shape[1:] == table.shape, "pos_embed shape mismatch"
        with torch.no_grad():
            self.pos_embed.copy_(table[None])
        self.pos_embed.requires_grad = False

    def _init_patch_proj(self) -> None:
        proj = self.patch_embed.proj
        assert isinstance(proj, nn.Conv2d)
        # Xavier-uniform for the linear map 3*p*p -> D (fan_out = D, not conv's D*p*p): sqrt(6/(768+D)) at p=16
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        bound = math.sqrt(6.0 / float(fan_in + proj.out_channels))
        nn.init.uniform_(proj.weight, -bound, bound)
        assert proj.bias is not None
        nn.init.zeros_(proj.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, D] pre-logits features (what kNN, linear probe and the projector see)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def layer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups whose gradient norms the stability monitor follows (paper Fig. 4)."""
        return {
            "patch_proj": list(self.patch_embed.parameters()),
            "first_block": list(self.blocks[0].parameters()),
            "last_block": list(self.blocks[-1].parameters()),
        }
