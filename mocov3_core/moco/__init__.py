"""MoCo v3: heads, loss, momentum update and the two-encoder model."""

from .heads import build_mlp
from .loss import contrastive_loss, symmetric_loss
from .model import Encoder, MoCo
from .momentum import MomentumUpdater

__all__ = ["Encoder", "MoCo", "MomentumUpdater", "build_mlp", "contrastive_loss", "symmetric_loss"]
