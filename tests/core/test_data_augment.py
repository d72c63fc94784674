"""The two-view augmentation: probabilities (sampled and observed in outputs), geometry, torchvision parity."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from mocov3_core.config import AugmentConfig
from mocov3_core.data import (
    TwoViewAugment,
    ViewParams,
    _ops,
    blur_kernel_size,
    crop_area_aspect,
    crop_flip,
    eval_transform,
    random_resized_crop,
)

N = 20_000
ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
# Only the op under test: no jitter, grayscale, blur or solarize.
BARE = AugmentConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))


def bare(**only: object) -> AugmentConfig:
    """BARE with the given fields switched back on."""
    return AugmentConfig.model_validate({**BARE.model_dump(), **only})


def tol(p: float, n: int) -> float:
    """Five binomial standard deviations (and a floor for p in {0, 1})."""
    return 5 * math.sqrt(p * (1 - p) / n) + 1e-9


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("view", [0, 1])
def test_sampled_probabilities(view: int) -> None:
    aug = TwoViewAugment(AugmentConfig(), 224, ZERO, ONE)
    p = aug.sample(N, view, gen(view))
    expected = {"flip": 0.5, "jitter": 0.8, "gray": 0.2, "blur": (1.0, 0.1)[view], "solarize": (0.0, 0.2)[view]}
    for name, prob in expected.items():
        rate = getattr(p, name).float().mean().item()
        assert abs(rate - prob) < tol(prob, N), f"view {view} {name}: {rate:.4f} vs {prob}"
    f = p.jitter_factors
    for col, (lo, hi) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
        assert lo <= f[:, col].min() and f[:, col].max() <= hi and abs(f[:, col].mean() - (lo + hi) / 2) < 0.01
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0  # at 224 the sigma scale is 1
    assert sorted(p.jitter_order) == [0, 1, 2, 3]


def test_crop_scale_and_aspect() -> None:
    aug = TwoViewAugment(AugmentConfig(), 224, ZERO, ONE)
    for size in [(224, 224), (300, 200)]:
        boxes = aug.sample(N, 0, gen(1), image_size=size).boxes
        area, aspect = crop_area_aspect(boxes, size)
        assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0  # rounding to whole pixels moves area slightly
        assert aspect.min() >= 0.75 * 0.98 and aspect.max() <= 4 / 3 * 1.02  # +-0.5 px on a >= 60 px side
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 1 + 1e-6).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= 1 + 1e-6).all()
        assert 0.35 < area.mean() < 0.55  # E[U(0.08, 1)] = 0.54 before rejecting large boxes that do not fit
    # A very wide image: attempts fail, the fallback is the centred crop of aspect 4/3.
    wide = _ops.sample_boxes(100, 10, 1000, (0.99, 1.0), (0.75, 4 / 3), gen())
    assert torch.equal(wide[0], torch.tensor([0.0, 493.0, 10.0, 13.0]))


def colourful(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen(seed))


def test_grayscale_observed() -> None:
    n = 10_000
    aug = TwoViewAugment(bare(grayscale_p=0.2), 8, ZERO, ONE)
    p = aug.sample(n, 0, gen(2), image_size=(8, 8))
    out = aug.apply(colourful(n, 8), p)
    equal = ((out[:, 0] - out[:, 1]).abs().amax((1, 2)) < 1e-6) & ((out[:, 1] - out[:, 2]).abs().amax((1, 2)) < 1e-6)
    assert torch.equal(equal, p.gray)
    assert abs(equal.float().mean().item() - 0.2) < tol(0.2, n)


def test_flip_observed() -> None:
    n = 10_000
    ramp = torch.arange(16, dtype=torch.uint8).mul(15).view(1, 1, 1, 16).expand(n, 3, 16, 16)  # brighter rightwards
    aug = TwoViewAugment(BARE, 8, ZERO, ONE)
    p = aug.sample(n, 0, gen(3), image_size=(16, 16))
    out = aug.apply(ramp, p)
    flipped = out[:, 0, :, 0].mean(1) > out[:, 0, :, -1].mean(1)
    assert torch.equal(flipped, p.flip)
    assert abs(flipped.float().mean().item() - 0.5) < tol(0.5, n)


def test_solarize_observed() -> None:
    n = 10_000
    bright = torch.randint(160, 230, (n, 3, 8, 8), dtype=torch.uint8, generator=gen(4))  # all above 0.5
    aug = TwoViewAugment(bare(solarize_p=(0.0, 0.2)), 8, ZERO, ONE)
    for view, prob in ((0, 0.0), (1, 0.2)):
        p = aug.sample(n, view, gen(5), image_size=(8, 8))
        solarized = aug.apply(bright, p).amax((1, 2, 3)) < 0.5
        assert torch.equal(solarized, p.solarize)
        assert abs(solarized.float().mean().item() - prob) < tol(prob, n)


def changed_by(aug: TwoViewAugment, images: torch.Tensor, p: ViewParams, mask: str) -> torch.Tensor:
    """Which samples differ from the same params with `mask` switched off."""
    off = replace(p)
    setattr(off, mask, torch.zeros_like(getattr(p, mask)))
    return (aug.apply(images, p) - aug.apply(images, off)).abs().amax((1, 2, 3)) > 1e-6


def test_jitter_observed() -> None:
    n = 10_000
    aug = TwoViewAugment(bare(jitter_p=0.8), 8, ZERO, ONE)
    images = colourful(n, 8, seed=6)
    p = aug.sample(n, 0, gen(7), image_size=(8, 8))
    changed = changed_by(aug, images, p, "jitter")
    assert torch.equal(changed, p.jitter)
    assert abs(changed.float().mean().item() - 0.8) < tol(0.8, n)


def test_blur_observed() -> None:
    n = 10_000
    # Sigma 8-16 "at 224" is 0.57-1.1 px at 16: large enough to change every blurred crop visibly.
    aug = TwoViewAugment(bare(blur_p=(1.0, 0.1), blur_sigma=(8.0, 16.0)), 16, ZERO, ONE)
    images = colourful(n, 16, seed=8)
    for view, prob in ((0, 1.0), (1, 0.1)):
        p = aug.sample(n, view, gen(9), image_size=(16, 16))
        changed = changed_by(aug, images, p, "blur")
        assert torch.equal(changed, p.blur)
        assert abs(changed.float().mean().item() - prob) < tol(prob, n)


def test_jitter_ops_match_torchvision() -> None:
    x = colourful(6, 10, seed=10).float() / 255
    factors = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 0.7])
    shifts = torch.tensor([-0.1, -0.05, 0.0, 0.03, 0.1, 0.5])
    ours = [_ops.adjust_brightness(x, factors), _ops.adjust_contrast(x, factors), _ops.adjust_saturation(x, factors)]
    refs = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]
    for out, ref in zip(ours, refs, strict=True):
        expected = torch.stack([ref(x[i], float(factors[i])) for i in range(6)])
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)  # float rounding order differs
    expected = torch.stack([TF.adjust_hue(x[i], float(shifts[i])) for i in range(6)])
    torch.testing.assert_close(_ops.adjust_hue(x, shifts), expected, atol=1e-5, rtol=0)


def test_blur_matches_torchvision() -> None:
    x = colourful(4, 24, seed=11).float() / 255
    sigma = torch.tensor([0.2, 0.7, 1.3, 2.0])
    k = blur_kernel_size(224)
    assert (k, blur_kernel_size(28), blur_kernel_size(32), blur_kernel_size(64)) == (23, 3, 3, 7)
    out = _ops.gaussian_blur(x, sigma, 7)
    expected = torch.stack([TF.gaussian_blur(x[i], [7, 7], [float(sigma[i])] * 2) for i in range(4)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_crop_and_flip_match_torchvision() -> None:
    x = colourful(2, 16, seed=12).float() / 255
    pixel_boxes = [(2, 3, 10, 12), (0, 5, 16, 9)]  # (top, left, h, w), both enlarged to 20x20
    boxes = torch.tensor(pixel_boxes, dtype=torch.float32) / 16
    out = _ops.crop_resize(x, boxes, 20, flip=torch.tensor([False, True]))
    for i, (t, left, h, w) in enumerate(pixel_boxes):
        expected = TF.resized_crop(x[i], t, left, h, w, [20, 20], antialias=False)
        expected = expected.flip(-1) if i == 1 else expected
        # Interior only: on the outermost output pixels roi_align interpolates with the image pixels just
        # outside the box, where torchvision (crop, then resize) repeats the box's edge pixels.
        torch.testing.assert_close(out[i, :, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_same_seed_same_views_and_output_format() -> None:
    images = colourful(32, 20, seed=13)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    aug = TwoViewAugment(AugmentConfig(), 16, mean, std)
    x1, x2 = aug(images, gen(14))
    y1, y2 = aug(images, gen(14))
    assert torch.equal(x1, y1) and torch.equal(x2, y2)
    assert x1.shape == (32, 3, 16, 16) and x1.dtype == torch.float32
    z1, _ = aug(images, gen(15))
    assert not torch.equal(x1, z1)
    assert not torch.equal(x1, x2)
    # Nothing random left: the output is just the normalised input.
    plain = TwoViewAugment(bare(crop_min=1.0, flip_p=0.0), 20, mean, std)
    a, _ = plain(images, gen())
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(a, (images.float() / 255 - m) / s, atol=1e-5, rtol=0)
    # float input in [0, 1] gives the same views as uint8
    f1, _ = aug(images.float() / 255, gen(14))
    torch.testing.assert_close(f1, x1, atol=1e-4, rtol=0)


def test_grayscale_input_and_precropped_views() -> None:
    gray = torch.randint(0, 256, (64, 1, 12, 12), dtype=torch.uint8, generator=gen(16))
    aug = TwoViewAugment(AugmentConfig(), 12, ZERO, ONE)
    x1, x2 = aug(gray, gen(17))
    for x in (x1, x2):  # every op keeps a gray image gray
        assert x.shape == (64, 3, 12, 12)
        torch.testing.assert_close(x[:, 0], x[:, 1], atol=1e-6, rtol=0)
        torch.testing.assert_close(x[:, 1], x[:, 2], atol=1e-6, rtol=0)
    crops = colourful(8, 12, seed=18)
    plain = TwoViewAugment(bare(flip_p=1.0), 12, ZERO, ONE)
    v1, v2 = plain(torch.stack([crops, crops]), gen())  # [2, N, 3, S, S]: no crop, no flip
    torch.testing.assert_close(v1, crops.float() / 255, atol=1e-6, rtol=0)
    torch.testing.assert_close(v2, v1, atol=0, rtol=0)


def test_eval_transform_and_crop_flip() -> None:
    small = colourful(3, 28, seed=19)
    torch.testing.assert_close(eval_transform(small, 28, ZERO, ONE), small.float() / 255)
    assert eval_transform(small, 32, ZERO, ONE).shape == (3, 3, 32, 32)  # small images are just resized
    large = colourful(2, 80, seed=20)[:, :, :, :60]  # 80x60: shorter side to 32/0.875 = 36, centre 32
    out = eval_transform(large, 32, ZERO, ONE)
    expected = TF.center_crop(TF.resize(large, 36, antialias=True), [32, 32]).float() / 255
    torch.testing.assert_close(out, expected)
    a = crop_flip(small, 16, 0.08, gen(21), ZERO, ONE)
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, crop_flip(small, 16, 0.08, gen(21), ZERO, ONE))
    one = random_resized_crop(small[0, :1], 8, 0.08, 0.5, gen(22))  # gray uint8 image on the CPU
    assert one.shape == (3, 8, 8) and one.dtype == torch.uint8


def test_jitter_order_per_batch() -> None:
    aug = TwoViewAugment(AugmentConfig(), 8, ZERO, ONE)
    g = gen(23)
    orders = {aug.sample(4, 0, g).jitter_order for _ in range(50)}
    assert len(orders) > 5 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    g1, g2 = gen(24), gen(24)
    assert [aug.sample(4, 1, g1).jitter_order for _ in range(5)] == [
        aug.sample(4, 1, g2).jitter_order for _ in range(5)
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_never_waits_for_the_gpu() -> None:
    images = colourful(64, 20, seed=30)
    aug = TwoViewAugment(AugmentConfig(), 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    on_cpu = aug(images, gen(31))
    on_gpu = aug(images.cuda(), gen(31))  # a CPU generator draws the same params for either device
    for a, b in zip(on_cpu, on_gpu, strict=True):
        torch.testing.assert_close(a, b.cpu(), atol=1e-4, rtol=0)
    g = torch.Generator(device="cuda").manual_seed(0)
    w1, _ = aug(images.cuda(), g)  # the first call per device caches the normalisation constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x1, x2 = aug(images.cuda(non_blocking=True), g)
        x1b, _ = aug(images.cuda(non_blocking=True), torch.Generator(device="cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert x1.shape == (64, 3, 16, 16) and x1.is_cuda and not torch.equal(x1, x2)
    assert torch.equal(x1b, w1)  # a CUDA generator's seed reproduces the views too


def where_reference(aug: TwoViewAugment, images: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """The GPU formulation: every op computed for all samples, a per-sample select keeps the masked ones."""
    x = images.float() / 255
    n = len(x)

    def pick(mask: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(n, 1, 1, 1), y, x)

    x = pick(p.jitter, _ops.color_jitter(x, p.jitter_factors, p.jitter_order), x)
    x = pick(p.gray, _ops.grayscale(x).expand(-1, 3, -1, -1), x)
    x = pick(p.blur, _ops.gaussian_blur(x, p.sigma, aug.kernel_size), x)
    x = pick(p.solarize, _ops.solarize(x), x)
    return (x - torch.tensor(aug.mean).view(1, 3, 1, 1)) / torch.tensor(aug.std).view(1, 3, 1, 1)


@pytest.mark.parametrize("cfg", [AugmentConfig(), AugmentConfig(grayscale_p=1.0, blur_p=(1.0, 0.5), jitter_p=0.5,
                                                                solarize_p=(1.0, 0.5))])
def test_cpu_masked_chunks_equal_the_select_formulation(cfg: AugmentConfig) -> None:
    """On the CPU each op runs on its selected samples only, 8 crops at a time: the same numbers as computing
    every op for the whole batch and selecting (what a GPU does), whatever the masks (all, none, some)."""
    aug = TwoViewAugment(cfg, 24, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    images = torch.randint(0, 256, (2, 19, 3, 24, 24), dtype=torch.uint8)
    for view in (0, 1):
        p = aug.sample(19, view, gen(view))
        got = aug.apply(images[view], p, crop=False)
        torch.testing.assert_close(got, where_reference(aug, images[view], p), atol=2e-5, rtol=1e-5)
    crops = images.float() / 255
    before = crops.clone()
    x1, x2 = aug(crops, gen(3))  # float crops (decoded on the device): the caller's tensor is not written into
    assert x1.shape == x2.shape == (19, 3, 24, 24) and torch.equal(crops, before)


@pytest.mark.parametrize("channels", [1, 3])
def test_compiled_pointwise_chains_give_the_same_views_and_compile_once(channels: int) -> None:
    """compile=True (train.compile) traces each jitter op, the grayscale select and solarize + normalise whole
    (fullgraph: a graph break would raise); aot_eager here, inductor in the CUDA test below and the GPU bench."""
    import torch._dynamo

    torch._dynamo.reset()
    images = torch.randint(0, 256, (16, channels, 20, 20), dtype=torch.uint8, generator=gen(40))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    plain = TwoViewAugment(AugmentConfig(), 16, mean, std)
    fused = TwoViewAugment(AugmentConfig(), 16, mean, std, compile=True, compile_backend="aot_eager")
    counters = torch._dynamo.utils.counters
    start = counters["stats"]["unique_graphs"]
    for seed in range(6):  # six batches: several jitter orders, both views
        for a, b in zip(plain(images, gen(seed)), fused(images, gen(seed)), strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
        if seed == 0:
            graphs = counters["stats"]["unique_graphs"]
    # 4 jitter ops + grayscale + normalise with and without solarize, each traced once, whatever the order
    assert graphs - start == counters["stats"]["unique_graphs"] - start == 7
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inductor_fused_augmentation_matches_and_never_waits_for_the_gpu() -> None:
    images = colourful(64, 40, seed=41).cuda()
    plain = TwoViewAugment(AugmentConfig(), 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    fused = TwoViewAugment(AugmentConfig(), 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), compile=True)
    for seed in range(3):  # compiles on the first calls
        for a, b in zip(plain(images, gen(seed)), fused(images, gen(seed)), strict=True):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    g = torch.Generator(device="cuda").manual_seed(1)
    fused(images, g)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fused(images, g)
    finally:
        torch.cuda.set_sync_debug_mode(0)
