"""Model FLOPs of a training step (counted with FlopCounterMode on the meta device), the devices' peaks, and the
TF32 switch the engine sets on CUDA."""

from typing import Any

import pytest
import torch

from mocov3_core.presets import build_spec
from mocov3_core.system import restore_tf32, set_tf32, tf32_enabled
from mocov3_core.train.flops import PEAKS, achieved, count_flops, device_peak, peak_key, step_flops


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_linear_layer_counts_2_b_in_out_forward_and_three_times_that_with_backward(device: str) -> None:
    b, n_in, n_out = 8, 32, 16
    layer = torch.nn.Linear(n_in, n_out, device=device)
    x = torch.randn(b, n_in, device=device, requires_grad=True)
    assert count_flops(lambda: layer(x)).total == 2 * b * n_in * n_out
    both = count_flops(lambda: layer(x).sum().backward())  # + grad of the input + grad of the weight
    assert both.total == 3 * 2 * b * n_in * n_out
    # a frozen layer fed a tensor without gradient has no backward: only its forward counts
    frozen = torch.nn.Linear(n_in, n_out, device=device).requires_grad_(False)
    assert count_flops(lambda: (frozen(x.detach()) * 1).sum()).total == 2 * b * n_in * n_out


def _vit_forward(tokens: int, width: int, depth: int, patch_in: int, patches: int) -> float:
    """One view's ViT forward by the usual transformer count: per block qkv 6ND^2, proj 2ND^2, MLP 16ND^2,
    attention scores and weighted sum 4N^2 D; plus the patch projection."""
    return depth * (24 * tokens * width**2 + 4 * tokens**2 * width) + 2 * patches * patch_in * width


def test_a_vit_s16_mocov3_step_matches_the_transformer_estimate() -> None:
    cfg = build_spec("pretrain", "vit_small_300ep", ["data.crop_size=224"])
    b = 4
    counted = step_flops(cfg, b).total
    d, depth, mlp, dim = 384, 12, cfg.moco.mlp_dim, cfg.moco.dim
    blocks = _vit_forward(197, d, depth, 3 * 16 * 16, 196) - 2 * 196 * 768 * d
    patch = 2 * 196 * 768 * d  # frozen (random patch projection): forward only, in both encoders
    projector = 2 * (d * mlp + mlp * mlp + mlp * dim)  # 3 layers
    predictor = 2 * (dim * mlp + mlp * dim)
    per_view = 3 * (blocks + projector + predictor) + (blocks + projector) + 2 * patch  # online fwd+bwd, target fwd
    expected = 2 * b * per_view
    assert counted == pytest.approx(expected, rel=1e-3)  # what is left: the loss's B x B logits
    # the momentum encoder's forward is in: without it the count would be ~25% lower
    assert counted > 1.2 * 2 * b * (3 * (blocks + projector + predictor) + patch)


@pytest.mark.parametrize("preset", ["fmnist_tiny", "fmnist_tiny_simclr", "fmnist_tiny_byol", "fmnist_tiny_swav"])
def test_every_framework_counts_and_the_count_grows_with_the_batch(preset: str) -> None:
    cfg = build_spec("pretrain", preset, [])
    small, large = step_flops(cfg, 8).total, step_flops(cfg, 16).total
    assert small > 0 and 1.9 * small < large < 2.2 * small  # linear in the batch, but for the B x B logits
    assert set(step_flops(cfg, 8).by_op) <= {"aten.mm", "aten.addmm", "aten.bmm", "aten.convolution"}


def test_the_count_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    step_flops(build_spec("pretrain", "fmnist_tiny", []), 8)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize(("name", "row"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200"), ("NVIDIA H200 NVL", "H200 NVL"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"), ("NVIDIA L4", "L4")])
def test_known_devices_find_their_datasheet_row(name: str, row: str) -> None:
    found = device_peak(name, "bf16")
    assert found is not None and found[0] == row
    peaks = dict((label, p) for label, _, p in PEAKS)[row]
    assert found[1] == peaks["bf16"]
    assert device_peak(name, "fp32") == (row, peaks["tf32"])  # fp32 matmuls run as TF32 on CUDA by default
    assert device_peak(name, "fp32", tf32=False) == (row, peaks["fp32"])
    assert device_peak(name, "fp32-strict") == (row, peaks["fp32"])
    assert peaks["bf16"] > peaks["tf32"] > peaks["fp32"]


def test_unknown_devices_have_no_peak_and_no_mfu() -> None:
    assert device_peak("NVIDIA L40S", "bf16") is None  # not an L4
    assert device_peak("NVIDIA GeForce RTX 4090", "bf16") is None
    assert achieved(10**12, 0.5, None) == (2.0, None)
    tflops, mfu = achieved(500 * 10**12, 1.0, 1000.0)
    assert tflops == pytest.approx(500.0) and mfu == pytest.approx(0.5)
    assert peak_key("fp16") == "bf16" and peak_key("fp32", tf32=False) == "fp32"


def test_set_tf32_sets_the_flags_both_apis_read_them_back_and_restore_puts_them_back() -> None:
    cudnn: Any = torch.backends.cudnn
    before = set_tf32(True)
    try:
        # the per-backend properties (torch >= 2.9) and the older getters agree, and neither raises
        assert torch.backends.cuda.matmul.fp32_precision == "tf32" and cudnn.conv.fp32_precision == "tf32"
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
        assert cudnn.allow_tf32 and tf32_enabled()
        assert set_tf32(False) == {"matmul": "high", "cudnn": True}
        assert torch.backends.cuda.matmul.fp32_precision == "ieee" and cudnn.conv.fp32_precision != "tf32"
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
        assert not cudnn.allow_tf32 and not tf32_enabled()
        # dynamo guards the global state it runs under: it must trace and run with either setting
        set_tf32(True)
        layer = torch.nn.Linear(4, 4)
        out = torch.compile(layer, backend="aot_eager")(torch.ones(2, 4))
        assert torch.allclose(out, layer(torch.ones(2, 4)))
    finally:
        restore_tf32(before)
    assert torch.get_float32_matmul_precision() == before["matmul"] and cudnn.allow_tf32 == before["cudnn"]
