"""Which reader a dataset folder needs, told from the names in it (nothing is opened but folders): a
registration without `kind` uses it. Looks at a bounded number of entries, so a folder of a million images
costs no more than a small one."""

from __future__ import annotations

import os
from pathlib import Path

from mocov3_core.config import DatasetName

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")  # what the engine's image folder reads
LOOK_AT = 64  # entries looked at per folder
DEBIAN: dict[str, DatasetName] = {"/usr/share/datasets/fashion-mnist": "fashion_mnist",
                                  "/usr/share/datasets/mnist": "mnist"}


def _entries(folder: Path, limit: int = LOOK_AT) -> list[os.DirEntry[str]]:
    out: list[os.DirEntry[str]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                out.append(entry)
                if len(out) >= limit:
                    break
    except OSError:
        pass
    return out


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _has_images(folder: Path) -> bool:
    return any(e.name.lower().endswith(IMAGE_EXTENSIONS) and not _is_dir(e) for e in _entries(folder))


def _class_folders(folder: Path) -> bool:
    """Sub-folders, one of which (among the first looked at) holds images."""
    return any(_is_dir(e) and _has_images(Path(e.path)) for e in _entries(folder, LOOK_AT)[:16])


def detect(folder: Path) -> DatasetName | None:
    """The reader for `folder` (resolved), or None when the names in it say nothing known."""
    def has(name: str) -> bool:
        return (folder / name).is_file()

    if has("meta.json") and (folder / "train").is_dir():
        return "packed"
    if (folder / "cifar-10-batches-py").is_dir() or (has("data_batch_1") and has("batches.meta")):
        return "cifar10"
    if (folder / "cifar-100-python").is_dir() or (has("train") and has("test") and has("meta")):
        return "cifar100"
    if has("train.npz"):
        return "npz"
    if has("train-images-idx3-ubyte.gz") or has("train-images-idx3-ubyte"):
        known = {str(Path(path).resolve()): kind for path, kind in DEBIAN.items()}
        return known.get(str(folder), "idx")
    if ((folder / "train").is_dir() and _class_folders(folder / "train")) or _class_folders(folder):
        return "imagefolder"
    return None
