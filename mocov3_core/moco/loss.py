"""The contrastive loss of MoCo v3 (paper Alg. 1, §3; docs/method.md §1.2).

ctr(q, k) = 2τ · CE(q · K^T / τ, positives on the diagonal), with q and k l2-normalised and K the keys of
the whole global batch: under DDP the local keys are all-gathered (without gradient: keys come from the
momentum encoder under no_grad) and the positives of rank r sit at columns r*N .. r*N+N-1. Queries are not
gathered; DDP's gradient averaging then equals one device holding the full B x B logits. At
initialisation the loss is about 2 · 2τ · ln(B) for the symmetrised pair.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_keys(k: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather [N, C] keys from every rank -> ([world*N, C], offset of this rank's keys)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return k, 0
    out = [torch.empty_like(k) for _ in range(dist.get_world_size())]
    dist.all_gather(out, k.contiguous())
    return torch.cat(out), dist.get_rank() * k.shape[0]


def contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """2τ · InfoNCE of local queries [N, C] against the global batch of keys."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    keys, offset = gather_keys(k)
    logits = q @ keys.T / temperature  # [N, N_global]
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)


def symmetric_loss(q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """L = ctr(q1, k2) + ctr(q2, k1)."""
    return contrastive_loss(q1, k2, temperature) + contrastive_loss(q2, k1, temperature)
