"""SSL-specific signals of the stability monitor, computed on the device (docs/method.md §6.1).

- `UpdateRatios`: the update-to-weight ratio ||Δw|| / ||w|| of each step's optimizer update, per parameter group
  (patch projection, first block, last block, heads). Spikes in the update size precede loss spikes and are
  larger in the shallow layers; unlike a gradient norm the ratio is what the weights actually felt, after
  Adam's normalisation, weight decay and a skipped step (which updates nothing: ratio 0).
- `attention_entropy`: the mean attention entropy (nats, over heads and query tokens) of the first and last ViT
  block on the kNN monitor's held-out images. Entropy collapse (attention concentrating on one token) marks ViT
  instability (Zhai et al. 2023, "Stabilizing Transformer Training by Preventing Attention Entropy Collapse").
- `rankme` and `feat_std`: representation collapse of the monitor's held-out features: RankMe (Garrido et al.
  2023, arXiv 2210.02885), the exponential of the entropy of the normalised singular values, and the mean
  per-dimension std of the l2-normalised features (~1/sqrt(d) when spread, -> 0 at collapse; SimSiam §4.1).

Nothing here waits for the device: every result is a tensor the caller reads back with the other metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

UPDATE_GROUPS = ("patch_proj", "first_block", "last_block", "heads")
UPDATE_KEYS = tuple(f"update_ratio/{g}" for g in UPDATE_GROUPS)
ENTROPY_BLOCKS = ("first_block", "last_block")
RANKME_EPS = 1e-7
"""RankMe's epsilon, added to every normalised singular value before the entropy (Garrido et al. 2023, Eq. 1)."""
_ENTROPY_CHUNK = 64
"""Images per attention-probability tensor [n, heads, T, T]: bounds the monitor's extra memory (ViT-B at 224:
64 x 12 x 197^2 floats = 119 MB)."""


class UpdateRatios:
    """||Δw|| / ||w|| per group of the step's optimizer update, with preallocated copies of the monitored weights.

    `snapshot()` before the optimizer step copies the monitored parameters (patch projection, first and last
    block, projector + predictor: not the middle blocks nor the momentum encoder) into buffers allocated once;
    `__call__()` after the step turns them into the update and returns the per-group ratios. Foreach kernels:
    one copy, one subtraction and two norms over a few tensor lists, no host sync. A parameter in two groups
    (a one-block ViT's first and last block) counts in both; a frozen group has no parameter and reads 0.
    """

    def __init__(self, groups: dict[str, list[nn.Parameter]]) -> None:
        members = {"patch_proj": groups.get("patch_proj", []), "first_block": groups.get("first_block", []),
                   "last_block": groups.get("last_block", []),
                   "heads": [*groups.get("projector", []), *groups.get("predictor", [])]}
        index: dict[int, int] = {}
        self.params: list[torch.Tensor] = []
        pairs: list[tuple[int, int]] = []  # (position in self.params, group slot)
        for slot, name in enumerate(UPDATE_GROUPS):
            for p in members[name]:
                if not p.requires_grad:
                    continue
                if id(p) not in index:
                    index[id(p)] = len(self.params)
                    self.params.append(p)
                pairs.append((index[id(p)], slot))
        self.buffers = [torch.empty_like(p) for p in self.params]
        device = self.params[0].device if self.params else torch.device("cpu")
        self._param_of = torch.tensor([i for i, _ in pairs], dtype=torch.long, device=device)
        self._slot_of = torch.tensor([s for _, s in pairs], dtype=torch.long, device=device)
        self._zeros = torch.zeros(len(UPDATE_GROUPS), device=device)

    @torch.no_grad()
    def snapshot(self) -> None:
        if self.params:
            torch._foreach_copy_(self.buffers, self.params)

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        """-> float [len(UPDATE_GROUPS)]: each group's ||w_after - w_before|| / ||w_before|| (0 for no parameter)."""
        if not self.params:
            return self._zeros.clone()
        weight = torch.stack(torch._foreach_norm(self.buffers)).float() ** 2
        torch._foreach_sub_(self.buffers, self.params)  # w_before - w_after: the update, negated
        update = torch.stack(torch._foreach_norm(self.buffers)).float() ** 2
        w = self._zeros.index_add(0, self._slot_of, weight.index_select(0, self._param_of))
        u = self._zeros.index_add(0, self._slot_of, update.index_select(0, self._param_of))
        return torch.where(w > 0, u.sqrt() / w.sqrt().clamp_min(1e-30), torch.zeros_like(w))


def attention_blocks(backbone: nn.Module) -> dict[str, nn.Module] | None:
    """The first and last block's attention modules of a timm-style ViT (qkv Linear, num_heads, scale); None for
    a backbone without them (ResNet)."""
    blocks = getattr(backbone, "blocks", None)
    if blocks is None or len(blocks) == 0:
        return None
    found = {"first_block": getattr(blocks[0], "attn", None), "last_block": getattr(blocks[-1], "attn", None)}
    if not all(isinstance(getattr(a, "qkv", None), nn.Linear) and hasattr(a, "num_heads") for a in found.values()):
        return None
    return found  # type: ignore[return-value]


def _entropy_sum(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sum over images, heads and query tokens of the attention entropy of `attn` on its input x [B, T, C],
    computed from q and k as timm's non-fused path does (the training path may use fused SDPA, which never
    materialises the probabilities)."""
    total = torch.zeros((), device=x.device)
    heads = int(attn.num_heads)  # type: ignore[arg-type]
    for part in x.split(_ENTROPY_CHUNK):
        b, t, _ = part.shape
        qkv = attn.qkv(part).reshape(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)  # type: ignore[operator]
        q, k = qkv[0], qkv[1]
        q, k = getattr(attn, "q_norm", nn.Identity())(q), getattr(attn, "k_norm", nn.Identity())(k)
        scale = float(getattr(attn, "scale", q.shape[-1] ** -0.5))
        logp = ((q.float() * scale) @ k.float().transpose(-2, -1)).log_softmax(dim=-1)
        total = total - (logp.exp() * logp).sum()
    return total


@contextmanager
def attention_entropy(backbone: nn.Module) -> Iterator[dict[str, torch.Tensor] | None]:
    """While active, every forward of the backbone adds its first and last block's attention entropy to the
    yielded {block: [sum, count]} tensors (mean = sum / count); yields None for a backbone without attention."""
    blocks = attention_blocks(backbone)
    if blocks is None:
        yield None
        return
    acc = {name: torch.zeros(2, device=next(backbone.parameters()).device) for name in blocks}
    handles = []
    for name, attn in blocks.items():
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            x = args[0]
            acc[name][0] += _entropy_sum(module, x)
            acc[name][1] += x.shape[0] * x.shape[1] * int(module.num_heads)  # type: ignore[arg-type]
        handles.append(attn.register_forward_pre_hook(hook))
    try:
        yield acc
    finally:
        for handle in handles:
            handle.remove()


def rankme(feats: torch.Tensor, eps: float = RANKME_EPS) -> torch.Tensor:
    """RankMe of [N, D] features: exp(-sum p_k log p_k), p_k = sigma_k / ||sigma||_1 + eps (Garrido et al. 2023),
    between 1 (collapsed to one direction) and min(N, D)."""
    s = torch.linalg.svdvals(feats.float())
    p = s / s.sum().clamp_min(1e-30) + eps
    return torch.exp(-(p * p.log()).sum())


def feat_std(feats: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std of the l2-normalised [N, D] features: about 1/sqrt(D) for
    features spread over the sphere, 0 when every image maps to the same direction (SimSiam §4.1)."""
    return F.normalize(feats.float(), dim=1).std(dim=0).mean()
