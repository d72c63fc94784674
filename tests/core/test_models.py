"""The paper's ViT: parameter counts, embedding, initialisation, ablation switches, and every registered name."""

import math

import pytest
import torch

from mocov3_core.config import ModelConfig
from mocov3_core.models import build_backbone, list_backbones, sincos_2d


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(("arch", "millions"), [("vit_small_p16", 22), ("vit_base_p16", 86)])
def test_parameter_counts_match_the_paper(arch: str, millions: float) -> None:
    m = build_backbone(ModelConfig(arch=arch), 224)
    assert abs(n_params(m) / 1e6 - millions) / millions < 0.02


def test_vit_small_has_twelve_heads_of_dim_32() -> None:
    m = build_backbone(ModelConfig(arch="vit_small_p16"), 224)
    attn = m.blocks[0].attn
    assert attn.num_heads == 12 and attn.head_dim == 32


def test_sincos_table_layout() -> None:
    table = sincos_2d(4, 8)  # 16 tokens, D/4 = 2 frequencies (1 and 1/100)
    r, c = 1, 2  # token 6 in row-major order
    row = table[r * 4 + c]
    omega = torch.tensor([1.0, 0.01])
    expect = torch.cat([(r * omega).sin(), (r * omega).cos(), (c * omega).sin(), (c * omega).cos()])
    torch.testing.assert_close(row, expect)


def test_pos_embed_is_fixed_sincos_with_zero_class_slot() -> None:
    m = build_backbone(ModelConfig(arch="vit_micro_p7"), 28)
    assert not m.pos_embed.requires_grad
    assert torch.all(m.pos_embed[0, 0] == 0)
    torch.testing.assert_close(m.pos_embed[0, 1:], sincos_2d(4, 64))


def test_patch_projection_init_and_freeze() -> None:
    m = build_backbone(ModelConfig(arch="vit_base_p16"), 224)
    w = m.patch_embed.proj.weight
    bound = math.sqrt(6 / (768 + 768))  # 0.0625: Xavier for the linear map 768 -> D
    assert abs(bound - 0.0625) < 1e-9
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert torch.all(m.patch_embed.proj.bias == 0)
    assert not w.requires_grad and not m.patch_embed.proj.bias.requires_grad
    learned = build_backbone(ModelConfig(arch="vit_micro_p7", stop_grad_patch_proj=False), 28)
    assert learned.patch_embed.proj.weight.requires_grad


def test_patch_embedding_as_a_matmul_equals_the_stride_p_convolution_with_the_same_keys() -> None:
    torch.manual_seed(0)
    m = build_backbone(ModelConfig(arch="vit_micro_p7", stop_grad_patch_proj=False), 28)
    embed = m.patch_embed
    assert type(embed).__name__ == "LinearPatchEmbed"
    assert [k for k in m.state_dict() if k.startswith("patch_embed.")] == ["patch_embed.proj.weight",
                                                                           "patch_embed.proj.bias"]
    with torch.no_grad():
        embed.proj.bias.normal_()  # zero at init: make the bias count
    x = torch.randn(3, 3, 28, 28, requires_grad=True)
    conv = torch.nn.functional.conv2d(x, embed.proj.weight, embed.proj.bias, stride=7).flatten(2).transpose(1, 2)
    out = embed(x)
    torch.testing.assert_close(out, conv, rtol=1e-5, atol=1e-5)
    # the gradients of a learned projection (stop_grad_patch_proj=False) and of the input match too
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, embed.proj.weight, embed.proj.bias], g)
    expected = torch.autograd.grad(conv, [x, embed.proj.weight, embed.proj.bias], g)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_qkv_initialised_as_separate_matrices() -> None:
    m = build_backbone(ModelConfig(arch="vit_small_p16"), 224)
    qkv = m.blocks[0].attn.qkv
    bound = math.sqrt(6 / (384 + 384))
    assert qkv.weight.abs().max() <= bound and qkv.weight.abs().max() > 0.95 * bound
    assert torch.all(qkv.bias == 0)


def test_class_token_after_final_norm_is_the_feature() -> None:
    m = build_backbone(ModelConfig(arch="vit_micro_p7"), 28).eval()
    x = torch.randn(3, 3, 28, 28)
    tokens = m.forward_features(x)
    torch.testing.assert_close(m.features(x), tokens[:, 0])
    # the final LayerNorm has run: each token has ~zero mean and unit variance over channels
    assert tokens[:, 0].mean(dim=1).abs().max() < 1e-4


@pytest.mark.parametrize("pool", ["gap", "gap_no_ln"])
def test_pooling_ablations(pool: str) -> None:
    m = build_backbone(ModelConfig(arch="vit_micro_p7", pool=pool), 28)
    assert m.cls_token is None
    assert m.features(torch.randn(2, 3, 28, 28)).shape == (2, 64)
    assert isinstance(m.norm, torch.nn.Identity) == (pool == "gap_no_ln")


def test_position_embedding_ablations() -> None:
    none = build_backbone(ModelConfig(arch="vit_micro_p7", pos_embed="none"), 28)
    assert none.pos_embed is None
    learned = build_backbone(ModelConfig(arch="vit_micro_p7", pos_embed="learned"), 28)
    assert learned.pos_embed.requires_grad


def test_vit_bn_uses_batchnorm_in_mlp_blocks_only() -> None:
    m = build_backbone(ModelConfig(arch="vit_micro_p7", mlp_norm="bn"), 28)
    for block in m.blocks:
        assert any(isinstance(x, torch.nn.BatchNorm1d) for x in block.norm2.modules())
        assert isinstance(block.norm1, torch.nn.LayerNorm)


def test_conv_stem_has_eleven_blocks_and_stride_16() -> None:
    m = build_backbone(ModelConfig(arch="vit_conv_small"), 64)
    assert len(m.blocks) == 11
    assert m.features(torch.randn(2, 3, 64, 64)).shape == (2, 384)
    assert m.patch_embed.num_patches == 16


def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(ValueError, match="vit_small_p16"):
        build_backbone(ModelConfig(arch="vit_gigantic"), 224)


@pytest.mark.parametrize("arch", list_backbones())
def test_every_registered_backbone_builds_tiny_and_runs(arch: str) -> None:
    small = {"embed_dim": 32, "depth": 1, "num_heads": 2} if arch.startswith("vit") else {}
    size = 32 if arch.startswith("vit_conv") or arch == "resnet50" else None
    cfg = ModelConfig(arch=arch, **small)
    default = {"vit_tiny_p4": 32, "vit_small_p4": 32, "vit_mini_p7": 28, "vit_micro_p7": 28}
    img = size or default.get(arch) or (16 * 2 if arch.endswith("p16") else 14 * 2)
    m = build_backbone(cfg.model_copy(update={"img_size": img}), img)
    out = m.features(torch.randn(2, 3, img, img))
    assert out.shape[0] == 2 and torch.isfinite(out).all()
