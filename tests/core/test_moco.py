"""MoCo v3 as the paper defines it: heads, the 2τ loss, per-view BN, the momentum encoder."""

import copy
import math

import pytest
import torch
from torch import nn

from mocov3_core.config import MocoConfig, ModelConfig
from mocov3_core.frameworks import MoCo
from mocov3_core.moco import build_mlp, contrastive_loss, symmetric_loss
from mocov3_core.models import PerViewBatchNorm, bn_views, wrap_batchnorms


def linears(m: nn.Module) -> list[nn.Linear]:
    return [x for x in m.modules() if isinstance(x, nn.Linear)]


def bns(m: nn.Module) -> list[nn.BatchNorm1d]:
    return [x for x in m.modules() if isinstance(x, nn.BatchNorm1d)]


def test_vit_heads_have_the_papers_shapes() -> None:
    model = MoCo(ModelConfig(arch="vit_small_p16"), MocoConfig(), 224)
    proj = [(x.in_features, x.out_features) for x in linears(model.base.projector)]
    pred = [(x.in_features, x.out_features) for x in linears(model.predictor)]
    assert proj == [(384, 4096), (4096, 4096), (4096, 256)]
    assert pred == [(256, 4096), (4096, 256)]
    for head in (model.base.projector, model.predictor):
        assert all(x.bias is None for x in linears(head))
        norms = bns(head)
        assert all(n.affine for n in norms[:-1])
        assert not norms[-1].affine  # final BN without gamma/beta
        assert isinstance(head[-1], PerViewBatchNorm)  # the last layer is that BN


def test_resnet_heads_two_layers_and_predictor_without_final_bn() -> None:
    model = MoCo(ModelConfig(arch="resnet50"), MocoConfig(temperature=1.0), 64)
    proj = [(x.in_features, x.out_features) for x in linears(model.base.projector)]
    assert proj == [(2048, 4096), (4096, 256)]
    assert isinstance(model.predictor[-1], nn.Linear)


def test_momentum_encoder_has_no_predictor_and_no_grad() -> None:
    model = MoCo(ModelConfig(arch="vit_micro_p7"), MocoConfig(mlp_dim=64, dim=32), 28)
    assert not any(p.requires_grad for p in model.momentum.parameters())
    assert len(list(model.momentum.parameters())) == len(list(model.base.parameters()))


@pytest.mark.parametrize("batch", [64, 256])
def test_initial_loss_is_4_tau_ln_b(batch: int) -> None:
    torch.manual_seed(0)
    tau = 0.2
    q1, q2, k1, k2 = (torch.randn(batch, 256) for _ in range(4))
    loss = symmetric_loss(q1, q2, k1, k2, tau).item()
    expected = 4 * tau * math.log(batch)
    assert abs(loss - expected) / expected < 0.05


def test_initial_loss_of_the_model_on_random_images() -> None:
    torch.manual_seed(0)
    model = MoCo(ModelConfig(arch="vit_micro_p7"), MocoConfig(mlp_dim=128, dim=64), 28)
    x1, x2 = torch.randn(128, 3, 28, 28), torch.randn(128, 3, 28, 28)
    loss, feats = model(x1, x2)
    expected = 4 * 0.2 * math.log(128)
    assert abs(loss.item() - expected) / expected < 0.05
    assert feats.shape == (128, 64) and not feats.requires_grad


def test_loss_is_2tau_scaled_cross_entropy_with_diagonal_positives() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(contrastive_loss(q, k, tau), ce * 2 * tau)


def test_per_view_bn_equals_separate_forwards() -> None:
    torch.manual_seed(0)
    head = wrap_batchnorms(build_mlp(3, 16, 32, 8))
    twin = copy.deepcopy(head)
    x1, x2 = torch.randn(10, 16), torch.randn(10, 16) * 3 + 1
    with bn_views(2):
        joint = head(torch.cat([x1, x2]))
    separate = torch.cat([twin(x1), twin(x2)])
    torch.testing.assert_close(joint, separate)
    # and the running statistics saw each view once, as two forwards do
    for a, b in zip(bns(head), bns(twin), strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
    # pooling both views in one BN batch (SimCLR's choice) gives something else
    pooled = copy.deepcopy(twin)(torch.cat([x1, x2]))
    assert not torch.allclose(pooled, separate, atol=1e-3)


def test_model_forward_matches_official_separate_view_forwards() -> None:
    torch.manual_seed(0)
    model = MoCo(ModelConfig(arch="vit_micro_p7"), MocoConfig(mlp_dim=64, dim=32), 28)
    ref = copy.deepcopy(model)
    x1, x2 = torch.randn(8, 3, 28, 28), torch.randn(8, 3, 28, 28)
    loss, _ = model(x1, x2)
    q1 = ref.predictor(ref.base(x1)[1])
    q2 = ref.predictor(ref.base(x2)[1])
    with torch.no_grad():
        k1, k2 = ref.momentum(x1)[1], ref.momentum(x2)[1]
    expected = symmetric_loss(q1, q2, k1, k2, 0.2)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_momentum_update_is_an_ema_of_trainable_tensors_only() -> None:
    torch.manual_seed(0)
    model = MoCo(ModelConfig(arch="vit_micro_p7"), MocoConfig(mlp_dim=64, dim=32), 28)
    with torch.no_grad():
        for p in model.base.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    before = [t.clone() for t in model.momentum.parameters()]
    model.update_momentum(0.9)
    pairs = zip(model.base.parameters(), model.momentum.parameters(), before, strict=True)
    for online, target, old in pairs:
        if online.requires_grad:
            torch.testing.assert_close(target, 0.9 * old + 0.1 * online)
        else:
            assert torch.equal(target, old)
