"""Dataset readers: IDX (MNIST, Fashion-MNIST), CIFAR python pickles, npz arrays, image folders and packed sets.

Small datasets come back as an `ArraySet` (all images in one uint8 NHWC tensor, moved to the training
device once by `loader.TrainStream`); an image folder comes back as an `ImageFolderSet` and a packed folder
(written by `prepare.run_prepare`) as a `PackedSet`: both decode on demand, in DataLoader workers or on the
training GPU. `load_dataset` maps a `DataConfig` to the right reader, its default location and its
normalisation statistics.
"""

from __future__ import annotations

import copy
import gzip
import io
import mmap
import os
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from mocov3_core.config import DataConfig
from mocov3_core.data import packed
from mocov3_core.data.paths import OUTSIDE_ROOT, ensure_inside
from mocov3_core.data.paths import inside as _inside

Stats = tuple[float, float, float]

IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)
# Per-channel statistics of the training splits (pixel values scaled to [0, 1]).
DATASET_STATS: dict[str, tuple[Stats, Stats]] = {
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "mnist": ((0.1307, 0.1307, 0.1307), (0.3081, 0.3081, 0.3081)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEFAULT_ROOTS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
_ZERO: Stats = (0.0, 0.0, 0.0)
_ONE: Stats = (1.0, 1.0, 1.0)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")  # what torchvision.io.decode_image reads
JPEG_EXTENSIONS = (".jpg", ".jpeg")


@dataclass
class ArraySet:
    """A whole dataset held in memory."""

    images: torch.Tensor  # uint8 [N, H, W, C], C in {1, 3}
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    mean: Stats  # 3-tuples even for grayscale: the augmentation replicates gray to 3 channels
    std: Stats

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4 and self.images.shape[3] in (1, 3), (
            f"images must be uint8 [N, H, W, 1|3], got {self.images.dtype} {tuple(self.images.shape)}"
        )
        assert self.labels.shape == (self.images.shape[0],), (
            f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: torch.Tensor) -> ArraySet:
        return replace(self, images=self.images[indices], labels=self.labels[indices])


def _scan_class(top: str, top_real: str, bound: str, skipped: dict[str, str]) -> list[str]:
    """The image files below `top` (whose resolved path is `top_real`), folders in sorted path order and files
    sorted within each, as `sorted(os.walk(top, followlinks=True))` lists them, but keeping only what lies inside
    `bound`: a symlinked file or folder is resolved (one realpath each; plain entries cost nothing, their real
    path is their folder's plus their name) and, when it leads outside, named in `skipped` and never opened or
    listed. A folder link back into what was walked already (a loop) is not walked again."""
    found: list[tuple[str, list[str]]] = []
    stack = [(top, top_real)]
    seen = {top_real}
    while stack:
        folder, real = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unlistable: os.walk skips it too
            continue
        files: list[str] = []
        for entry in entries:
            try:
                link, is_dir = entry.is_symlink(), entry.is_dir()
            except OSError:  # as os.walk: an entry that cannot be told a folder is a file
                link, is_dir = False, False
            if is_dir:
                target = os.path.realpath(entry.path) if link else os.path.join(real, entry.name)
                if not _inside(target, bound):
                    skipped[os.path.join(entry.path, "")] = OUTSIDE_ROOT
                elif target not in seen:
                    seen.add(target)
                    stack.append((entry.path, target))
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                if link and not _inside(os.path.realpath(entry.path), bound):
                    skipped[entry.path] = OUTSIDE_ROOT
                else:
                    files.append(entry.name)
        found.append((folder, sorted(files)))
    return [os.path.join(folder, file) for folder, files in sorted(found) for file in files]


class ImageFolderSet:
    """`root/<class>/**/<image>` with classes in sorted order, as torchvision's ImageFolder lays them out.

    Only files whose resolved path lies inside `within` (the dataset's folder; default `root`) are listed:
    symlinks that stay inside are followed (ImageNet trees link images within themselves), those leading out
    are left out and named in `skipped` ({path: reason}), a class folder linked out keeps its name (labels stay
    those of the layout) but no images. A `root` that itself resolves outside `within` is refused."""

    def __init__(self, root: str | Path, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD,
                 within: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        ensure_inside(self.root, within or self.root)
        bound = os.path.realpath(within or self.root)
        root_real = os.path.realpath(self.root)
        class_dirs = sorted((e.name, e.is_symlink()) for e in os.scandir(self.root) if e.is_dir())
        self.classes = [name for name, _ in class_dirs]
        if not self.classes:
            raise FileNotFoundError(f"image folder {self.root} has no class sub-folders")
        self.skipped: dict[str, str] = {}
        paths: list[str] = []
        targets: list[int] = []
        for label, (name, link) in enumerate(class_dirs):
            top = os.path.join(self.root, name)
            top_real = os.path.realpath(top) if link else os.path.join(root_real, name)
            if not _inside(top_real, bound):
                self.skipped[os.path.join(top, "")] = OUTSIDE_ROOT
                continue
            found = _scan_class(top, top_real, bound, self.skipped)
            paths.extend(found)
            targets.extend([label] * len(found))
        if not paths:
            raise FileNotFoundError(f"image folder {self.root} has no images ({', '.join(IMAGE_EXTENSIONS)})"
                                    + (f"; {len(self.skipped)} entries lead outside it" if self.skipped else ""))
        self.paths = paths
        self.labels = torch.tensor(targets, dtype=torch.int64)
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def is_jpeg(self) -> bool:
        """Every file is named .jpg/.jpeg: the batched JPEG decoder on the GPU can take them all."""
        return all(p.lower().endswith(JPEG_EXTENSIONS) for p in self.paths)

    def load(self, i: int) -> torch.Tensor:
        """Decode image i as uint8 [3, H, W] (grayscale, palette and CMYK files are converted to RGB)."""
        with warnings.catch_warnings():  # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec
            warnings.simplefilter("ignore", DeprecationWarning)
            image: torch.Tensor = decode_image(self.paths[i], mode=ImageReadMode.RGB)
        return image

    def open_pil(self, i: int) -> Image.Image:
        """Image i opened lazily: its size is read from the header, pixels are decoded on first use."""
        return Image.open(self.paths[i])

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) of image i from its header alone."""
        with Image.open(self.paths[i]) as im:
            return im.height, im.width

    def file_bytes(self, i: int) -> torch.Tensor:
        """The encoded file i as uint8 [n] (what torchvision's batched JPEG decoder takes)."""
        with open(self.paths[i], "rb") as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)

    def name(self, i: int) -> str:
        return self.paths[i]

    def subset(self, indices: torch.Tensor) -> ImageFolderSet:
        out = copy.copy(self)
        out.paths = [self.paths[i] for i in indices.tolist()]
        out.labels = self.labels[indices]
        return out


class PackedSet:
    """One split of a packed folder (`prepare.run_prepare`): JPEGs back to back in shard files, mmap'd on first
    use in each process, with their offsets, lengths, labels and sizes in the split's index (checked on load:
    `packed.read_index`). Classes and mean/std come from meta.json unless given."""

    def __init__(self, root: str | Path, split: str = "train", mean: Stats | None = None,
                 std: Stats | None = None) -> None:
        self.root = Path(root)
        meta = packed.read_meta(self.root)
        if split not in meta["splits"]:
            raise FileNotFoundError(f"packed set {self.root} has no {split} split (it has "
                                    f"{', '.join(meta['splits'])})")
        counts = meta["splits"][split]
        index = packed.read_index(self.root / split, counts["images"], counts["shards"], len(meta["classes"]))
        self.split = split
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.offsets, self.lengths = index["offsets"], index["lengths"]
        self.heights, self.widths, self.shards = index["heights"], index["widths"], index["shard"]
        self.labels = torch.from_numpy(index["labels"].copy())
        self.mean: Stats = mean or meta["mean"] or IMAGENET_MEAN
        self.std: Stats = std or meta["std"] or IMAGENET_STD
        self._maps: dict[int, mmap.mmap] = {}

    is_jpeg = True

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # each process maps the shards itself
        return state

    def _shard(self, shard: int) -> mmap.mmap:
        mapped = self._maps.get(shard)
        if mapped is None:
            with open(self.root / self.split / packed.shard_name(shard), "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[shard] = mapped
        return mapped

    def jpeg_bytes(self, i: int) -> memoryview:
        """The JPEG of image i, a view into its mmap'd shard (no copy)."""
        start = int(self.offsets[i])
        return memoryview(self._shard(int(self.shards[i])))[start : start + int(self.lengths[i])]

    def file_bytes(self, i: int) -> torch.Tensor:
        return torch.frombuffer(bytearray(self.jpeg_bytes(i)), dtype=torch.uint8)

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) of image i from the index."""
        return int(self.heights[i]), int(self.widths[i])

    def open_pil(self, i: int) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg_bytes(i)))

    def load(self, i: int) -> torch.Tensor:
        """Decode image i as uint8 [3, H, W]."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            image: torch.Tensor = decode_jpeg(self.file_bytes(i), mode=ImageReadMode.RGB)
        return image

    def name(self, i: int) -> str:
        return f"{self.root / self.split}[{i}]"

    def subset(self, indices: torch.Tensor) -> PackedSet:
        out = copy.copy(self)
        keep = indices.numpy()
        out.offsets, out.lengths = self.offsets[keep], self.lengths[keep]
        out.heights, out.widths, out.shards = self.heights[keep], self.widths[keep], self.shards[keep]
        out.labels = self.labels[indices]
        out._maps = {}
        return out


FileSet = ImageFolderSet | PackedSet  # decoded on demand, one file per image
AnySet = ArraySet | ImageFolderSet | PackedSet


# --------------------------------------------------------------------------------------------- IDX
def _read_bytes(path: Path) -> bytes:
    """Whole file, gunzipped when it starts with the gzip magic (whatever its name)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _read_idx_array(path: Path, ndim: int) -> torch.Tensor:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, then ndim big-endian int32 sizes, then the data."""
    data = _read_bytes(path)
    expected = 0x800 + ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    if magic != expected:
        raise ValueError(
            f"{path}: bad magic number {magic:#010x}, expected {expected:#010x} (IDX unsigned bytes, {ndim} dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise ValueError(
            f"{path}: header says {'x'.join(map(str, shape))} = {count} bytes of data, file holds {len(data) - header}"
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def read_idx(
    images_path: str | Path,
    labels_path: str | Path,
    classes: Sequence[str] | None = None,
    mean: Stats | None = None,
    std: Stats | None = None,
) -> ArraySet:
    """MNIST-style IDX pair (gzip or raw). Missing classes default to "0".."K-1", missing stats to the data's."""
    images = _read_idx_array(Path(images_path), 3)
    labels = _read_idx_array(Path(labels_path), 1).to(torch.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    return _array_set(images.unsqueeze(-1), labels, classes, mean, std)


def _array_set(
    images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str] | None, mean: Stats | None, std: Stats | None
) -> ArraySet:
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    if mean is None or std is None:
        data_mean, data_std = pixel_stats(images)
        mean, std = mean or data_mean, std or data_std
    return ArraySet(images.contiguous(), labels, list(classes), mean, std)


def pixel_stats(images: torch.Tensor, max_images: int = 10_000) -> tuple[Stats, Stats]:
    """Per-channel mean and std in [0, 1] units of uint8 NHWC images (first `max_images`), replicated to 3."""
    x = images[:max_images].to(torch.float64).div_(255.0).flatten(0, 2)  # [pixels, C]
    mean, std = x.mean(0).tolist(), x.std(0).tolist()
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return (mean[0], mean[1], mean[2]), (std[0], std[1], std[2])


# ------------------------------------------------------------------------------------------- CIFAR
def read_cifar(root: str | Path, train: bool, variant: str = "cifar10") -> ArraySet:
    """The python-pickle release: root is `cifar-10-batches-py` / `cifar-100-python` or the folder holding it.
    Its files must lie inside `root` once resolved (`ensure_inside`)."""
    if variant not in ("cifar10", "cifar100"):
        raise ValueError(f"variant must be cifar10 or cifar100, got {variant!r}")
    root = within = Path(root)
    sub = "cifar-10-batches-py" if variant == "cifar10" else "cifar-100-python"
    if (root / sub).is_dir():
        root = root / sub
    if variant == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        meta, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        files = ["train" if train else "test"]
        meta, label_key, names_key = "meta", "fine_labels", "fine_label_names"
    parts: list[np.ndarray] = []
    labels: list[int] = []
    for name in (*files, meta):
        if (root / name).exists():
            ensure_inside(root / name, within)
    for name in files:
        batch = _unpickle(root / name)
        parts.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    images = torch.from_numpy(np.concatenate(parts)).permute(0, 2, 3, 1)  # [N, 3, 32, 32] rows -> NHWC
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(root / meta)[names_key]]
    mean, std = DATASET_STATS[variant]
    return ArraySet(images.contiguous(), torch.tensor(labels, dtype=torch.int64), classes, mean, std)


# What a CIFAR batch's pickle may import: numpy's array reconstruction and nothing else (its dicts, lists,
# bytes and ints need no import). numpy 2 writes numpy._core, numpy 1 numpy.core; protocol 5 uses _frombuffer.
CIFAR_PICKLE_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that would import something a CIFAR batch never holds (a crafted file): refused unrun."""


class _CifarUnpickler(pickle.Unpickler):
    """pickle.load that runs no code from the file: find_class answers only CIFAR_PICKLE_GLOBALS."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise UnsafePickleError(f"{self.path}: refused, it would import {module}.{name}; a CIFAR batch holds "
                                    "only numpy arrays, lists and bytes")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 warns on its numpy.core alias
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected the CIFAR python release)")
    with open(path, "rb") as f:
        try:
            raw = _CifarUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"{path}: not a CIFAR python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a CIFAR python batch (holds a {type(raw).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


# --------------------------------------------------------------------------------------------- npz
def read_npz(path: str | Path, mean: Stats | None = None, std: Stats | None = None) -> ArraySet:
    """Arrays `images`/`labels` (or `x`/`y`), images uint8 NHW or NHWC; an optional `classes` array of names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        keys = ("images", "labels") if "images" in z else ("x", "y")
        if keys[0] not in z or keys[1] not in z:
            raise ValueError(f"{path}: needs arrays images/labels or x/y, found {', '.join(z.files)}")
        images, labels = z[keys[0]], z[keys[1]]
        classes = [str(c) for c in z["classes"]] if "classes" in z else None
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: {keys[0]} must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"{path}: {keys[0]} must be NHW or NHWC with C in (1, 3), got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{path}: {images.shape[0]} images but {keys[1]} has shape {labels.shape}")
    return _array_set(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), classes, mean, std)


# ---------------------------------------------------------------------------------------- dispatch
def _idx_files(root: Path, train: bool) -> tuple[Path, Path]:
    split = "train" if train else "t10k"
    out = []
    for kind in ("images-idx3", "labels-idx1"):
        path = root / f"{split}-{kind}-ubyte.gz"
        out.append(path if path.is_file() or not (root / path.stem).is_file() else root / path.stem)
    return out[0], out[1]


def _require(path: Path, dataset: str) -> None:
    if not path.exists():
        hint = (
            "; install it with: apt-get install dataset-fashion-mnist"
            if dataset == "fashion_mnist"
            else "; set data.root to the dataset's folder"
        )
        raise FileNotFoundError(f"{dataset}: {path} not found{hint}")


def load_dataset(cfg: DataConfig, train: bool) -> AnySet:
    """The train or evaluation split named by `cfg`, with cfg.mean/std overriding the dataset's statistics.

    `cfg.limit` keeps a random subset (seed 0, kept in index order) of the training split only.
    """
    name = cfg.dataset
    if cfg.root is None and name not in DEFAULT_ROOTS:
        raise ValueError(f"data.root is required for dataset {name!r}")
    root = Path(cfg.root or DEFAULT_ROOTS[name]).expanduser()
    _require(root, name)
    data: AnySet
    # Generic sets normalise with the training split's statistics, also when evaluating.
    need_stats = cfg.mean is None or cfg.std is None
    if name in ("fashion_mnist", "mnist", "idx"):
        for path in _idx_files(root, train):
            _require(path, name)
            ensure_inside(path, root)
        mean, std = DATASET_STATS.get(name, (cfg.mean, cfg.std))
        if name == "idx" and not train and need_stats and _idx_files(root, True)[0].is_file():
            ensure_inside(_idx_files(root, True)[0], root)
            mean, std = pixel_stats(_read_idx_array(_idx_files(root, True)[0], 3).unsqueeze(-1))
        classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else None
        data = read_idx(*_idx_files(root, train), classes=classes, mean=mean, std=std)
    elif name in ("cifar10", "cifar100"):
        data = read_cifar(root, train, name)
    elif name == "npz":
        path = root / ("train.npz" if train else "test.npz")
        _require(path, name)
        ensure_inside(path, root)
        mean, std = cfg.mean, cfg.std
        if not train and need_stats and (root / "train.npz").is_file():
            ensure_inside(root / "train.npz", root)
            mean, std = pixel_stats(read_npz(root / "train.npz", mean=_ZERO, std=_ONE).images)
        data = read_npz(path, mean=mean, std=std)
    elif name == "packed":
        data = PackedSet(root, "train" if train else "val")
    else:  # imagefolder
        folder = root / ("train" if train else "val")
        if train and not folder.is_dir():
            folder = root  # root itself holds the class folders
        _require(folder, name)
        data = ImageFolderSet(folder, within=root)
    if cfg.mean is not None:
        data.mean = cfg.mean
    if cfg.std is not None:
        data.std = cfg.std
    if train and cfg.limit is not None and cfg.limit < len(data):
        keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: cfg.limit].sort().values
        data = data.subset(keep)
    return data
