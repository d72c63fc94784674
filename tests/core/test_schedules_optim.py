"""Schedules (lr scaling, warmup, cosine; momentum from m0 to 1) and the optimisers' parameter handling."""

import pytest
import torch
from torch import nn

from mocov3_core.config import OptimConfig
from mocov3_core.train import learning_rate, momentum, scaled_lr
from mocov3_core.train.optim import build_optimizer


def test_linear_scaling_rule() -> None:
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_lr(1.5e-4, 1024) == pytest.approx(6e-4)


def test_learning_rate_warmup_then_cosine_to_zero() -> None:
    peak, warm, total = 2.4e-3, 40, 300
    assert learning_rate(0, peak, warm, total) == 0
    assert learning_rate(20, peak, warm, total) == pytest.approx(peak / 2)
    assert learning_rate(40, peak, warm, total) == pytest.approx(peak)
    assert learning_rate(170, peak, warm, total) == pytest.approx(peak / 2)
    assert learning_rate(300, peak, warm, total) == pytest.approx(0, abs=1e-15)
    xs = [learning_rate(t / 10, peak, warm, total) for t in range(400, 3000)]
    assert all(a >= b for a, b in zip(xs, xs[1:], strict=False))


def test_momentum_schedule_endpoints() -> None:
    assert momentum(0, 0.99, 300) == pytest.approx(0.99)
    assert momentum(300, 0.99, 300) == 1.0
    assert momentum(150, 0.99, 300) == pytest.approx(0.995)
    assert momentum(77, 0.99, 300, cosine=False) == 0.99


def test_adamw_decays_every_trainable_tensor_like_the_paper() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(OptimConfig(), model, torch.device("cpu"))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1
    excl = build_optimizer(OptimConfig(exclude_bias_norm_wd=True), model, torch.device("cpu"))
    assert [g["weight_decay"] for g in excl.param_groups] == [0.1, 0.0]


def test_frozen_tensors_are_not_optimised() -> None:
    model = nn.Linear(4, 4)
    model.bias.requires_grad = False
    opt = build_optimizer(OptimConfig(), model, torch.device("cpu"))
    assert sum(len(g["params"]) for g in opt.param_groups) == 1


def test_lars_leaves_1d_tensors_alone() -> None:
    """1-D tensors get neither weight decay nor the trust-ratio scaling: plain SGD with momentum."""
    torch.manual_seed(0)
    model = nn.Linear(8, 8)
    cfg = OptimConfig(name="lars", weight_decay=0.5, momentum=0.9, trust_coeff=0.001)
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    for g in opt.param_groups:
        g["lr"] = 0.1
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    model.weight.grad = torch.ones_like(model.weight)
    model.bias.grad = torch.full_like(model.bias, 2.0)
    opt.step()
    torch.testing.assert_close(model.bias, b0 - 0.1 * 2.0)  # no wd, no adaptation
    # the 2-D weight moved by lr * trust * |w| / |g + wd w| * (g + wd w): far less than lr * g
    step = (w0 - model.weight).abs().max().item()
    assert 0 < step < 0.01
