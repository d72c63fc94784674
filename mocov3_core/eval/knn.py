"""Weighted kNN on cosine similarity (Wu et al. 2018, as DINO and the paper's kNN monitor use it).

Each test feature votes with its k nearest training features, each vote weighted by exp(sim / t).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


@torch.no_grad()
def weighted_knn(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, k: int = 200, t: float = 0.07,
                 chunk: int = 1024) -> tuple[float, float]:
    """-> (top-1 %, top-5 %) of test_labels predicted from [N, D] train features (normalised here)."""
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    k = min(k, train.shape[0])
    correct1 = correct5 = 0.0
    for start in range(0, test.shape[0], chunk):
        sims = test[start:start + chunk] @ train.T  # [n, N]
        top_sims, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(sims.shape[0], num_classes, device=sims.device)
        votes.scatter_add_(1, train_labels[top_idx], (top_sims / t).exp())
        pred = votes.topk(min(5, num_classes), dim=1).indices
        target = test_labels[start:start + chunk, None]
        correct1 += (pred[:, :1] == target).sum().item()
        correct5 += (pred == target).any(dim=1).sum().item()
    n = test.shape[0]
    return 100.0 * correct1 / n, 100.0 * correct5 / n


def knn_eval(cfg: Any, sinks: list[Any] | None = None, run_id: str | None = None,
             should_stop: Any = None, first_seq: int = 0) -> dict[str, Any]:  # noqa: ARG001 (nothing to stop)
    """The kNN protocol on frozen features of the whole train and test sets (or on raw pixels)."""
    from .common import extract, setup

    s = setup(cfg, sinks, run_id, need_backbone=cfg.features == "backbone", first_seq=first_seq)
    total = len(s.train.labels) + len(s.test.labels)
    s.emitter.emit("status", state="running", phase="knn", step=0, total_steps=total,
                   message=f"kNN (k={cfg.k}) on {s.data_cfg.dataset}")
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        s.emitter.emit("metrics", step=done - 1, values={"images_encoded": done})

    train_x, train_y = extract(s, s.train, cfg.batch_size, progress)
    test_x, test_y = extract(s, s.test, cfg.batch_size, progress)
    top1, top5 = weighted_knn(train_x, train_y, test_x, test_y, s.num_classes, cfg.k, cfg.temperature)
    result = {"protocol": "knn", "top1": top1, "top5": top5, "k": cfg.k, "dataset": s.data_cfg.dataset,
              "features": cfg.features, **s.source}
    s.emitter.emit("eval_result", **result)
    s.emitter.emit("status", state="succeeded", message=f"kNN top-1 {top1:.2f}%")
    return result
