"""The device-side signals (train/signals.py) against direct computations: update-to-weight ratios of a real
optimizer step, attention entropy against the probabilities timm's own non-fused attention computes, RankMe
and feat_std on features of known rank and spread."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mocov3_core.config import ModelConfig
from mocov3_core.models import build_backbone
from mocov3_core.train.signals import UpdateRatios, attention_blocks, attention_entropy, feat_std, rankme


def test_update_ratios_are_the_norm_of_the_step_over_the_norm_of_the_weights() -> None:
    torch.manual_seed(0)
    patch, first, last, proj, pred = (nn.Linear(6, 6) for _ in range(5))
    frozen = nn.Linear(6, 6)
    for p in frozen.parameters():
        p.requires_grad = False
    modules = [patch, first, last, proj, pred]
    ratios = UpdateRatios({"patch_proj": list(patch.parameters()), "first_block": list(first.parameters()),
                           "last_block": [*last.parameters(), *first.parameters()],  # shared: counted in both
                           "projector": list(proj.parameters()),
                           "predictor": [*pred.parameters(), *frozen.parameters()]})
    opt = torch.optim.AdamW([p for m in modules for p in m.parameters()], lr=1e-2, weight_decay=0.1)
    x = torch.randn(8, 6)
    sum(m(x).pow(2).sum() for m in modules).backward()  # type: ignore[misc]
    before = {id(p): p.detach().clone() for m in modules for p in m.parameters()}
    ratios.snapshot()
    opt.step()
    got = ratios()

    def ratio(params: list[nn.Parameter]) -> float:
        du = sum(float((p.detach() - before[id(p)]).pow(2).sum()) for p in params)
        w = sum(float(before[id(p)].pow(2).sum()) for p in params)
        return math.sqrt(du / w)

    expect = [ratio(list(patch.parameters())), ratio(list(first.parameters())),
              ratio([*last.parameters(), *first.parameters()]), ratio([*proj.parameters(), *pred.parameters()])]
    assert got.tolist() == pytest.approx(expect, rel=1e-5)
    assert all(v > 0 for v in expect)

    nothing = UpdateRatios({"patch_proj": list(frozen.parameters())})  # a frozen group: 0, never a division by 0
    nothing.snapshot()
    assert nothing().tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("arch", ["vit_micro_p7", "vit_mini_p7"])
def test_attention_entropy_matches_timms_own_attention_probabilities(arch: str) -> None:
    torch.manual_seed(0)
    vit = build_backbone(ModelConfig(arch=arch), 28).eval()
    x = torch.randn(10, 3, 28, 28)
    blocks = attention_blocks(vit)
    assert blocks is not None
    probs: dict[str, list[torch.Tensor]] = {name: [] for name in blocks}
    handles = []
    for name, attn in blocks.items():
        attn.fused_attn = False  # timm's explicit path, whose attn_drop (p=0) sees the probabilities
        handles.append(attn.attn_drop.register_forward_hook(
            lambda _m, _i, out, name=name: probs[name].append(out.detach())))
    with torch.no_grad(), attention_entropy(vit) as acc:
        vit.features(x[:6])
        vit.features(x[6:])  # sums over several forwards, as the monitor's batches
    for h in handles:
        h.remove()
    assert acc is not None
    for name in blocks:
        p = torch.cat(probs[name])  # [B, heads, T, T]
        expect = float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())
        assert float(acc[name][0] / acc[name][1]) == pytest.approx(expect, rel=1e-4)
        assert 0.0 < expect < math.log(p.shape[-1])
    # the hooks are gone afterwards: the training path is untouched
    assert all(not attn._forward_pre_hooks for attn in blocks.values())


def test_a_resnet_has_no_attention_blocks() -> None:
    resnet = build_backbone(ModelConfig(arch="resnet50"), 32)
    assert attention_blocks(resnet) is None
    with attention_entropy(resnet) as acc:
        assert acc is None


def test_rankme_and_feat_std_on_features_of_known_rank_and_spread() -> None:
    torch.manual_seed(0)
    d = 64
    spread = torch.randn(2000, d)
    assert float(rankme(spread)) == pytest.approx(d, rel=0.1)  # near-equal singular values: close to full rank
    assert float(feat_std(spread)) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    low = torch.randn(2000, 4) @ torch.randn(4, d)
    assert 2.0 < float(rankme(low)) <= 4.0 + 1e-3
    collapsed = torch.ones(2000, d) + 1e-4 * torch.randn(2000, d)  # every image at the same point
    assert float(rankme(collapsed)) < 1.1
    assert float(feat_std(collapsed)) < 1e-3 / math.sqrt(d)
    # Garrido et al.'s definition, written out: exp of the entropy of sigma / ||sigma||_1 + 1e-7
    s = torch.linalg.svdvals(low)
    p = s / s.sum() + 1e-7
    assert float(rankme(low)) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-6)
