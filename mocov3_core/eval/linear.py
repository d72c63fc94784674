"""Linear probing on frozen features (paper §5; official main_lincls.py; docs/method.md §5.1).

The paper's recipe: SGD (momentum 0.9, wd 0), lr = base x batch/256, cosine decay per epoch without
warmup, 90 epochs, a Linear initialised N(0, 0.01) on the class token after the final LN, the backbone
frozen in eval mode, RandomResizedCrop + flip of the whole image for training (every image of an epoch,
the last batch partial), Resize 256 + CenterCrop 224 for evaluation. mode='paper' runs that;
mode='cached' extracts the features once (no augmentation) and trains the same classifier on them in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LinearConfig
from ..events import EventSink
from .common import EvalSetup, epoch_batches, extract, setup, train_crops

# main_lincls.py trains with torchvision's default RandomResizedCrop scale (0.08, 1)
LINEAR_CROP_MIN = 0.08
# The per-256 base lr when the spec gives none, by backbone. facebookresearch/moco-v3 CONFIG.md, "ViT-Small /
# ViT-Base, linear classification": `main_lincls.py -a vit_small --lr=3` (likewise vit_base); "ResNet-50,
# linear classification" passes no --lr, so main_lincls.py's default applies: `--lr default=0.1`. Both are
# scaled by batch/256 there (init_lr = args.lr * args.batch_size / 256), as here.
PROBE_BASE_LR = {"vit": 3.0, "resnet": 0.1}


def probe_base_lr(cfg: LinearConfig, arch: str | None) -> float:
    """The spec's base_lr, else the official recipe's for the backbone's family (ViT when unknown)."""
    if cfg.base_lr is not None:
        return cfg.base_lr
    return PROBE_BASE_LR["resnet" if arch and arch.startswith("resnet") else "vit"]


def make_classifier(dim: int, num_classes: int, device: torch.device) -> nn.Linear:
    head = nn.Linear(dim, num_classes).to(device)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return head


@torch.no_grad()
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    top1 = (top[:, 0] == labels).float().mean().item() * 100
    top5 = (top == labels[:, None]).any(dim=1).float().mean().item() * 100
    return top1, top5


def linear_probe(cfg: LinearConfig, sinks: list[EventSink] | None = None, run_id: str | None = None,
                 should_stop: Callable[[], bool] | None = None, first_seq: int = 0) -> dict[str, Any]:
    s = setup(cfg, sinks, run_id, first_seq=first_seq)
    assert s.backbone is not None
    s.backbone.requires_grad_(False)
    s.emitter.emit("status", state="running", phase="linear", step=0, total_steps=cfg.epochs,
                   message=f"linear probe ({cfg.mode}) on {s.data_cfg.dataset}")
    test_x, test_y = extract(s, s.test, 512)
    train_cached = extract(s, s.train, 512) if cfg.mode == "cached" else None
    head = make_classifier(test_x.shape[1], s.num_classes, s.device)
    base_lr = probe_base_lr(cfg, s.source.get("arch"))
    lr = base_lr * cfg.batch_size / 256
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    n = len(s.train.labels)
    for epoch in range(cfg.epochs):
        if should_stop and should_stop():
            s.emitter.emit("status", state="stopped", message=f"stopped at epoch {epoch}")
            return {"status": "stopped"}
        for group in opt.param_groups:  # cosine per epoch, no warmup (main_lincls.py)
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
        order = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for batch in epoch_batches(n, cfg.batch_size):
            idx = order[batch]
            feats, labels = (_cached_batch(train_cached, idx) if train_cached is not None
                             else _augmented_batch(s, idx, gen))
            loss = F.cross_entropy(head(feats), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item(), count + 1
        top1, top5 = accuracy(head(test_x), test_y)
        s.emitter.emit("metrics", step=epoch, epoch=epoch + 1,
                       values={"linear_loss": total / max(count, 1), "linear_top1": top1})
    top1, top5 = accuracy(head(test_x), test_y)
    result = {"protocol": "linear", "mode": cfg.mode, "top1": top1, "top5": top5, "epochs": cfg.epochs,
              "base_lr": base_lr, "dataset": s.data_cfg.dataset, **s.source}
    s.emitter.emit("eval_result", **result)
    s.emitter.emit("status", state="succeeded", message=f"linear top-1 {top1:.2f}%")
    return result


def _cached_batch(cached: tuple[torch.Tensor, torch.Tensor], idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = cached
    idx = idx.to(feats.device)
    return feats[idx], labels[idx]


@torch.no_grad()
def _augmented_batch(s: EvalSetup, idx: torch.Tensor,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    dev_gen = torch.Generator(device=s.device).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    x, labels = train_crops(s.train, idx, s.data_cfg.crop_size, LINEAR_CROP_MIN, s.device, dev_gen)
    assert s.backbone is not None
    with s.autocast:
        feats = s.backbone.features(x)  # type: ignore[operator]
    return feats.float(), labels
