"""MoCo v3's two asymmetric views (BYOL's recipe; docs/method.md §4), computed in batches on the training device.

Per view: RandomResizedCrop -> ColorJitter (p 0.8) -> Grayscale (p 0.2) -> Gaussian blur (p 1.0 / 0.1)
-> Solarize (p 0 / 0.2) -> HorizontalFlip (p 0.5) -> Normalize. Random choices are drawn up front into a
`ViewParams` (one tensor per choice, from a `torch.Generator`, so a seed reproduces the views exactly),
then `apply` runs each op once over the whole batch. Differences from torchvision's per-image pipeline:

- The order of the four jitter ops is one random permutation per batch, not per image.
- Every op runs over the whole batch and a per-sample mask selects its result: no host sync, at the
  cost of computing e.g. view 2's blur for all samples although only 10% keep it. Ops whose probability
  is 0 are skipped.
- The flip happens inside the crop; it commutes with all the ops in between.
- Blur sigma ~ U(0.1, 2.0) is in pixels of a 224 image (PIL's radius), scaled by crop_size / 224; the kernel
  is odd and about 10% of the crop (23 at 224, as BYOL).

With `compile=True` (the trainer passes `train.compile`) the pointwise chains run as torch.compile'd functions:
each jitter op, the grayscale select, and solarize + normalize become one fused kernel each instead of up to
~25 (the hue rotation), which on a GPU is where the augmentation's time goes (every op over a batch of 224 px
views reads and writes the whole batch). The random draws and the crop are not compiled: the same seed gives
the same views, to float rounding.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from mocov3_core.config import AugmentConfig
from mocov3_core.data import _ops

Stats = tuple[float, float, float]
RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's default aspect range
CPU_CHUNK = 8  # crops augmented together on the CPU (cache-sized; see TwoViewAugment.apply)
EVAL_CROP_FRACTION = 0.875  # resize to crop/0.875 (256 for 224), then centre-crop: the standard eval transform


@dataclass
class ViewParams:
    """Every random choice for one view of a batch of N images (tensors of length N on one device)."""

    view: int  # 0 or 1: which view's probabilities drew these
    boxes: torch.Tensor  # float [N, 4]: crop (top, left, h, w) as fractions of the image height/width
    flip: torch.Tensor  # bool [N]
    jitter: torch.Tensor  # bool [N]
    jitter_factors: torch.Tensor  # float [N, 4]: brightness, contrast, saturation factors; hue shift in turns
    jitter_order: tuple[int, ...]  # permutation of (0, 1, 2, 3), one for the whole batch
    gray: torch.Tensor  # bool [N]
    blur: torch.Tensor  # bool [N]
    sigma: torch.Tensor  # float [N]: blur sigma in pixels of the output crop
    solarize: torch.Tensor  # bool [N]

    def slice(self, part: slice) -> ViewParams:
        """The params of samples `part`."""
        return ViewParams(**{f.name: getattr(self, f.name)[part] if isinstance(getattr(self, f.name), torch.Tensor)
                             else getattr(self, f.name) for f in fields(self)})

    def to(self, device: torch.device | str) -> ViewParams:
        """Move to `device`; CPU -> GPU copies go through pinned memory so they never wait on the GPU."""
        device = torch.device(device)
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in moved.items():
            if isinstance(value, torch.Tensor) and value.device != device:
                pin = value.device.type == "cpu" and device.type == "cuda"
                moved[key] = (value.pin_memory() if pin else value).to(device, non_blocking=pin)
        return ViewParams(**moved)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; float input is taken to be in [0, 1] already."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def normalize(images: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """uint8 or [0, 1] float [N, 1|3, H, W] -> normalised float32 [N, 3, H, W] (gray replicated)."""
    x = to_unit_float(images)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    m, s = _stats_tensors((mean[0], mean[1], mean[2]), (std[0], std[1], std[2]), x.device, x.dtype)  # hashable
    return (x - m) / s


@lru_cache(maxsize=16)
def _stats_tensors(mean: Stats, std: Stats, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    # Made once per device: a fresh host->GPU copy every step would make the CPU wait for the GPU.
    return tuple(torch.tensor(v, dtype=dtype).view(1, 3, 1, 1).to(device) for v in (mean, std))


def _op_order(generator: torch.Generator) -> tuple[int, ...]:
    """A random permutation of the 4 jitter ops, known on the host without waiting for the GPU.

    A CPU generator draws it directly. A CUDA generator's state (seed, offset) lives on the host and its
    offset moves with every draw, so a permutation seeded from it is reproducible and differs per batch;
    reading a permutation drawn on the GPU instead would stall the CPU until the GPU caught up.
    """
    if generator.device.type == "cpu":
        return tuple(int(i) for i in torch.randperm(4, generator=generator).tolist())
    state = generator.get_state()  # a small CPU byte tensor
    order = [0, 1, 2, 3]
    random.Random(state.numpy().tobytes()).shuffle(order)
    return tuple(order)


def _fractions(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel boxes (top, left, h, w) -> fractions of the image height/width."""
    return torch.stack([boxes[:, 0] / height, boxes[:, 1] / width, boxes[:, 2] / height, boxes[:, 3] / width], 1)


def _mask(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(mask.shape[0], 1, 1, 1)


def _jitter_step(x: torch.Tensor, mask: torch.Tensor, factors: torch.Tensor, order: tuple[int, ...],
                 ops: tuple[Callable[..., torch.Tensor], ...]) -> torch.Tensor:
    """ColorJitter on the samples of `mask`: the four ops (`ops`, plain or compiled) in the batch's order."""
    y = x
    for op in order:
        y = ops[op](y, factors[:, op])
    return torch.where(_mask(mask), y, x)


def _gray_step(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(_mask(mask), _ops.grayscale(x).expand(-1, 3, -1, -1), x)


def _solarize_step(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(_mask(mask), _ops.solarize(x), x)


def _finish(x: torch.Tensor, solarize: torch.Tensor | None, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Solarize the samples of `solarize` (None: the view never does), then normalise."""
    if solarize is not None:
        x = _solarize_step(x, solarize)
    return (x - mean) / std


class _Kernels:
    """The pointwise chains of `TwoViewAugment.apply`: the functions themselves, or torch.compile'd (fullgraph,
    static shapes: the batch and crop size are fixed in a run, so each compiles once)."""

    def __init__(self, compile: bool, backend: str | None = None) -> None:
        def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
            if not compile:
                return fn
            extra: dict[str, Any] = {"backend": backend} if backend else {}
            return torch.compile(fn, dynamic=False, fullgraph=True, **extra)

        self.compiled = compile
        self.jitter_ops = tuple(wrap(op) for op in _ops.JITTER_OPS)
        self.gray = wrap(_gray_step)
        self.finish = wrap(_finish)


class TwoViewAugment:
    """The paper's two views. `__call__(images, generator) -> (x1, x2)`, both normalised float [N, 3, S, S]."""

    def __init__(self, cfg: AugmentConfig, crop_size: int, mean: Stats, std: Stats, compile: bool = False,
                 compile_backend: str | None = None) -> None:
        """compile: fuse the pointwise chains with torch.compile (`compile_backend`: None = inductor)."""
        self.cfg = cfg
        self.crop_size = crop_size
        self.mean = mean
        self.std = std
        self.kernel_size = _ops.blur_kernel_size(crop_size)
        self.sigma_scale = crop_size / 224.0  # sigma is specified in pixels of a 224 crop
        self.kernels = _Kernels(compile, compile_backend)

    def sample(
        self,
        n: int,
        view: int,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> ViewParams:
        """Draw view `view`'s random choices for n images of `image_size` (H, W; default the crop size).

        Draws happen on the generator's device in a fixed order, then move to `device`, so a CPU generator
        with a given seed yields the same params whatever the target device.
        """
        assert view in (0, 1), f"view must be 0 or 1, got {view}"
        cfg, g = self.cfg, generator
        height, width = image_size or (self.crop_size, self.crop_size)

        def draw(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g, device=g.device)

        boxes = _fractions(_ops.sample_boxes(n, height, width, (cfg.crop_min, 1.0), RATIO, g), height, width)
        flip = draw(n) < cfg.flip_p
        jitter = draw(n) < cfg.jitter_p
        # torchvision's ColorJitter ranges: factors U[max(0, 1 - s), 1 + s], hue shift U[-h, h].
        b, c, s, h = cfg.jitter
        ranges = [(max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-h, h)]
        u = draw(n, 4)
        factors = torch.stack([lo + (hi - lo) * u[:, i] for i, (lo, hi) in enumerate(ranges)], dim=1)
        order = _op_order(g)
        gray = draw(n) < cfg.grayscale_p
        blur = draw(n) < cfg.blur_p[view]
        lo, hi = cfg.blur_sigma
        sigma = (lo + (hi - lo) * draw(n)) * self.sigma_scale
        sol = draw(n) < cfg.solarize_p[view]
        params = ViewParams(view, boxes, flip, jitter, factors, order, gray, blur, sigma, sol)
        return params if device is None or torch.device(device) == g.device else params.to(device)

    def apply(self, images: torch.Tensor, params: ViewParams, crop: bool = True) -> torch.Tensor:
        """Augment uint8 or [0, 1] float images [N, 1|3, H, W] -> normalised float32 [N, 3, S, S].

        crop=False: the images are crops made already (image folders crop and flip on the CPU), so only
        the colour, blur and solarize ops run.
        """
        cfg, n = self.cfg, images.shape[0]
        assert images.dim() == 4 and images.shape[1] in (1, 3), f"images must be [N, 1|3, H, W], got {images.shape}"
        assert params.flip.shape[0] == n, f"params drawn for {params.flip.shape[0]} images, got {n}"
        k = self.kernels
        if images.device.type == "cpu" and not k.compiled and n > CPU_CHUNK and not crop:
            # On the CPU the dozen passes of the colour ops over a batch of 224 px crops stream it through
            # memory each time; a few crops at a time stay in cache (2x faster, more on a busy machine). Every
            # op is per sample, so the result is the same.
            out = torch.empty(n, 3, self.crop_size, self.crop_size)
            for start in range(0, n, CPU_CHUNK):
                part = slice(start, start + CPU_CHUNK)
                out[part] = self.apply(images[part], params.slice(part), crop=False)
            return out
        x = to_unit_float(images)
        if crop:
            x = _ops.crop_resize(x, params.boxes, self.crop_size, params.flip)  # [N, C, S, S]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
            if k.compiled:  # one memory layout into the compiled ops, so they do not compile again for it
                x = x.contiguous()
        if x.device.type != "cpu" or k.compiled:  # every sample through each op, a select keeps the masked ones
            if cfg.jitter_p > 0:
                x = _jitter_step(x, params.jitter, params.jitter_factors, params.jitter_order, k.jitter_ops)
            if cfg.grayscale_p > 0:
                x = k.gray(x, params.gray)
            if cfg.blur_p[params.view] > 0:
                x = torch.where(_mask(params.blur), _ops.gaussian_blur(x, params.sigma, self.kernel_size), x)
            mean, std = self.mean, self.std
            m, s = _stats_tensors((mean[0], mean[1], mean[2]), (std[0], std[1], std[2]), x.device, x.dtype)
            return k.finish(x, params.solarize if cfg.solarize_p[params.view] > 0 else None, m, s)
        owned = x.data_ptr() != images.data_ptr() and x.is_contiguous()  # ours to write into

        def masked(mask: torch.Tensor, op: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                   x: torch.Tensor) -> torch.Tensor:
            """op(x, sel) where mask is true, x elsewhere. On the CPU, where a sync costs nothing, only the masked
            samples are computed (sel: their indices, to pick their parameters; None = all)."""
            nonlocal owned
            sel = mask.nonzero().squeeze(1)
            if sel.numel() == n:
                out = op(x, None)
                owned = out.is_contiguous()  # grayscale's result is an expanded view
                return out
            if sel.numel() == 0:
                return x
            if not owned:
                x, owned = x.contiguous().clone(), True
            x[sel] = op(x[sel], sel)
            return x

        def pick(values: torch.Tensor, sel: torch.Tensor | None) -> torch.Tensor:
            return values if sel is None else values[sel]

        if cfg.jitter_p > 0:
            x = masked(params.jitter, lambda y, sel: _ops.color_jitter(y, pick(params.jitter_factors, sel),
                                                                       params.jitter_order), x)
        if cfg.grayscale_p > 0:
            x = masked(params.gray, lambda y, _: _ops.grayscale(y).expand(-1, 3, -1, -1), x)
        if cfg.blur_p[params.view] > 0:
            x = masked(params.blur, lambda y, sel: _ops.gaussian_blur(y, pick(params.sigma, sel), self.kernel_size), x)
        if cfg.solarize_p[params.view] > 0:
            x = masked(params.solarize, lambda y, _: _ops.solarize(y), x)
        return normalize(x, self.mean, self.std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views of a batch: images [N, C, H, W] (uncropped), or [2, N, 3, S, S] crops made per view on
        the CPU (`TrainStream` over an image folder), which then skip the crop."""
        if images.dim() == 5:
            assert images.shape[0] == 2, f"pre-cropped views must be [2, N, 3, S, S], got {tuple(images.shape)}"
            n = images.shape[1]
            p1, p2 = (self.sample(n, v, generator, images.device) for v in (0, 1))
            return self.apply(images[0], p1, crop=False), self.apply(images[1], p2, crop=False)
        n, size = images.shape[0], (images.shape[2], images.shape[3])
        x = to_unit_float(images)  # converted once for both views
        p1, p2 = (self.sample(n, v, generator, images.device, size) for v in (0, 1))
        return self.apply(x, p1), self.apply(x, p2)


# ------------------------------------------------------------------------------- evaluation helpers
def crop_flip(
    images: torch.Tensor,
    crop_size: int,
    crop_min: float,
    generator: torch.Generator,
    mean: Stats,
    std: Stats,
    flip_p: float = 0.5,
) -> torch.Tensor:
    """RandomResizedCrop + horizontal flip + normalise on a batch: the linear-probe / fine-tune train transform."""
    n, _, height, width = images.shape
    g = generator
    boxes = _fractions(_ops.sample_boxes(n, height, width, (crop_min, 1.0), RATIO, g), height, width)
    flip = torch.rand(n, generator=g, device=g.device) < flip_p
    boxes, flip = boxes.to(images.device), flip.to(images.device)  # small; pass a generator on the images' device
    x = _ops.crop_resize(to_unit_float(images), boxes, crop_size, flip)
    return normalize(x, mean, std)


def eval_transform(images: torch.Tensor, crop_size: int, mean: Stats, std: Stats) -> torch.Tensor:
    """Resize + centre crop + normalise a batch [N, C, H, W] -> float [N, 3, S, S].

    Images larger than the crop: shorter side to crop_size / 0.875, then the central crop_size square.
    Images of the crop size or smaller (28x28 Fashion-MNIST, 32x32 CIFAR): resized to crop_size directly.
    """
    return normalize(resize_center_crop(images, crop_size), mean, std)


def resize_center_crop(images: torch.Tensor, crop_size: int) -> torch.Tensor:
    """The geometric part of `eval_transform` on [..., C, H, W], keeping the dtype (uint8 for workers)."""
    height, width = images.shape[-2:]
    if min(height, width) <= crop_size:
        if (height, width) == (crop_size, crop_size):
            return images
        out: torch.Tensor = TF.resize(images, [crop_size, crop_size], antialias=True)
        return out
    resized = TF.resize(images, int(crop_size / EVAL_CROP_FRACTION), antialias=True)
    out = TF.center_crop(resized, [crop_size, crop_size])
    return out


def random_resized_crop(
    image: torch.Tensor, crop_size: int, crop_min: float, flip_p: float, generator: torch.Generator
) -> torch.Tensor:
    """One image uint8 [C, H, W] -> RandomResizedCrop + flip uint8 [3, S, S], antialiased (CPU workers)."""
    height, width = image.shape[-2:]
    box = _ops.sample_boxes(1, height, width, (crop_min, 1.0), RATIO, generator)[0]
    top, left, h, w = (int(v) for v in box.tolist())
    out: torch.Tensor = TF.resized_crop(image, top, left, h, w, [crop_size, crop_size], antialias=True)
    if float(torch.rand(1, generator=generator)) < flip_p:
        out = out.flip(-1)
    return out.expand(3, -1, -1) if out.shape[0] == 1 else out


def blur_kernel_size(crop_size: int) -> int:
    """The blur kernel used at this crop size."""
    return _ops.blur_kernel_size(crop_size)


def crop_area_aspect(boxes: torch.Tensor, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Area fraction and pixel aspect ratio (w / h) of boxes drawn for images of (H, W)."""
    height, width = image_size
    area = boxes[:, 2] * boxes[:, 3]
    aspect = (boxes[:, 3] * width) / (boxes[:, 2] * height)
    return area, aspect
