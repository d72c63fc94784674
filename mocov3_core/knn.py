"""Weighted kNN on cosine similarity (Wu et al. 2018, as DINO and the paper's kNN monitor use it).

Each test feature votes with its k nearest training features, each vote weighted by exp(sim / t).
Shared by the kNN monitor of pretraining (`train/loop.py`) and the kNN protocol (`eval/knn.py`): it lives
below both packages so that neither imports the other for it.
"""

from __future__ import annotations

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


