"""MoCo v3's building blocks: MLP heads, the contrastive loss and the momentum update. The other frameworks
reuse them; the two-encoder model itself is `mocov3_core.frameworks.MoCo` (this package imports nothing from
`frameworks`, so the dependency runs one way)."""

from .heads import build_mlp
from .loss import contrastive_loss, symmetric_loss
from .momentum import MomentumUpdater

__all__ = ["MomentumUpdater", "build_mlp", "contrastive_loss", "symmetric_loss"]
