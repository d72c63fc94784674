"""Named backbone constructors. `build_backbone` looks the name up; an unknown name lists the known ones.

Each constructor takes the ablation switches of `ModelConfig` as keyword overrides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..config import BACKBONES, ModelConfig
from .resnet import MocoResNet
from .vit import MocoViT

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ not in BACKBONES:
        raise RuntimeError(f"backbone {fn.__name__!r}: add it to mocov3_core.config.BACKBONES too")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def _vit(defaults: dict[str, Any], kwargs: dict[str, Any]) -> MocoViT:
    return MocoViT(**{**defaults, **{k: v for k, v in kwargs.items() if v is not None}})


@register
def vit_tiny_p16(**kw: Any) -> nn.Module:
    """ViT-Tiny/16 (192 wide, 12 blocks, 3 heads, DeiT-Ti's shape; not in the paper)."""
    return _vit(dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), kw)


@register
def vit_small_p16(**kw: Any) -> nn.Module:
    """ViT-S/16 as in the paper: 384 wide, 12 blocks, 12 heads (head dim 32), 22M parameters."""
    return _vit(dict(patch_size=16, embed_dim=384, depth=12, num_heads=12), kw)


@register
def vit_base_p16(**kw: Any) -> nn.Module:
    """ViT-B/16: 768 wide, 12 blocks, 12 heads, 86M parameters."""
    return _vit(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), kw)


@register
def vit_large_p16(**kw: Any) -> nn.Module:
    """ViT-L/16: 1024 wide, 24 blocks, 16 heads, 304M parameters."""
    return _vit(dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16), kw)


@register
def vit_huge_p14(**kw: Any) -> nn.Module:
    """ViT-H/14: 1280 wide, 32 blocks, 16 heads, 632M parameters."""
    return _vit(dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16), kw)


@register
def vit_conv_small(**kw: Any) -> nn.Module:
    """ViT-S with the convolutional stem and 11 blocks ("minus one block", Xiao et al. 2021)."""
    return _vit(dict(patch_size=16, embed_dim=384, depth=11, num_heads=12, conv_stem=True), kw)


@register
def vit_conv_base(**kw: Any) -> nn.Module:
    """ViT-B with the convolutional stem and 11 blocks."""
    return _vit(dict(patch_size=16, embed_dim=768, depth=11, num_heads=12, conv_stem=True), kw)


@register
def vit_tiny_p4(**kw: Any) -> nn.Module:
    """ViT-Tiny for 32-pixel images (CIFAR): patch 4, 64 tokens."""
    return _vit(dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3), kw)


@register
def vit_small_p4(**kw: Any) -> nn.Module:
    """ViT-S for 32-pixel images (CIFAR): patch 4, 64 tokens, 12 heads."""
    return _vit(dict(img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=12), kw)


@register
def vit_mini_p7(**kw: Any) -> nn.Module:
    """A CPU-sized ViT for 28-pixel images (Fashion-MNIST): patch 7 (16 tokens), 128 wide, 4 blocks, 4 heads."""
    return _vit(dict(img_size=28, patch_size=7, embed_dim=128, depth=4, num_heads=4), kw)


@register
def vit_micro_p7(**kw: Any) -> nn.Module:
    """The smallest ViT, for tests: 28-pixel images, patch 7, 64 wide, 2 blocks, 2 heads."""
    return _vit(dict(img_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=2), kw)


@register
def resnet50(**kw: Any) -> nn.Module:
    """ResNet-50 (timm, zero-initialised residual BN), 2048-d pooled features."""
    return MocoResNet("resnet50", in_chans=kw.get("in_chans") or 3)


def build_backbone(cfg: ModelConfig, img_size: int, in_chans: int = 3) -> nn.Module:
    """The backbone named by cfg.arch at img_size, with cfg's overrides and ablation switches."""
    fn = _REGISTRY.get(cfg.arch)
    if fn is None:
        raise ValueError(f"model.arch: unknown backbone {cfg.arch!r}; known: {', '.join(list_backbones())}")
    if cfg.arch.startswith("resnet"):
        return fn(in_chans=in_chans)
    return fn(img_size=cfg.img_size or img_size, in_chans=in_chans, patch_size=cfg.patch_size,
              embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, pos_embed=cfg.pos_embed,
              pool=cfg.pool, stop_grad_patch_proj=cfg.stop_grad_patch_proj, mlp_norm=cfg.mlp_norm,
              drop_path_rate=cfg.drop_path_rate)
