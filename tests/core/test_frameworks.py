"""SimCLR, BYOL and SwAV beside MoCo v3: each loss pinned on inputs small enough to work out by hand, the
gradient reaching only what it should, Sinkhorn's marginals, the config sections, and a short pretraining
of each framework on Fashion-MNIST that checkpoints and evaluates with kNN."""

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mocov3_core.config import (
    ByolConfig,
    ConfigError,
    DataConfig,
    KnnConfig,
    MocoConfig,
    ModelConfig,
    PretrainConfig,
    SimclrConfig,
    SwavConfig,
    json_schema,
    validate_spec,
)
from mocov3_core.eval import evaluate
from mocov3_core.events import ListSink
from mocov3_core.frameworks import (
    BYOL,
    MoCo,
    SimCLR,
    SwAV,
    build_framework,
    nt_xent_loss,
    regression_loss,
    sinkhorn,
    swapped_prediction_loss,
    symmetric_regression_loss,
)
from mocov3_core.presets import build_spec
from mocov3_core.train import load_checkpoint, pretrain

MICRO = ModelConfig(arch="vit_micro_p7")
HEADS = MocoConfig(mlp_dim=64, dim=32)

# ---------------------------------------------------------------------------------------------- SimCLR


def nt_xent_by_hand(z1: list[list[float]], z2: list[list[float]], tau: float) -> float:
    """The NT-Xent of SimCLR's paper written out: for each of the 2N crops, -log(e^(s_pos/τ) / Σ_{j≠i} e^(s_ij/τ))."""
    crops = [*z1, *z2]
    n = len(z1)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)

    total = 0.0
    for i, a in enumerate(crops):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(cos(a, b) / tau) for j, b in enumerate(crops) if j != i)
        total -= math.log(math.exp(cos(a, crops[pos]) / tau) / denom)
    return total / (2 * n)


def test_nt_xent_of_two_orthogonal_images_is_ln_1_plus_2_over_e() -> None:
    # crops (1,0),(0,1),(1,0),(0,1) at τ=1: each positive has similarity 1, its two negatives 0 (itself excluded)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = nt_xent_loss(z, z.clone(), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)


def test_nt_xent_matches_the_written_out_formula_on_three_images() -> None:
    z1 = [[1.0, 0.0], [0.6, 0.8], [-1.0, 1.0]]
    z2 = [[0.8, 0.6], [0.0, 2.0], [-1.0, -0.5]]
    loss = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), temperature=0.5)
    assert loss.item() == pytest.approx(nt_xent_by_hand(z1, z2, 0.5), rel=1e-5)


def test_nt_xent_at_random_is_about_ln_2b_minus_1() -> None:
    torch.manual_seed(0)
    b = 256
    loss = nt_xent_loss(torch.randn(b, 128), torch.randn(b, 128), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(2 * b - 1), rel=0.02)


# ---------------------------------------------------------------------------------------------- BYOL


def test_byol_regression_loss_is_2_minus_2_cos() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    z = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cos = 1 and 1/sqrt(2)
    assert regression_loss(p, z).item() == pytest.approx((0 + (2 - math.sqrt(2))) / 2, rel=1e-6)
    # ||p/|p| - z/|z| ||^2 written out, and the symmetrised sum pairs each prediction with the OTHER view's target
    p2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    z1 = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # cos = -1 and 1: per-image losses 4 and 0
    expected = (2 - math.sqrt(2)) / 2 + 2.0
    assert symmetric_regression_loss(p, p2, z1, z).item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------- SwAV


def test_sinkhorn_of_a_balanced_matrix_is_its_row_softmax() -> None:
    # scores [[a, 0], [0, a]]: exp(s/ε) is already balanced, so each crop's code is softmax(s/ε)
    a, eps = 0.5, 0.5
    q = sinkhorn(torch.tensor([[a, 0.0], [0.0, a]]), eps, iters=3)
    x = math.e / (math.e + 1)  # e^(a/ε) / (e^(a/ε) + 1) with a/ε = 1
    torch.testing.assert_close(q, torch.tensor([[x, 1 - x], [1 - x, x]]))


def test_sinkhorn_splits_prototypes_equally_when_every_crop_prefers_the_same_one() -> None:
    # both crops prefer prototype 0; equipartition gives each prototype B/K = 1 crop in total: codes of 1/2
    q = sinkhorn(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), epsilon=1.0, iters=3)
    torch.testing.assert_close(q, torch.full((2, 2), 0.5))


def test_sinkhorn_marginals_rows_sum_to_one_and_columns_to_b_over_k() -> None:
    torch.manual_seed(0)
    b, k = 32, 8
    scores = torch.nn.functional.normalize(torch.randn(b, 16), dim=1) @ torch.nn.functional.normalize(
        torch.randn(k, 16), dim=1).T
    q3 = sinkhorn(scores, epsilon=0.05, iters=3)
    torch.testing.assert_close(q3.sum(dim=1), torch.ones(b))  # every crop's code is a distribution, exactly
    assert (q3 >= 0).all()
    raw = torch.softmax(scores / 0.05, dim=1).sum(dim=0)  # what the crops would pick without the constraint
    assert (q3.sum(dim=0) - b / k).abs().max() < (raw - b / k).abs().max()  # 3 iterations move towards B/K
    q_many = sinkhorn(scores, epsilon=0.05, iters=300)  # converged: prototypes get exactly B/K
    torch.testing.assert_close(q_many.sum(dim=0), torch.full((k,), b / k), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(q_many.sum(dim=1), torch.ones(b))


def test_swapped_prediction_loss_on_a_hand_computed_pair() -> None:
    a, eps, tau = 0.5, 0.5, 0.25
    s = torch.tensor([[a, 0.0], [0.0, a]])
    x = math.e / (math.e + 1)  # codes (previous test)
    sig = 1 / (1 + math.exp(-a / tau))  # softmax([a/τ, 0])[0]
    ce = -(x * math.log(sig) + (1 - x) * math.log(1 - sig))
    loss = swapped_prediction_loss(s, s.clone(), tau, eps, iters=3)
    assert loss.item() == pytest.approx(ce, rel=1e-6)
    # swapped: view 1's codes are the target of view 2's prediction, and vice versa
    s2 = torch.tensor([[0.0, a], [a, 0.0]])  # view 2 predicts the opposite prototypes
    cross = -(x * math.log(1 - sig) + (1 - x) * math.log(sig))
    assert swapped_prediction_loss(s, s2, tau, eps, iters=3).item() == pytest.approx(cross, rel=1e-6)


def test_swav_codes_are_targets_without_gradient() -> None:
    # with q2 a constant, d/ds1 of 1/2 * mean_i CE(q2_i, softmax(s1_i/τ)) = (softmax(s1/τ) - q2) / (2 B τ);
    # codes that carried gradient would add terms through q1 = sinkhorn(s1)
    torch.manual_seed(0)
    b, tau = 8, 0.1
    s1 = torch.randn(b, 4, requires_grad=True)
    s2 = torch.randn(b, 4)
    swapped_prediction_loss(s1, s2, tau, 0.05, 3).backward()
    q2 = sinkhorn(s2, 0.05, 3)
    expected = (torch.softmax(s1.detach() / tau, dim=1) - q2) / (2 * b * tau)
    torch.testing.assert_close(s1.grad, expected)


# ---------------------------------------------------------------------------------------------- models


def grads_of(model: torch.nn.Module) -> dict[str, bool]:
    return {name: p.grad is not None for name, p in model.named_parameters()}


@pytest.mark.parametrize("framework", ["mocov3", "simclr", "byol", "swav"])
def test_gradient_reaches_online_encoder_and_heads_never_targets_or_frozen_tensors(framework: str) -> None:
    torch.manual_seed(0)
    cfg = PretrainConfig(framework=framework, model=MICRO, moco=HEADS, data=DataConfig(crop_size=28),
                         swav=SwavConfig(num_prototypes=10))
    model = build_framework(cfg)
    loss, feats = model(torch.randn(8, 3, 28, 28), torch.randn(8, 3, 28, 28))
    assert torch.isfinite(loss) and feats.shape == (8, 64) and not feats.requires_grad
    loss.backward()
    has = grads_of(model)
    online = [n for n in has if n.startswith("base.")]
    frozen = {"base.backbone.patch_embed.proj.weight", "base.backbone.patch_embed.proj.bias", "base.backbone.pos_embed"}
    assert all(has[n] for n in online if n not in frozen), [n for n in online if n not in frozen and not has[n]]
    assert not any(has[n] for n in frozen)
    targets = [n for n in has if n.startswith(("momentum.", "target."))]
    assert bool(targets) == (framework in ("mocov3", "byol"))
    assert not any(has[n] for n in targets)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in targets)
    for head in ("predictor.", "prototypes."):
        names = [n for n in has if n.startswith(head)]
        assert all(has[n] for n in names)
    assert (model.target_momentum is not None) == (framework in ("mocov3", "byol"))


def test_heads_of_each_framework_have_the_papers_bn() -> None:
    def bns(m: torch.nn.Module) -> list[torch.nn.BatchNorm1d]:
        return [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm1d)]

    simclr = SimCLR(MICRO, SimclrConfig(), 28, moco=HEADS)
    byol = BYOL(MICRO, ByolConfig(), 28, moco=HEADS)
    swav = SwAV(MICRO, SwavConfig(num_prototypes=10), 28, moco=HEADS)
    # SimCLR: MoCo v3's projector (3 layers, BN everywhere, the last without affine)
    assert [n.affine for n in bns(simclr.base.projector)] == [True, True, False]
    # BYOL: BN in the hidden layers only, in projector and predictor
    assert [n.affine for n in bns(byol.base.projector)] == [True, True]
    assert [n.affine for n in bns(byol.predictor)] == [True]
    assert isinstance(byol.predictor[-1], torch.nn.Linear)
    # SwAV: no BN at all in the heads, prototypes of unit norm
    assert bns(swav.base.projector) == []
    torch.testing.assert_close(swav.prototypes.weight.norm(dim=1), torch.ones(10))
    # the shared head sizes: moco.dim / moco.mlp_dim unless the section sets its own
    widths = [x.out_features for x in simclr.base.projector.modules() if isinstance(x, torch.nn.Linear)]
    assert widths == [64, 64, 32]
    own = SimCLR(MICRO, SimclrConfig(dim=16, mlp_dim=48), 28, moco=HEADS)
    assert [x.out_features for x in own.base.projector.modules() if isinstance(x, torch.nn.Linear)] == [48, 48, 16]


def test_byol_target_is_an_ema_of_the_online_encoder_without_predictor() -> None:
    torch.manual_seed(0)
    model = BYOL(MICRO, ByolConfig(), 28, moco=HEADS)
    assert len(list(model.target.parameters())) == len(list(model.base.parameters()))
    with torch.no_grad():
        for p in model.base.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    before = [t.clone() for t in model.target.parameters()]
    model.update_momentum(0.9)
    for online, target, old in zip(model.base.parameters(), model.target.parameters(), before, strict=True):
        expected = 0.9 * old + 0.1 * online if online.requires_grad else old
        torch.testing.assert_close(target, expected)


def test_swav_prototypes_are_frozen_early_and_renormalised_every_step() -> None:
    torch.manual_seed(0)
    model = SwAV(MICRO, SwavConfig(num_prototypes=10, freeze_prototypes_epochs=0.5), 28, moco=HEADS)
    x1, x2 = torch.randn(8, 3, 28, 28), torch.randn(8, 3, 28, 28)
    model(x1, x2)[0].backward()
    model.after_backward(0.25)
    assert model.prototypes.weight.grad is None  # frozen: no update, not even weight decay
    model.zero_grad()
    model(x1, x2)[0].backward()
    model.after_backward(0.5)
    assert model.prototypes.weight.grad is not None
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)
    model(x1, x2)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(10))


def test_mocov3_is_still_built_as_before() -> None:
    torch.manual_seed(0)
    built = build_framework(PretrainConfig(model=MICRO, moco=HEADS, data=DataConfig(crop_size=28)))
    torch.manual_seed(0)
    direct = MoCo(MICRO, HEADS, 28)
    assert isinstance(built, MoCo)
    a, b = built.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- across processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dist_worker(rank: int, world: int, port: int, z: torch.Tensor, s: torch.Tensor, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = z.shape[1] // world
    z_local = z[:, rank * n:(rank + 1) * n].clone().requires_grad_(True)
    loss = nt_xent_loss(z_local[0], z_local[1], 0.5)
    loss.backward()
    grad = z_local.grad.clone() / world  # DDP averages gradients over ranks
    codes = sinkhorn(s[rank * n:(rank + 1) * n], 0.05, 3)
    parts = {"loss": [torch.zeros(()) for _ in range(world)], "grad": [torch.zeros_like(grad) for _ in range(world)],
             "codes": [torch.zeros_like(codes) for _ in range(world)]}
    dist.all_gather(parts["loss"], loss.detach())
    dist.all_gather(parts["grad"], grad)
    dist.all_gather(parts["codes"], codes)
    if rank == 0:
        out["loss"] = torch.stack(parts["loss"]).mean()
        out["grad"] = torch.cat(parts["grad"], dim=1)
        out["codes"] = torch.cat(parts["codes"])
    dist.destroy_process_group()


def test_two_processes_give_the_global_batch_loss_gradient_and_codes() -> None:
    """SimCLR's negatives gathered WITH gradient and SwAV's Sinkhorn over the global batch: two gloo processes
    match one process holding the whole batch."""
    torch.manual_seed(0)
    z = torch.randn(2, 12, 8)  # [view, batch, dim]
    s = torch.randn(12, 5)
    full_z = z.clone().requires_grad_(True)
    full = nt_xent_loss(full_z[0], full_z[1], 0.5)
    full.backward()
    out = mp.Manager().dict()
    mp.spawn(_dist_worker, args=(2, _free_port(), z, s, out), nprocs=2, join=True)
    torch.testing.assert_close(out["loss"], full.detach())
    torch.testing.assert_close(out["grad"], full_z.grad)
    torch.testing.assert_close(out["codes"], sinkhorn(s, 0.05, 3))


# ---------------------------------------------------------------------------------------------- config


def test_framework_sections_default_to_the_papers_settings() -> None:
    c = PretrainConfig()
    assert c.framework == "mocov3" and (c.optim.base_lr, c.optim.weight_decay) == (1.5e-4, 0.1)
    assert (c.simclr.temperature, c.simclr.head_bn) == (0.2, "all")
    assert (c.byol.momentum, c.byol.momentum_cosine, c.byol.head_bn, c.byol.pred_layers) == (0.99, True, "hidden", 2)
    assert (c.swav.num_prototypes, c.swav.temperature, c.swav.epsilon, c.swav.sinkhorn_iters) == (3000, 0.1, 0.05, 3)
    assert c.swav.head_bn == "none" and c.swav.freeze_prototypes_epochs == 1.0
    # lr and wd of the paper's Fig. 6 when the spec leaves them unset; what a spec sets wins
    byol = validate_spec("pretrain", {"framework": "byol"})
    assert (byol.optim.base_lr, byol.optim.weight_decay) == (1e-4, 0.03)
    simclr = validate_spec("pretrain", {"framework": "simclr", "optim": {"base_lr": 3e-4}})
    assert (simclr.optim.base_lr, simclr.optim.weight_decay) == (3e-4, 0.1)
    swav = validate_spec("pretrain", {"framework": "swav"})
    assert (swav.optim.base_lr, swav.optim.weight_decay) == (1.5e-4, 0.1)
    # a resolved spec validates to itself
    assert validate_spec("pretrain", byol.model_dump()) == byol


def test_framework_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        validate_spec("pretrain", {"framework": "dino"})
    assert err.value.path == "framework"
    with pytest.raises(ConfigError) as err:
        build_spec("pretrain", "fmnist_tiny_swav", ["swav.epsilon=0"])
    assert err.value.path == "swav.epsilon"
    with pytest.raises(ConfigError) as err:
        build_spec("pretrain", "fmnist_tiny", ["byol.head_bn=some"])
    assert err.value.path == "byol.head_bn"
    with pytest.raises(ConfigError) as err:
        build_spec("pretrain", "fmnist_tiny", ["simclr.queue=4096"])
    assert err.value.path == "simclr.queue"


def test_schema_describes_every_framework_field() -> None:
    schema = json_schema("pretrain")
    assert schema["properties"]["framework"]["enum"] == ["mocov3", "simclr", "byol", "swav"]
    for section in ("SimclrConfig", "ByolConfig", "SwavConfig"):
        props = schema["$defs"][section]["properties"]
        assert all(p.get("description") for p in props.values()), section


# ---------------------------------------------------------------------------------------------- end to end

SMALL = DataConfig(dataset="fashion_mnist", crop_size=28, limit=1000)


@pytest.mark.fmnist
@pytest.mark.parametrize("framework", ["simclr", "byol", "swav"])
def test_short_pretraining_checkpoints_and_evaluates_with_knn(framework: str, tmp_path: Path) -> None:
    spec = build_spec("pretrain", f"fmnist_tiny_{framework}", ["train.max_steps=8", "data.limit=512",
                                                               "optim.batch_size=32", "monitor.knn_every=4",
                                                               "monitor.knn_eval_samples=200", "train.ckpt_every=4"])
    sink = ListSink()
    result = pretrain(spec, tmp_path, sinks=[sink], resume=None)
    assert result.status == "succeeded" and result.step == 8
    assert len(result.losses) == 8 and all(math.isfinite(v) for v in result.losses.values())
    metrics = [e.payload["values"] for e in sink.of_type("metrics") if "loss" in e.payload["values"]]
    assert ("momentum" in metrics[0]) == (framework == "byol")
    assert all(m["grad_norm/projector"] > 0 for m in metrics)
    assert any("knn_top1" in e.payload["values"] for e in sink.of_type("metrics"))
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["config"]["framework"] == framework and ckpt["step"] == 8
    knn = evaluate(KnnConfig(checkpoint=result.checkpoint, k=20, data=SMALL))
    assert knn["protocol"] == "knn" and 10 < knn["top1"] <= 100
