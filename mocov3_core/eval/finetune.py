"""End-to-end fine-tuning with the DeiT recipe the paper used (§6.3; docs/method.md §5.3).

AdamW, lr = base x batch/512, wd 0.05, linear warmup then per-iteration cosine to min_lr, drop-path 0.1,
label smoothing 0.1, mixup 0.8 / cutmix 1.0 (timm's Mixup), RandomResizedCrop + flip on the device.
RandAugment, random erasing, repeated augmentation and model EMA of DeiT are left out (noted in the README).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from torch import nn

from ..config import FinetuneConfig
from ..data import eval_batches
from ..events import EventSink
from ..train.schedules import learning_rate
from .common import setup, train_crops
from .linear import accuracy


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)  # type: ignore[arg-type]
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.features(x))  # type: ignore[operator]


def finetune(cfg: FinetuneConfig, sinks: list[EventSink] | None = None, run_id: str | None = None,
             should_stop: Callable[[], bool] | None = None, first_seq: int = 0) -> dict[str, Any]:
    s = setup(cfg, sinks, run_id, drop_path_rate=cfg.drop_path_rate, first_seq=first_seq)
    assert s.backbone is not None
    model = Classifier(s.backbone, s.num_classes).to(s.device)
    model.backbone.requires_grad_(True)
    if hasattr(model.backbone, "patch_embed"):  # the frozen random projection stays as pretrained
        model.backbone.patch_embed.requires_grad_(not getattr(model.backbone, "stop_grad_patch_proj", False))
    if getattr(model.backbone, "pos_embed_kind", "") == "sincos":
        model.backbone.pos_embed.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    peak = cfg.base_lr * cfg.batch_size / 512
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=cfg.weight_decay)
    n = len(s.train.labels)
    batch = min(cfg.batch_size, n)
    ipe = n // batch
    mix = (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                 num_classes=s.num_classes) if cfg.mixup > 0 or cfg.cutmix > 0 else None)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    dev_gen = torch.Generator(device=s.device).manual_seed(cfg.train.seed)
    s.emitter.emit("status", state="running", phase="finetune", step=0, total_steps=cfg.epochs * ipe,
                   message=f"fine-tuning on {s.data_cfg.dataset}")
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(ipe):
            if should_stop and should_stop():
                s.emitter.emit("status", state="stopped", message=f"stopped at step {step}")
                return {"status": "stopped"}
            lr = learning_rate(epoch + i / ipe, peak, cfg.warmup_epochs, cfg.epochs, cfg.min_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = train_crops(s.train, order[i * batch:(i + 1) * batch], s.data_cfg.crop_size, cfg.crop_min,
                               s.device, dev_gen)
            with s.autocast:
                logits = model(x) if mix is None else None
                if mix is not None:
                    x, soft = mix(x, y)
                    logits = model(x)
            assert logits is not None
            if mix is not None:
                loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            else:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            s.emitter.emit("metrics", step=step, epoch=epoch + (i + 1) / ipe, values={"ft_loss": loss.item(), "lr": lr})
            step += 1
        top1, _ = evaluate_classifier(model, s)
        s.emitter.emit("metrics", step=step - 1, epoch=epoch + 1, values={"ft_top1": top1,
                                                                       "ft_epoch_loss": total / max(ipe, 1)})
    top1, top5 = evaluate_classifier(model, s)
    result = {"protocol": "finetune", "top1": top1, "top5": top5, "epochs": cfg.epochs,
              "dataset": s.data_cfg.dataset, **s.source}
    s.emitter.emit("eval_result", **result)
    s.emitter.emit("status", state="succeeded", message=f"fine-tune top-1 {top1:.2f}%")
    return result


@torch.no_grad()
def evaluate_classifier(model: nn.Module, s: Any) -> tuple[float, float]:
    model.eval()
    logits, labels = [], []
    for x, y in eval_batches(s.test, 512, s.data_cfg.crop_size, s.device, s.data_cfg.num_workers):
        with s.autocast:
            logits.append(model(x).float())
        labels.append(y)
    return accuracy(torch.cat(logits), torch.cat(labels))
