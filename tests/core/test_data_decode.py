"""The file-backed crop path: boxes follow torchvision's RandomResizedCrop, and the DCT-reduced decode crops the
same region as a full decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from mocov3_core.data.decode import crop_views, decode_reduced, reduction_for
from mocov3_core.data.loader import view_boxes


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


@pytest.mark.parametrize(("height", "width"), [(224, 224), (375, 500), (640, 300)])
def test_boxes_follow_torchvision_random_resized_crop(height: int, width: int) -> None:
    n = 1500  # images x 2 views = 3000 boxes
    ours = np.array([box for i in range(n) for box in view_boxes(7, 3, i, 2, height, width, 0.08, 0.5)[0]])
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    theirs = np.array([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(2 * n)],
                      dtype=np.float64)  # (top, left, h, w) like ours
    assert ours.min() >= 0 and (ours[:, 0] + ours[:, 2]).max() <= height and (ours[:, 1] + ours[:, 3]).max() <= width
    for stat in (lambda b: b[:, 2] * b[:, 3] / (height * width), lambda b: b[:, 3] / b[:, 2],
                 lambda b: (b[:, 0] + b[:, 2] / 2) / height, lambda b: (b[:, 1] + b[:, 3] / 2) / width):
        a, b = stat(ours), stat(theirs)
        # critical value of the KS test at p = 0.001 for 3000 vs 3000 samples: 1.95 * sqrt(2 / 3000) = 0.050
        assert ks_statistic(a, b) < 0.05
        assert abs(a.mean() - b.mean()) < 0.03 * max(b.mean(), 0.1)
    # a different seed, step or view gives a different box
    assert view_boxes(7, 3, 0, 2, height, width, 0.08, 0.5)[0][0] != view_boxes(8, 3, 0, 2, height, width, 0.08,
                                                                                   0.5)[0][0]


def waves(height: int, width: int, period: float = 40.0) -> np.ndarray:
    """Red varies with x, green with y: a crop's pixels say where in the image it was taken (a one-pixel shift
    of the region moves them by about 10 levels)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 127.5 + 120 * np.sin(2 * np.pi * x / period)
    green = 127.5 + 120 * np.sin(2 * np.pi * y / period)
    return np.stack([red, green, np.full_like(x, 90)], -1).astype(np.uint8)


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=98, subsampling=0)
    return buf.getvalue()


def full_decode_crops(data: bytes, boxes: list[tuple[float, float, float, float]], flips: list[bool], size: int
                      ) -> np.ndarray:
    """The reference: decode at full size, crop each box, resize, flip."""
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    out = []
    for (top, left, h, w), flip in zip(boxes, flips, strict=True):
        view = rgb.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        out.append(np.asarray(view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else view).transpose(2, 0, 1))
    return np.stack(out)


def test_reduced_decode_crops_the_same_region() -> None:
    height, width = 600, 808
    data = jpeg(waves(height, width))
    reductions = []
    for index, size in enumerate([32] * 16 + [96] * 16):
        boxes, flips = view_boxes(1, 0, index, 2, height, width, 0.08, 0.5)
        r = reduction_for(boxes, size)
        reductions.append(r)
        ours = crop_views(Image.open(io.BytesIO(data)), boxes, flips, size).astype(np.float64)
        reference = full_decode_crops(data, boxes, flips, size).astype(np.float64)
        assert ours.shape == reference.shape == (2, 3, size, size)
        assert np.abs(ours - reference).mean() < 4.0, (index, r, boxes)
        # the same boxes one reduced pixel off (down, else up), where they can move: a misplaced region shows
        shifted = [(t + r if t + h + r <= height else t - r, left, h, w) for t, left, h, w in boxes]
        if r > 1 and all(0 <= t <= height - h for t, _, h, _ in shifted):
            assert np.abs(full_decode_crops(data, shifted, flips, size) - reference).mean() > 2 * np.abs(
                ours - reference).mean()
    assert {2, 4, 8} <= set(reductions)  # the test covered each reduction


def test_reduction_rules() -> None:
    assert reduction_for([(0, 0, 500, 480), (0, 0, 300, 900)], 32) == 8
    assert reduction_for([(0, 0, 500, 480), (0, 0, 100, 900)], 32) == 2  # every box keeps >= 32 px per side
    assert reduction_for([(0, 0, 20, 20)], 32) == 1  # an enlargement: full resolution
    png = io.BytesIO()
    Image.fromarray(waves(64, 64)).save(png, "PNG")
    image, r = decode_reduced(Image.open(png), 4)
    assert r == 1 and image.size == (64, 64)  # PNG: no DCT scaling, decoded as is
    image, r = decode_reduced(Image.open(io.BytesIO(jpeg(waves(64, 100)))), 4)
    assert r == 4 and image.size == (25, 16)
