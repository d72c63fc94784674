"""The packed dataset format: JPEG shards plus an index, written by `prepare.run_prepare`, read by `PackedSet`.

Layout (docs/datasets.md):

    <out>/meta.json                 format, version, source, classes, short_side, quality, mean/std,
                                    per-split counts, "complete": true once verified
    <out>/plan.json                 how the source was cut into shards (a rerun resumes only the same plan)
    <out>/<split>/shard-00000.bin   JPEG files back to back
    <out>/<split>/part-00000.npz    one finished shard's index (while preparing; merged, then removed)
    <out>/<split>/index.npz         offsets, lengths, labels, heights, widths, shard (one row per image)

Random access by index (an mmap'd shard and one slice) is what the loader needs: its data order is a pure
function of (seed, step), so a restarted run must read image i directly, which streaming formats
(WebDataset tars, FFCV's sequential pages) do not offer without their own sampler.

Every file here is read as hostile: `read_meta` and `read_index` refuse bad JSON, arrays whose header claims
more data than the file holds, negative or out-of-file offsets and lengths, unknown shards and labels, files
that are symlinks leading out of the folder, with a ValueError naming the file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mocov3_core.data.paths import ensure_inside

FORMAT = "mocolab-packed"
VERSION = 1
SPLITS = ("train", "val")
INDEX_KEYS = ("offsets", "lengths", "labels", "heights", "widths", "shard")
MAX_META_BYTES = 64 << 20  # classes of a 10^6-class set fit many times over
MAX_SIDE = 65_535  # JPEG's limit on a side
MAX_SHARDS = 1_000_000


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.bin"


def part_name(shard: int) -> str:
    return f"part-{shard:05d}.npz"


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, allow_nan=False).encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, then rename: readers see all of it or nothing."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """np.savez (stored, not compressed: the header's size can be checked against the member's) via a rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_npz_checked(path: Path, keys: tuple[str, ...], max_rows: int) -> dict[str, np.ndarray]:
    """The 1-D integer arrays `keys` of an npz written by `save_npz_atomic`, each checked before it is read:
    a header claiming more rows than `max_rows` or more bytes than its member holds is refused unread."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as z:
            members = {info.filename: info for info in z.infolist()}
            for key in keys:
                info = members.get(f"{key}.npy")
                if info is None:
                    raise ValueError(f"{path}: no array {key!r} (holds {', '.join(sorted(members)) or 'nothing'})")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"{path}: {key}: unsupported .npy version {version}")
                    if dtype.kind not in "iu" or len(shape) != 1 or fortran:
                        raise ValueError(f"{path}: {key} must be a 1-D integer array, got {dtype} {shape}")
                    rows = int(shape[0])
                    if rows > max_rows or rows * dtype.itemsize > info.file_size:
                        raise ValueError(f"{path}: {key} claims {rows} rows; the file holds at most "
                                         f"{min(max_rows, info.file_size // max(dtype.itemsize, 1))}")
                    data = f.read(rows * dtype.itemsize)
                if len(data) != rows * dtype.itemsize:
                    raise ValueError(f"{path}: {key} is truncated")
                out[key] = np.frombuffer(data, dtype=dtype).astype(np.int64)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable index ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable index ({exc})") from None
    return out


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file of at most MAX_META_BYTES; anything else is a ValueError naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size > MAX_META_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, more than a packed set's metadata ever holds")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _stats(meta: dict[str, Any], key: str, path: Path) -> tuple[float, float, float] | None:
    value = meta.get(key)
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 3 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value)
    if not ok or (key == "std" and min(value) <= 0):
        raise ValueError(f"{path}: {key} must be 3 numbers in [0, 1]{' above 0' if key == 'std' else ''}")
    return (float(value[0]), float(value[1]), float(value[2]))


def read_meta(root: Path) -> dict[str, Any]:
    """meta.json of a finished packed set, its fields checked (classes, counts, stats, the complete flag)."""
    path = root / "meta.json"
    if path.exists():
        ensure_inside(path, root)
    meta = read_json(path)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: not a {FORMAT} version {VERSION} folder "
                         f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
    if meta.get("complete") is not True:
        raise ValueError(f"{root}: preparation did not finish (meta.json is not marked complete): run prepare again")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{path}: classes must be a non-empty list of names")
    splits = meta.get("splits")
    if not isinstance(splits, dict) or "train" not in splits or not set(splits) <= set(SPLITS):
        raise ValueError(f"{path}: splits must name train (and optionally val)")
    for name, split in splits.items():
        images = split.get("images") if isinstance(split, dict) else None
        shards = split.get("shards") if isinstance(split, dict) else None
        if not (isinstance(images, int) and 0 < images <= 10**10 and isinstance(shards, int)
                and 0 < shards <= MAX_SHARDS):
            raise ValueError(f"{path}: splits.{name} needs positive counts of images and shards")
    meta["mean"], meta["std"] = _stats(meta, "mean", path), _stats(meta, "std", path)
    return meta


def read_index(split_dir: Path, images: int, shards: int, num_classes: int,
               root: Path | None = None) -> dict[str, np.ndarray]:
    """index.npz of one split, every row checked against the shard files on disk; the index and the shards must
    be files of the packed folder `root` (default: the split's parent), not symlinks out of it."""
    path = split_dir / "index.npz"
    root = split_dir.parent if root is None else root
    ensure_inside(split_dir, root)
    if path.exists():
        ensure_inside(path, root)
    index = load_npz_checked(path, INDEX_KEYS, images)
    n = len(index["offsets"])
    if n != images or any(len(index[k]) != n for k in INDEX_KEYS):
        raise ValueError(f"{path}: {', '.join(f'{k} {len(index[k])}' for k in INDEX_KEYS)} rows; meta.json says "
                         f"{images} images")
    if index["shard"].min() < 0 or index["shard"].max() >= shards:
        raise ValueError(f"{path}: shard numbers outside 0..{shards - 1}")
    if index["offsets"].min() < 0 or index["lengths"].min() <= 0:
        raise ValueError(f"{path}: negative offsets or non-positive lengths")
    if index["labels"].min() < 0 or index["labels"].max() >= num_classes:
        raise ValueError(f"{path}: labels outside 0..{num_classes - 1}")
    for key in ("heights", "widths"):
        if index[key].min() < 1 or index[key].max() > MAX_SIDE:
            raise ValueError(f"{path}: {key} outside 1..{MAX_SIDE}")
    sizes = np.zeros(shards, dtype=np.int64)
    for s in range(shards):
        shard = split_dir / shard_name(s)
        if not shard.is_file():
            raise ValueError(f"{split_dir}: {shard.name} is missing")
        ensure_inside(shard, root)
        sizes[s] = shard.stat().st_size
    ends = index["offsets"] + index["lengths"]
    beyond = np.nonzero(ends > sizes[index["shard"]])[0]
    if len(beyond):
        i = int(beyond[0])
        raise ValueError(f"{path}: image {i} ends at byte {int(ends[i])} of {shard_name(int(index['shard'][i]))}, "
                         f"which holds {int(sizes[index['shard'][i]])} bytes ({len(beyond)} such images): "
                         "the shard is truncated or the index is not its own")
    return index
