"""Schedules as pure functions of the (fractional) epoch, as in the official main_moco.py.

The loop evaluates them at t = epoch + i / iters_per_epoch every iteration.
"""

from __future__ import annotations

import math


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule used in every experiment of the paper: lr = base_lr x batch / 256."""
    return base_lr * batch_size / 256


def learning_rate(t: float, peak: float, warmup: float, total: float, floor: float = 0.0) -> float:
    """1) linear warmup from 0 over `warmup` epochs; 2) half-cosine from peak to `floor` at `total`."""
    if t < warmup:
        return peak * t / warmup
    progress = min(1.0, (t - warmup) / max(total - warmup, 1e-12))
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def momentum(t: float, m0: float, total: float, cosine: bool = True) -> float:
    """m(t) = 1 - (1 + cos(pi t / T)) / 2 * (1 - m0): m0 at t=0, exactly 1 at t=T; m0 throughout without cosine."""
    if not cosine:
        return m0
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total)) * (1.0 - m0)
