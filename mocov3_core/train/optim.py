"""Optimisers of the paper: AdamW (ViT), LARS (ResNet-50, 1-D tensors excluded), LAMB (paper Fig. 3).

AdamW decays every trainable tensor, as the official code passes model.parameters() unfiltered
(docs/method.md §3); `exclude_bias_norm_wd` is the common deviation. Frozen tensors have no grad and are
left out. LARS and LAMB come from timm.optim.
"""

from __future__ import annotations

import torch
from timm.optim import Lamb, Lars
from torch import nn

from ..config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, exclude_1d: bool) -> list[dict[str, object]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_1d and p.ndim <= 1 else decay).append(p)
    groups: list[dict[str, object]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    if cfg.name == "adamw":
        groups = param_groups(model, cfg.weight_decay, cfg.exclude_bias_norm_wd)
        # fused: one kernel for the whole update, and it can skip a non-finite step without a host sync
        return torch.optim.AdamW(groups, lr=0.0, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                 fused=device.type in ("cuda", "cpu"))
    if cfg.name == "lars":
        # 1-D tensors (biases, BN) get neither weight decay nor the trust-ratio adaptation (official optimizer.py)
        groups = param_groups(model, cfg.weight_decay, exclude_1d=True)
        groups[0]["always_adapt"] = True
        if len(groups) > 1:
            groups[1]["always_adapt"] = False
        return Lars(groups, lr=0.0, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    trust_coeff=cfg.trust_coeff)
    if cfg.name == "lamb":
        groups = param_groups(model, cfg.weight_decay, cfg.exclude_bias_norm_wd)
        return Lamb(groups, lr=0.0, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name: unknown optimiser {cfg.name!r}")


def supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Fused Adam/AdamW read `optimizer.found_inf` and skip the step on device, with no host sync."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and bool(optimizer.defaults.get("fused"))
