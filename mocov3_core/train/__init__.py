"""Pretraining loop, schedules, optimisers and checkpoints."""

from .checkpoint import latest_checkpoint, load_backbone, load_checkpoint
from .loop import Pretrainer, PretrainResult, pretrain
from .schedules import learning_rate, momentum, scaled_lr

__all__ = ["PretrainResult", "Pretrainer", "latest_checkpoint", "learning_rate", "load_backbone",
           "load_checkpoint", "momentum", "pretrain", "scaled_lr"]
