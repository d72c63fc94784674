"""Batched image operations behind the augmentations: crop boxes, colour jitter, blur, grayscale.

Every function works on a whole batch at once with per-sample parameters (no Python loop over images),
so the same code runs on the CPU and on the training GPU. Images are float [N, 3, H, W] in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

# ITU-R 601 luma, as torchvision's rgb_to_grayscale and PIL's convert("L").
_LUMA = (0.299, 0.587, 0.114)


def sample_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """RandomResizedCrop boxes [n, 4] as (top, left, h, w) in pixels, on the generator's device.

    torchvision's rule, vectorised: up to `attempts` draws of area ~ U(scale) x image area and
    log-aspect ~ U(log ratio); the first draw whose rounded box fits is kept, else the central crop
    with the aspect clamped into `ratio`. The distribution is torchvision's; the random stream is not
    (all attempts are drawn up front), so crops are not bit-identical to torchvision's.
    """
    dev = generator.device
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, generator=generator, device=dev))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(n, attempts, generator=generator, device=dev))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting attempt (0 if none)
    found = fits.any(dim=1)
    # Fallback: the whole image, trimmed to the nearest allowed aspect ratio, centred.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(found, w.gather(1, first).squeeze(1), float(fw))
    h = torch.where(found, h.gather(1, first).squeeze(1), float(fh))
    u = torch.rand(n, 2, generator=generator, device=dev)
    # Offsets uniform over the integer positions, as randint(0, H - h + 1); the clamp guards float rounding.
    top = torch.minimum(torch.floor(u[:, 0] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, 1] * (width - w + 1)), width - w)
    top = torch.where(found, top, float((height - fh) // 2))
    left = torch.where(found, left, float((width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1)


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop per-sample boxes (fractions: top, left, h, w) out of float x [N, C, H, W] and resize to size x size.

    One `roi_align` call: each output pixel averages ceil(box / size) bilinear samples per axis, so it is
    plain bilinear (align_corners=False) when enlarging and a box-filtered bilinear when shrinking (less
    aliasing than grid_sample). Samples past the image border clamp to its edge pixels; samples just past
    the box (outermost output pixels, within half an output pixel) read the image beyond the box, where
    torchvision's crop-then-resize repeats the box's edge. The flip is one select.
    """
    n, _, height, width = x.shape
    assert boxes.shape == (n, 4), f"boxes {tuple(boxes.shape)} for a batch of {n}"
    top, left = boxes[:, 0] * height, boxes[:, 1] * width
    bottom, right = top + boxes[:, 2] * height, left + boxes[:, 3] * width
    index = torch.arange(n, device=x.device, dtype=x.dtype)
    rois = torch.stack([index, left, top, right, bottom], dim=1).to(x.dtype)  # [N, 5] (batch, x1, y1, x2, y2)
    out: torch.Tensor = roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if flip is not None:
        # Flipping commutes with every later op (pointwise colour ops, symmetric blur), so it happens here.
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)
    return out


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma [N, 1, H, W] of RGB x [N, 3, H, W]."""
    return (_LUMA[0] * x[:, 0] + _LUMA[1] * x[:, 1] + _LUMA[2] * x[:, 2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1] (torchvision's _blend)."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the per-image mean luma."""
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the per-pixel luma."""
    return _blend(x, grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `shift` turns per sample (in [-0.5, 0.5]), keeping HSV value and saturation.

    RGB -> hue h6 in sixths of a turn; then HSV -> RGB with the closed form
    channel_n = max - (max - min) * clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6, n = 5, 3, 1 for R, G, B.
    Value (max) and chroma (max - min) are unchanged by a hue rotation, so only h6 is recomputed.
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    chroma = maxc - minc
    red_max = maxc == r
    green_max = (maxc == g) & ~red_max
    # Hue sector: (g - b)/chroma near red, 2 + (b - r)/chroma near green, 4 + (r - g)/chroma near blue;
    # left in (-1, 6), the remainder below wraps it. Grey pixels (chroma 0) give 0, and any hue maps them back.
    diff = torch.where(red_max, g - b, torch.where(green_max, b - r, r - g))
    sector = torch.where(red_max, 0.0, torch.where(green_max, 2.0, 4.0))
    h6 = diff / chroma.clamp_min(1e-12) + sector + 6.0 * shift.view(-1, 1, 1)
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # 5, 3, 1 (no host copy)
    k = torch.remainder(n + h6.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * ramp


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """Apply brightness, contrast, saturation, hue (factors [N, 4]) in the op order given (one per batch)."""
    for op in order:
        x = JITTER_OPS[op](x, factors[:, op])
    return x


def blur_kernel_size(size: int) -> int:
    """Odd kernel of about 10% of the image side, at least 3 (23 at 224, BYOL's choice)."""
    return max(3, round(0.1 * size) | 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (pixels), reflect padding, as two grouped convolutions."""
    n, c, height, width = x.shape
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma.to(x.dtype).view(n, 1)) ** 2)  # [N, K]
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, K]
    pad = kernel_size // 2
    # Samples become channels of a single image so each gets its own kernel (groups = N*C).
    y = F.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    y = F.conv2d(y, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    return y.view(n, c, height, width)


def solarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert pixels at or above the threshold (PIL's ImageOps.solarize at 128/255 ~ 0.5)."""
    return torch.where(x >= threshold, 1.0 - x, x)
