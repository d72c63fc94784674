"""Backbones: the paper's ViT (timm-based) and ResNet-50, looked up by name."""

from .norm import PerViewBatchNorm, bn_views, wrap_batchnorms
from .registry import build_backbone, list_backbones
from .resnet import MocoResNet
from .vit import MocoViT, sincos_2d

__all__ = ["MocoResNet", "MocoViT", "PerViewBatchNorm", "bn_views", "build_backbone", "list_backbones",
           "sincos_2d", "wrap_batchnorms"]
