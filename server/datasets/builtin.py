"""The built-in Fashion-MNIST: what every team finds registered without a scan (Debian's package), and its
sample grid, drawn here from the IDX files with numpy and Pillow on the first request for it.

The facts are the engine's (mocov3_core/data/readers.py: FASHION_MNIST_CLASSES, DATASET_STATS), copied
because the server runs without torch; tests/server/test_datasets.py holds the two together.
"""

from __future__ import annotations

import base64
import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np

NAME = "fashion-mnist"
KIND = "fashion_mnist"
ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN = [0.2860, 0.2860, 0.2860]
STD = [0.3530, 0.3530, 0.3530]
SPLITS = {"train": {"images": 60_000}, "val": {"images": 10_000}}
SAMPLES = 32  # cells of the grid, as the engine's scan draws (PrepareConfig.samples)
CELL = 64  # pixels of a cell's side
COLUMNS = 8
HEAD = 2000  # the grid's images come from the first training images (gzip reads only that far)


def info() -> dict[str, Any]:
    """The DatasetInfo (contract of issue 12) of the built-in, without its sample grid."""
    return {"kind": KIND, "root": ROOT, "splits": SPLITS, "classes": CLASSES, "mean": MEAN, "std": STD,
            "stats_images": SPLITS["train"]["images"],
            "image_size": {"min": [28, 28], "median": [28, 28], "max": [28, 28]}, "sample_labels": None,
            "packed": None}


def _idx_file(root: Path, stem: str) -> Path:
    """`stem` gzipped (Debian's package), else the raw file (as the engine's reader accepts)."""
    packed = root / f"{stem}.gz"
    return packed if packed.is_file() or not (root / stem).is_file() else root / stem


def _read_head(path: Path, ndim: int, count: int) -> np.ndarray:
    """The first `count` items of an IDX file of unsigned bytes (header: 0x0000 08 <ndim>, ndim int32 sizes)."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        header = fh.read(4 + 4 * ndim)
        if len(header) < 4 + 4 * ndim or int.from_bytes(header[:4], "big") != 0x800 + ndim:
            raise ValueError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimensions")
        shape = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        count = min(count, shape[0])
        item = int(np.prod(shape[1:])) if ndim > 1 else 1
        data = fh.read(count * item)
    if len(data) != count * item:
        raise ValueError(f"{path}: truncated")
    return np.frombuffer(data, dtype=np.uint8).reshape([count, *shape[1:]])


def pick(labels: np.ndarray, n: int, classes: int) -> list[int]:
    """Indices of `n` images spread over the classes (the first of each class, in label order)."""
    per = [n // classes + (1 if c < n % classes else 0) for c in range(classes)]
    chosen: list[int] = []
    for c in range(classes):
        chosen += [int(i) for i in np.flatnonzero(labels == c)[: per[c]]]
    return chosen


def sample_grid(root: str | Path = ROOT, n: int = SAMPLES) -> tuple[str, list[int]]:
    """-> (the grid as a base64 JPEG, the label of each cell, row-major): `n` training images, label order."""
    from PIL import Image

    root = Path(root)
    labels = _read_head(_idx_file(root, "train-labels-idx1-ubyte"), 1, HEAD)
    images = _read_head(_idx_file(root, "train-images-idx3-ubyte"), 3, len(labels))
    chosen = pick(labels, n, len(CLASSES))
    rows = -(-len(chosen) // COLUMNS)
    grid = Image.new("L", (COLUMNS * CELL, rows * CELL))
    for cell, index in enumerate(chosen):
        tile = Image.fromarray(images[index]).resize((CELL, CELL), Image.Resampling.BILINEAR)
        grid.paste(tile, ((cell % COLUMNS) * CELL, (cell // COLUMNS) * CELL))
    out = io.BytesIO()
    grid.save(out, format="JPEG", quality=85)
    return base64.b64encode(out.getvalue()).decode("ascii"), [int(labels[i]) for i in chosen]
