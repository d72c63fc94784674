"""Readers on small real files written to tmp_path (IDX, CIFAR pickles, npz, PNG folders)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mocov3_core.config import DataConfig
from mocov3_core.data import ArraySet, ImageFolderSet, load_dataset, read_cifar, read_idx, read_npz
from mocov3_core.data.paths import OUTSIDE_ROOT, OutsideRootError
from mocov3_core.data.readers import UnsafePickleError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, gz: bool, magic: int | None = None) -> Path:
    header = (magic if magic is not None else 0x800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def idx_folder(root: Path, n_train: int = 12, n_test: int = 6, gz: bool = True) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 5, 4)), gz)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 3, gz)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(1).integers(0, 256, (7, 5, 4)).astype(np.uint8)
    labels = np.array([0, 1, 2, 3, 1, 0, 3], dtype=np.uint8)
    data = read_idx(write_idx(tmp_path / "img", images, gz), write_idx(tmp_path / "lab", labels, gz))
    assert isinstance(data, ArraySet) and len(data) == 7
    assert data.images.shape == (7, 5, 4, 1) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[..., 0], torch.from_numpy(images))
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()
    assert data.classes == ["0", "1", "2", "3"]
    assert data.mean == pytest.approx((images.mean() / 255,) * 3) and len(data.std) == 3


def test_read_idx_bad_magic(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "img", np.zeros((2, 3, 3)), gz=True, magic=0x0801)
    labels = write_idx(tmp_path / "lab", np.zeros(2), gz=True)
    with pytest.raises(ValueError, match=r"bad magic number 0x00000801, expected 0x00000803"):
        read_idx(images, labels)


def test_read_idx_size_and_count_errors(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "img", np.zeros((2, 3, 3)), gz=False)
    images.write_bytes(images.read_bytes()[:-1])  # one byte short
    labels = write_idx(tmp_path / "lab", np.zeros(2), gz=False)
    with pytest.raises(ValueError, match="header says 2x3x3 = 18 bytes of data, file holds 17"):
        read_idx(images, labels)
    write_idx(images, np.zeros((2, 3, 3)), gz=False)
    write_idx(labels, np.zeros(3), gz=False)
    with pytest.raises(ValueError, match=r"holds 2 images but .* holds 3 labels"):
        read_idx(images, labels)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_idx(tmp_path / "nothere", tmp_path / "labels")


def cifar_image(i: int) -> np.ndarray:
    """[3072] row for image i: red plane i, green plane 100 + i, blue ramp, as the release lays them out."""
    planes = [np.full(1024, i), np.full(1024, 100 + i), np.arange(1024) % 256]
    return np.concatenate(planes).astype(np.uint8)


def write_cifar10(root: Path, per_batch: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        ids = range(b * per_batch, (b + 1) * per_batch)
        batch = {b"data": np.stack([cifar_image(i) for i in ids]), b"labels": [i % 10 for i in ids]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


def test_read_cifar10(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    train = read_cifar(tmp_path, train=True, variant="cifar10")
    assert train.images.shape == (10, 32, 32, 3) and train.labels.tolist() == list(range(10))
    assert set(train.images[3, :, :, 0].flatten().tolist()) == {3} and train.images[3, 0, 0, 1] == 103
    assert train.images[0, 0, :5, 2].tolist() == [0, 1, 2, 3, 4]  # row-major HW within a plane
    assert train.classes[2] == "class2" and train.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    test = read_cifar(tmp_path / "cifar-10-batches-py", train=False, variant="cifar10")
    assert len(test) == 2 and test.labels.tolist() == [0, 1]


def test_read_cifar100(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 4), ("test", 3)):
        batch = {
            b"data": np.stack([cifar_image(i) for i in range(n)]),
            b"fine_labels": [99 - i for i in range(n)],
            b"coarse_labels": [0] * n,
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)], b"coarse_label_names": [b"c"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    train = read_cifar(tmp_path, train=True, variant="cifar100")
    assert train.images.shape == (4, 32, 32, 3) and train.labels.tolist() == [99, 98, 97, 96]
    assert len(train.classes) == 100 and train.classes[99] == "f99"
    assert len(read_cifar(tmp_path, train=False, variant="cifar100")) == 3
    with pytest.raises(FileNotFoundError, match="data_batch_1 does not exist"):
        read_cifar(tmp_path, train=True, variant="cifar10")


@pytest.mark.parametrize("protocol", ["numpy1", 3, 4, 5])
def test_read_cifar10_written_with_any_pickle_protocol(tmp_path: Path, protocol: int | str) -> None:
    folder = write_cifar10(tmp_path)
    for path in folder.iterdir():  # numpy reconstructs arrays differently per protocol (_frombuffer from 5)
        raw = pickle.dumps(pickle.loads(path.read_bytes()), protocol=3 if protocol == "numpy1" else protocol)
        # numpy 1 (the release's era) names numpy.core; protocol 3 spells globals as text lines
        path.write_bytes(raw.replace(b"numpy._core.", b"numpy.core.") if protocol == "numpy1" else raw)
    train = read_cifar(tmp_path, train=True, variant="cifar10")
    assert train.images.shape == (10, 32, 32, 3) and train.images[3, 0, 0, 1] == 103


class WritesMarker:
    """Unpickling this calls open(marker, 'w'): if the marker appears, the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("name", ["data_batch_1", "batches.meta"])
def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path: Path, name: str) -> None:
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"label_names": WritesMarker(marker)}
    (folder / name).write_bytes(pickle.dumps(batch))
    with pytest.raises(UnsafePickleError, match=rf"{name}: refused, it would import io\.open"):
        read_cifar(tmp_path, train=True, variant="cifar10")
    assert not marker.exists()


def test_a_cifar_batch_that_is_not_a_pickle_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_2").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="data_batch_2: not a CIFAR python batch"):
        read_cifar(tmp_path, train=True, variant="cifar10")


def test_read_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (6, 9, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=gray, labels=np.array([0, 1, 1, 2, 2, 2]))
    a = read_npz(tmp_path / "a.npz")
    assert a.images.shape == (6, 9, 8, 1) and a.classes == ["0", "1", "2"] and a.labels.dtype == torch.int64
    color = rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "b.npz", x=color, y=np.array([1, 0, 1, 0]), classes=np.array(["cat", "dog"]))
    b = read_npz(tmp_path / "b.npz")
    assert torch.equal(b.images, torch.from_numpy(color)) and b.classes == ["cat", "dog"]
    assert b.mean == pytest.approx(tuple(color.reshape(-1, 3).mean(0) / 255))
    np.savez(tmp_path / "c.npz", x=color.astype(np.float32), y=np.zeros(4))
    with pytest.raises(ValueError, match="must be uint8"):
        read_npz(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", pixels=color)
    with pytest.raises(ValueError, match="images/labels or x/y"):
        read_npz(tmp_path / "d.npz")


def write_folder(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    """PNG class folders; every second image is grayscale (mode L) to exercise the RGB conversion."""
    rng = np.random.default_rng(3)
    for cls, shapes in sizes.items():
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            if i % 2:
                Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(root / cls / f"{i}.png")
            else:
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / cls / f"{i}.PNG")
        (root / cls / "notes.txt").write_text("not an image")
    return root


def test_image_folder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "imgs", {"zebra": [(5, 7), (6, 6)], "ant": [(8, 4), (3, 3), (4, 9)]})
    data = ImageFolderSet(root)
    assert data.classes == ["ant", "zebra"] and len(data) == 5
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    first = data.load(0)
    assert first.dtype == torch.uint8 and first.shape == (3, 8, 4)
    expected = torch.from_numpy(np.array(Image.open(data.paths[0]).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(first, expected)
    assert data.load(1).shape == (3, 3, 3)  # grayscale file -> 3 channels
    assert data.mean == (0.485, 0.456, 0.406)
    sub = data.subset(torch.tensor([1, 4]))
    assert len(sub) == 2 and sub.labels.tolist() == [0, 1] and len(data) == 5
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolderSet(root / "ant")


def test_load_dataset_idx_limit_and_overrides(tmp_path: Path) -> None:
    root = idx_folder(tmp_path / "idx", gz=False)
    train = load_dataset(DataConfig(dataset="idx", root=str(root)), train=True)
    assert isinstance(train, ArraySet) and len(train) == 12
    test = load_dataset(DataConfig(dataset="idx", root=str(root)), train=False)
    assert len(test) == 6 and test.mean == pytest.approx(train.mean)  # eval uses the train split's stats
    cfg = DataConfig(dataset="idx", root=str(root), limit=5, mean=(0.1, 0.2, 0.3), std=(0.2, 0.3, 0.4))
    small = load_dataset(cfg, train=True)
    again = load_dataset(cfg, train=True)
    assert isinstance(small, ArraySet) and isinstance(again, ArraySet)
    assert len(small) == 5 and torch.equal(small.images, again.images)  # seeded subset
    assert small.mean == (0.1, 0.2, 0.3) and small.std == (0.2, 0.3, 0.4)
    assert len(load_dataset(cfg, train=False)) == 6  # limit applies to training only


def test_load_dataset_npz_and_imagefolder(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for split, n in (("train", 8), ("test", 3)):
        np.savez(tmp_path / f"{split}.npz", images=rng.integers(0, 256, (n, 4, 4), dtype=np.uint8), labels=np.zeros(n))
    assert len(load_dataset(DataConfig(dataset="npz", root=str(tmp_path)), train=False)) == 3
    folder = tmp_path / "folder"
    write_folder(folder / "train", {"a": [(4, 4)] * 3, "b": [(4, 4)] * 2})
    write_folder(folder / "val", {"a": [(4, 4)], "b": [(4, 4)]})
    cfg = DataConfig(dataset="imagefolder", root=str(folder), limit=3)
    train, val = load_dataset(cfg, train=True), load_dataset(cfg, train=False)
    assert isinstance(train, ImageFolderSet) and len(train) == 3 and len(val) == 2
    flat = load_dataset(DataConfig(dataset="imagefolder", root=str(folder / "train")), train=True)
    assert len(flat) == 5  # root itself holds the class folders
    with pytest.raises(FileNotFoundError, match="val not found"):
        load_dataset(DataConfig(dataset="imagefolder", root=str(folder / "train")), train=False)


def test_load_dataset_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist") as info:
        load_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path / "none")), train=True)
    assert str(tmp_path / "none") in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "half").mkdir()
    write_idx(tmp_path / "half" / "train-images-idx3-ubyte.gz", np.zeros((2, 3, 3)), gz=True)
    with pytest.raises(FileNotFoundError, match=r"train-labels-idx1-ubyte\.gz not found"):
        load_dataset(DataConfig(dataset="mnist", root=str(tmp_path / "half")), train=True)
    with pytest.raises(ValueError, match=r"data\.root is required"):
        load_dataset(DataConfig(dataset="cifar10"), train=True)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_test_split() -> None:
    data = load_dataset(DataConfig(), train=False)
    assert isinstance(data, ArraySet)
    assert data.images.shape == (10000, 28, 28, 1)
    assert len(data.classes) == 10 and data.classes[9] == "Ankle boot"
    assert data.labels.bincount().tolist() == [1000] * 10
    assert data.mean == (0.2860, 0.2860, 0.2860)


# ------------------------------------------------------------------------- symlinks out of the folder
def linked_folder(tmp_path: Path) -> tuple[Path, Path]:
    """ds/{train,val}/<class>/ with links inside the tree (kept) and out of it (to `private`, skipped), and a loop.
    -> (ds, private)."""
    private = write_folder(tmp_path / "private", {"secret": [(4, 4), (5, 5)]})
    ds = write_folder(tmp_path / "ds", {"train/cat": [(6, 6), (7, 7)], "train/dog": [(8, 8)], "val/cat": [(9, 9)]})
    dog = ds / "train" / "dog"
    (dog / "twin.png").symlink_to("../cat/0.PNG")  # inside the split
    (dog / "from-val.png").symlink_to(ds / "val" / "cat" / "0.PNG")  # inside the dataset, outside the split
    (dog / "stolen.png").symlink_to(private / "secret" / "0.PNG")  # a file out
    (dog / "more").symlink_to(private / "secret")  # a folder out
    (dog / "loop").symlink_to(".")  # a loop: the folder is walked once
    (ds / "train" / "cow").symlink_to(private / "secret")  # a class folder out
    return ds, private


def test_an_image_folder_follows_links_inside_and_skips_links_out(tmp_path: Path) -> None:
    ds, private = linked_folder(tmp_path)
    data = load_dataset(DataConfig(dataset="imagefolder", root=str(ds)), train=True)
    assert isinstance(data, ImageFolderSet)
    assert data.classes == ["cat", "cow", "dog"]  # the linked-out class keeps its label, with no images
    train = ds / "train"
    assert data.paths == [str(train / "cat" / "0.PNG"), str(train / "cat" / "1.png"), str(train / "dog" / "0.PNG"),
                          str(train / "dog" / "from-val.png"), str(train / "dog" / "twin.png")]
    assert data.labels.tolist() == [0, 0, 2, 2, 2]
    assert data.skipped == {str(train / "cow") + "/": OUTSIDE_ROOT, str(train / "dog" / "more") + "/": OUTSIDE_ROOT,
                            str(train / "dog" / "stolen.png"): OUTSIDE_ROOT}
    assert not any(Path(p).resolve().is_relative_to(private) for p in data.paths)
    assert data.load(4).shape == (3, 6, 6)  # twin.png is cat/0.PNG
    # the split folder alone is the bound when it is read on its own: the link into val leads out of it
    alone = ImageFolderSet(train)
    assert str(train / "dog" / "from-val.png") in alone.skipped and len(alone) == 4


def test_a_split_folder_linked_out_of_the_dataset_is_refused(tmp_path: Path) -> None:
    ds, private = linked_folder(tmp_path)
    (ds / "val").rename(tmp_path / "val-elsewhere")
    (ds / "val").symlink_to(tmp_path / "val-elsewhere")
    with pytest.raises(OutsideRootError, match="val: a symlink leading outside"):
        load_dataset(DataConfig(dataset="imagefolder", root=str(ds)), train=False)


@pytest.mark.parametrize("kind", ["idx", "cifar10", "npz"])
def test_a_data_file_linked_out_of_the_root_is_refused(tmp_path: Path, kind: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    if kind == "idx":
        link = idx_folder(root) / "train-images-idx3-ubyte.gz"
    elif kind == "cifar10":
        link = write_cifar10(root) / "data_batch_3"
    else:
        root.mkdir()
        link = root / "train.npz"
        np.savez(link, images=np.zeros((2, 3, 3), np.uint8), labels=np.array([0, 1]))
    cfg = DataConfig(dataset=kind, root=str(root))
    load_dataset(cfg, train=True)  # the plain files read
    link.rename(outside / link.name)
    link.symlink_to(outside / link.name)
    with pytest.raises(OutsideRootError, match=f"{link.name}: a symlink leading outside"):
        load_dataset(cfg, train=True)
    link.unlink()  # a link that stays inside the root is fine
    (root / "elsewhere.bin").write_bytes((outside / link.name).read_bytes())
    link.symlink_to(root / "elsewhere.bin")
    assert len(load_dataset(cfg, train=True)) > 0
