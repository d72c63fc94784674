"""Decoding and cropping file-backed images (image folders, packed sets) for the training views.

Both paths take RandomResizedCrop boxes drawn in ORIGINAL image coordinates from the image's size alone (a
lazy PIL open reads only the header; a packed index holds the sizes), so they follow torchvision's crop
distribution whatever the decoder does next:

- CPU (`crop_views`, in DataLoader workers): decode a JPEG at the largest DCT-domain reduction (PIL's
  `draft`: 1/2, 1/4, 1/8, nearly free in the decoder) that still leaves every box at least `crop_size`
  pixels per side, scale the boxes by it, then crop + resize each view with PIL's antialiased bilinear
  filter (`resize(box=...)` resamples only the box) and flip. Other formats decode at full size.
- Device (`device_crops`, in the training process): DataLoader workers only read the encoded bytes; the
  batch is decoded by one `torchvision.io.decode_jpeg` call (nvJPEG on CUDA; a list on the CPU too), pasted
  into a canvas padded by one edge pixel, and every view cropped and resized by one `roi_align` call per
  view (`_ops.crop_resize`: box-filtered bilinear when shrinking).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from mocov3_core.data import _ops

Box = tuple[float, float, float, float]  # top, left, height, width in pixels of the original image
REDUCTIONS = (8, 4, 2, 1)  # what a JPEG decoder can scale by in the DCT domain


def reduction_for(boxes: Sequence[Box], crop_size: int) -> int:
    """Largest JPEG reduction (8, 4, 2 or 1) that leaves every box at least `crop_size` pixels per side, so each
    view is still a downscale (or the same enlargement as from the full image, when a box is smaller)."""
    side = min(min(h, w) for _, _, h, w in boxes)
    return next(r for r in REDUCTIONS if side / r >= crop_size or r == 1)


def decode_reduced(im: Image.Image, reduction: int) -> tuple[Image.Image, int]:
    """Decode `im` (opened lazily) as RGB, a JPEG at 1/`reduction` of its size where the decoder allows;
    -> (RGB image, the reduction applied). Pixel (y, x) of the result covers original pixels
    [y * r, (y + 1) * r) x [x * r, (x + 1) * r)."""
    applied = 1
    if reduction > 1 and im.format == "JPEG":
        width, height = im.size
        im.draft("RGB", (max(1, width // reduction), max(1, height // reduction)))
        # draft picks the largest power of 2 it can; the decoded size (ceil(W / r) x ceil(H / r)) names it
        applied = next((r for r in REDUCTIONS if -(-width // r) == im.size[0] and -(-height // r) == im.size[1]), 1)
    return im.convert("RGB"), applied


def crop_views(im: Image.Image, boxes: Sequence[Box], flips: Sequence[bool], crop_size: int) -> np.ndarray:
    """Views of one image as uint8 [V, S, S, 3]: each box cropped and resized (antialiased bilinear, as
    torchvision's RandomResizedCrop on PIL images), flipped where asked."""
    rgb, r = decode_reduced(im, reduction_for(boxes, crop_size))
    out = np.empty((len(boxes), crop_size, crop_size, 3), dtype=np.uint8)
    for v, ((top, left, h, w), flip) in enumerate(zip(boxes, flips, strict=True)):
        view = rgb.resize((crop_size, crop_size), Image.Resampling.BILINEAR,
                          box=(left / r, top / r, (left + w) / r, (top + h) / r))
        if flip:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[v] = np.asarray(view)
    return out


def decode_batch(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Encoded images (CPU uint8 [n] each) -> uint8 [3, H, W] each on `device`: one batched `decode_jpeg`;
    if any is not a JPEG the batch falls back to one decode per image (`decode_image` for the others)."""
    with warnings.catch_warnings():  # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            images: list[torch.Tensor] = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            return images
        except RuntimeError:
            pass
        out = []
        for encoded in data:
            try:
                image = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                image = decode_image(encoded, mode=ImageReadMode.RGB).to(device)
            out.append(image)
        return out


def _canvas_budget(device: torch.device) -> int:
    return (1 << 30) if device.type == "cuda" else (1 << 28)  # bytes of float32 canvas per chunk


def device_crops(images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Crop + resize + flip every view of decoded images on their device.

    images: B tensors uint8 [3, H_i, W_i] on one device; boxes: float [V, B, 4] (top, left, h, w) in pixels of
    each image; flips: bool [V, B]. -> float32 [V, B, 3, S, S] in [0, 1].

    Images of different sizes share one canvas (chunked to bound its memory), each padded by a copy of its
    last row and column: roi_align reads up to half an output pixel past a box, which must see the image's
    edge, not the next image's padding.
    """
    device = images[0].device
    views, n = boxes.shape[0], len(images)
    out = torch.empty(views, n, 3, crop_size, crop_size, device=device)
    budget = _canvas_budget(device)
    start = 0
    while start < n:
        end, height, width = start, 0, 0
        while end < n:
            h, w = images[end].shape[-2:]
            hh, ww = max(height, h + 1), max(width, w + 1)
            if end > start and (end - start + 1) * 3 * hh * ww * 4 > budget:
                break
            height, width, end = hh, ww, end + 1
        canvas = torch.zeros(end - start, 3, height, width, dtype=torch.uint8, device=device)
        for k, image in enumerate(images[start:end]):
            h, w = image.shape[-2:]
            canvas[k, :, :h, :w] = image
            canvas[k, :, h, :w] = image[:, h - 1]
            canvas[k, :, : h + 1, w] = canvas[k, :, : h + 1, w - 1]
        x = canvas.float().div_(255.0)
        scale = torch.tensor([height, width, height, width], dtype=torch.float32, device=device)
        for v in range(views):
            frac = boxes[v, start:end].to(device=device, dtype=torch.float32) / scale
            out[v, start:end] = _ops.crop_resize(x, frac, crop_size, flips[v, start:end].to(device))
        start = end
    return out.clamp_(0.0, 1.0)
