"""Inspect a dataset and write its packed copy: the engine side of a run of kind "prepare".

`run_prepare(cfg, sink)` reads the source named by `cfg.data` with the ordinary readers (any kind: IDX, CIFAR,
npz, image folders, packed sets), then

1. scan: lists its splits (train, and val where the reader has one), counts and classes;
2. stats: per-channel mean/std of [0, 1] pixels, once: over all of an in-memory set, or over a seeded sample of
   `stats_images` training files (decoded at about the packed size: JPEG DCT scaling makes that cheap), with
   the sizes of that sample and a grid of `samples` training images (64x64 cells, in label order);
3. pack (when `cfg.out` is set): every image re-encoded as a baseline JPEG at `short_side` (never upscaled;
   big JPEGs decoded DCT-downscaled first, then an antialiased resize) into shard files of about `shard_mb`,
   by `workers` processes, one shard per task. Each shard is written under a temporary name and renamed, then
   its index part likewise; a rerun with the same plan skips the shards whose part is there, and
   `should_stop` is honoured between shards;
4. verify: the merged index of each split is read back as hostile (`packed.read_index`: every entry inside
   its shard file) and its count must equal the source's minus the unreadable images; only then is
   meta.json written, with "complete": true.

An unreadable source image (truncated, not an image, a decompression bomb) is counted and named (the first 20)
in the result, never a crash; so is an image folder's symlink leading outside the folder, which is never read
(`paths`). Events: `status` (running at start, succeeded or stopped at the end), `metrics`
with {step, total_steps, phase, images_per_s} while working, `log` lines, and one `dataset` event carrying
the DatasetInfo that is also returned (docs/datasets.md).
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import multiprocessing as mp
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mocov3_core.config import PrepareConfig
from mocov3_core.data import packed
from mocov3_core.data.decode import decode_reduced
from mocov3_core.data.paths import OUTSIDE_ROOT
from mocov3_core.data.readers import DEFAULT_ROOTS, AnySet, ArraySet, load_dataset
from mocov3_core.events import Emitter, EventSink

CELL = 64  # pixels per side of a sample-grid cell
GRID_COLUMNS = 8
MAX_SKIPPED_NAMES = 20
STATS_CHUNK = 32  # images per stats task
PROGRESS_EVERY_S = 0.5

# The splits being read, set in the parent before a pool forks, so workers inherit them (and their mmaps)
# instead of receiving a pickled copy with every task.
_SOURCES: dict[str, AnySet] = {}
_COUNTER: Any = None  # images done, shared with the workers (a multiprocessing Value, or _LocalCounter)


class _LocalCounter:
    """The interface of a multiprocessing Value, for work done in this process."""

    def __init__(self) -> None:
        self.value = 0

    def get_lock(self) -> _NoLock:
        return _NoLock()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _tick(n: int = 1) -> None:
    with _COUNTER.get_lock():
        _COUNTER.value += n


# ------------------------------------------------------------------------------------------ images
def _open(data: AnySet, i: int) -> Image.Image:
    """Image i of any reader's set as a (lazily decoded) PIL image."""
    if isinstance(data, ArraySet):
        pixels = data.images[i].numpy()
        return Image.fromarray(pixels[..., 0], "L") if pixels.shape[2] == 1 else Image.fromarray(pixels, "RGB")
    return data.open_pil(i)


def _name(data: AnySet, split: str, i: int) -> str:
    return f"{split}[{i}]" if isinstance(data, ArraySet) else data.name(i)


def _reduction_to(width: int, height: int, short_side: int) -> int:
    """The JPEG DCT reduction that keeps the shorter side at least `short_side`."""
    short = min(width, height)
    return next(r for r in (8, 4, 2, 1) if short / r >= short_side or r == 1)


def encode_image(im: Image.Image, short_side: int, quality: int) -> tuple[bytes, int, int]:
    """Re-encode as a baseline RGB JPEG with the shorter side at `short_side` (smaller images keep their size);
    a big JPEG is decoded DCT-downscaled to at least that size, then resized (antialiased bicubic).
    -> (JPEG bytes, height, width)."""
    width, height = im.size
    short = min(width, height)
    if short > short_side:
        target = (max(1, round(width * short_side / short)), max(1, round(height * short_side / short)))
        if im.format == "JPEG":
            im.draft("RGB", target)  # decodes at a size still >= target
        rgb = im.convert("RGB")
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.BICUBIC)
    else:
        rgb = im.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality)
    return buf.getvalue(), rgb.height, rgb.width


# ------------------------------------------------------------------------------------ worker tasks
def _stats_task(task: tuple[str, list[int], int]) -> list[tuple[int, Any]]:
    """Per image of the chunk: (index, (sums [3], sums of squares [3], pixels, height, width)) or (index, error)."""
    split, indices, short_side = task
    data = _SOURCES[split]
    out: list[tuple[int, Any]] = []
    for i in indices:
        try:
            with _open(data, i) as im:
                width, height = im.size
                rgb, _ = decode_reduced(im, _reduction_to(width, height, short_side))
                x = np.asarray(rgb, dtype=np.float64).reshape(-1, 3) / 255.0
            out.append((i, (x.sum(0), (x * x).sum(0), x.shape[0], height, width)))
        except Exception as exc:  # any unreadable file is reported, never fatal
            out.append((i, f"{type(exc).__name__}: {exc}"))
        _tick()
    return out


def _pack_task(task: tuple[str, int, int, int, str, int, int]) -> tuple[str, int, int]:
    """Encode source images [start, end) of a split into shard `shard`: the .bin then its part, each written
    under a temporary name and renamed. -> (split, shard, images written)."""
    split, shard, start, end, folder, short_side, quality = task
    data = _SOURCES[split]
    split_dir = Path(folder)
    final = split_dir / packed.shard_name(shard)
    tmp = split_dir / f".{final.name}.tmp{os.getpid()}"
    lengths, labels, heights, widths, skipped = [], [], [], [], []
    with open(tmp, "wb") as f:
        for i in range(start, end):
            try:
                with _open(data, i) as im:
                    jpeg, height, width = encode_image(im, short_side, quality)
            except Exception:  # unreadable: reported by index, the shard goes on
                skipped.append(i)
                _tick()
                continue
            f.write(jpeg)
            lengths.append(len(jpeg))
            labels.append(int(data.labels[i]))
            heights.append(height)
            widths.append(width)
            _tick()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)

    def arr(values: list[int]) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    packed.save_npz_atomic(split_dir / packed.part_name(shard), lengths=arr(lengths), labels=arr(labels),
                           heights=arr(heights), widths=arr(widths), skipped=arr(skipped),
                           count=arr([end - start]))
    return split, shard, len(lengths)


# -------------------------------------------------------------------------------------- run tasks
class _Progress:
    """metrics events for one phase, at most every PROGRESS_EVERY_S, always at its end."""

    def __init__(self, emitter: Emitter, phase: str, total: int, done: int = 0) -> None:
        self.emitter, self.phase, self.total = emitter, phase, total
        self.start_done, self.t0, self.last = done, time.perf_counter(), 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        rate = (done - self.start_done) / max(now - self.t0, 1e-9)
        self.emitter.emit("metrics", step=int(done), total_steps=int(self.total), phase=self.phase,
                          images_per_s=float(rate))


def _run_tasks(fn: Callable[[Any], Any], tasks: list[Any], workers: int, progress: _Progress, done_before: int,
               should_stop: Callable[[], bool]) -> tuple[list[Any], bool]:
    """Run `fn` over `tasks` (in this process, or on `workers` forked processes with at most 2 per worker
    in flight), reporting images done; a stop lets the tasks in flight finish and submits no more.
    -> (results in task order of completion, stopped)."""
    global _COUNTER
    results: list[Any] = []
    stopped = False
    if workers == 0 or len(tasks) <= 1:
        _COUNTER = _LocalCounter()
        for task in tasks:
            if should_stop():
                stopped = True
                break
            results.append(fn(task))
            progress.update(done_before + _COUNTER.value)
        return results, stopped
    ctx = mp.get_context("fork")  # children inherit the sources; they run PIL and numpy only
    _COUNTER = ctx.Value("q", 0)
    pending: deque[Any] = deque()
    queue = iter(tasks)
    with ctx.Pool(min(workers, len(tasks))) as pool:
        exhausted = False
        while True:
            while not stopped and not exhausted and len(pending) < 2 * workers:
                task = next(queue, None)
                if task is None:
                    exhausted = True
                else:
                    pending.append(pool.apply_async(fn, (task,)))
            if not pending:
                break
            pending[0].wait(0.25)
            while pending and pending[0].ready():
                results.append(pending.popleft().get())  # a worker's exception surfaces here
            progress.update(done_before + _COUNTER.value)
            if not stopped and should_stop():
                stopped = True
    return results, stopped


# ---------------------------------------------------------------------------------------- inspect
def _source_root(cfg: PrepareConfig) -> Path:
    name = cfg.data.dataset
    if cfg.data.root is None and name not in DEFAULT_ROOTS:
        raise ValueError(f"data.root is required for dataset {name!r}")
    return Path(cfg.data.root or DEFAULT_ROOTS[name]).expanduser().resolve()


def _load_splits(cfg: PrepareConfig) -> dict[str, AnySet]:
    splits: dict[str, AnySet] = {"train": load_dataset(cfg.data, train=True)}
    with contextlib.suppress(FileNotFoundError):  # else a training split alone
        splits["val"] = load_dataset(cfg.data, train=False)
    return splits


def _array_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images in [0, 1] units, accumulated in float64 chunks."""
    total = torch.zeros(images.shape[3], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        x = chunk.to(torch.float64).div_(255.0).flatten(0, 2)
        total += x.sum(0)
        squares += (x * x).sum(0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    means, stds = mean.tolist(), std.tolist()
    return (means * 3, stds * 3) if len(means) == 1 else (means, stds)


def _sample_indices(labels: torch.Tensor, count: int, num_classes: int) -> list[int]:
    """`count` images spread over the classes (seeded), in label order then index order."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1)).tolist()
    per_class = max(1, math.ceil(count / max(num_classes, 1)))
    taken: dict[int, int] = {}
    picked: list[int] = []
    for i in order:
        label = int(labels[i])
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            picked.append(i)
            if len(picked) == count:
                break
    return sorted(picked, key=lambda i: (int(labels[i]), i))


def _grid(data: AnySet, indices: Iterable[int], skipped: dict[str, str], split: str) -> tuple[str, list[int]]:
    """A JPEG (base64) of 64x64 centre crops, GRID_COLUMNS per row, and the label of each cell."""
    cells: list[Image.Image] = []
    labels: list[int] = []
    for i in indices:
        try:
            with _open(data, i) as im:
                width, height = im.size
                side = min(width, height)
                left, top = (width - side) / 2, (height - side) / 2
                rgb, r = decode_reduced(im, _reduction_to(width, height, CELL))
                box = (left / r, top / r, (left + side) / r, (top + side) / r)
                cells.append(rgb.resize((CELL, CELL), Image.Resampling.BILINEAR, box=box))
        except Exception as exc:
            skipped[_name(data, split, i)] = f"{type(exc).__name__}: {exc}"
            continue
        labels.append(int(data.labels[i]))
    if not cells:
        return "", []
    columns = min(GRID_COLUMNS, len(cells))
    sheet = Image.new("RGB", (columns * CELL, math.ceil(len(cells) / columns) * CELL))
    for k, cell in enumerate(cells):
        sheet.paste(cell, ((k % columns) * CELL, (k // columns) * CELL))
    buf = io.BytesIO()
    sheet.save(buf, "JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii"), labels


def _inspect(cfg: PrepareConfig, emitter: Emitter, should_stop: Callable[[], bool]
             ) -> tuple[dict[str, Any], dict[str, AnySet], dict[str, str], bool]:
    """-> (DatasetInfo without `packed`, the splits, unreadable images {name: error}, stopped)."""
    root = _source_root(cfg)
    emitter.emit("log", message=f"scanning {cfg.data.dataset} at {root}")
    t0 = time.perf_counter()
    progress = _Progress(emitter, "scan", 0)
    splits = _load_splits(cfg)
    total = progress.total = sum(len(s) for s in splits.values())
    progress.update(total, force=True)
    train = splits["train"]
    emitter.emit("log", message=f"found {', '.join(f'{len(s)} {n}' for n, s in splits.items())} images in "
                                f"{len(train.classes)} classes ({time.perf_counter() - t0:.1f} s)")
    skipped: dict[str, str] = {}
    for split in splits.values():  # image folders' symlinks leading out of the folder, never read
        skipped.update(getattr(split, "skipped", {}))
    stopped = False
    if isinstance(train, ArraySet):
        n_stats = len(train)
        mean, std = _array_stats(train.images)
        h, w = int(train.images.shape[1]), int(train.images.shape[2])
        sizes = np.array([[h, w]])
        _Progress(emitter, "stats", n_stats).update(n_stats, force=True)
    else:
        n = len(train)
        if n <= cfg.stats_images:
            pick = np.arange(n)
        else:
            pick = np.sort(np.random.default_rng(0).choice(n, cfg.stats_images, replace=False))
        chunks = [pick[k : k + STATS_CHUNK].tolist() for k in range(0, len(pick), STATS_CHUNK)]
        tasks = [("train", chunk, cfg.short_side) for chunk in chunks]
        progress = _Progress(emitter, "stats", len(pick))
        _SOURCES.clear()
        _SOURCES.update(splits)
        results, stopped = _run_tasks(_stats_task, tasks, cfg.workers, progress, 0, should_stop)
        progress.update(sum(len(r) for r in results), force=True)
        sums, squares, pixels, size_rows = np.zeros(3), np.zeros(3), 0, []
        for chunk in results:
            for i, got in chunk:
                if isinstance(got, str):
                    skipped[_name(train, "train", i)] = got
                    continue
                sums += got[0]
                squares += got[1]
                pixels += got[2]
                size_rows.append(got[3:5])
        if pixels == 0 and not stopped:
            raise ValueError(f"{root}: none of the {len(pick)} images sampled for statistics could be read "
                             f"(e.g. {next(iter(skipped.items()), ('', ''))[1]})")
        n_stats = len(size_rows)
        m = sums / max(pixels, 1)
        mean, std = m.tolist(), np.sqrt(np.maximum(squares / max(pixels, 1) - m * m, 0)).tolist()
        sizes = np.array(size_rows) if size_rows else np.zeros((1, 2), dtype=np.int64)
    grid, grid_labels = "", list[int]()
    if cfg.samples and not stopped:
        grid, grid_labels = _grid(train, _sample_indices(train.labels, min(cfg.samples, len(train)),
                                                         len(train.classes)), skipped, "train")
    median = np.median(sizes, axis=0)
    info: dict[str, Any] = {
        "kind": cfg.data.dataset,
        "root": str(root),
        "splits": {name: {"images": len(s)} for name, s in splits.items()},
        "classes": list(train.classes),
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "stats_images": int(n_stats),
        "image_size": {"min": [int(v) for v in sizes.min(0)], "median": [int(round(v)) for v in median],
                       "max": [int(v) for v in sizes.max(0)]},
        "samples_jpeg": grid,
        "sample_labels": grid_labels,
        "packed": None,
    }
    return info, splits, skipped, stopped


def _with_skipped(info: dict[str, Any], skipped: dict[str, str]) -> dict[str, Any]:
    """The first MAX_SKIPPED_NAMES skipped names (links leading out of the folder first, then by name) and the
    reason of each, in the same order."""
    names = sorted(skipped, key=lambda k: (skipped[k] != OUTSIDE_ROOT, k))[:MAX_SKIPPED_NAMES]
    info["skipped"] = names
    info["skipped_reasons"] = [skipped[k] for k in names]
    info["skipped_count"] = len(skipped)
    return info


def _emitter(sink: EventSink | Emitter | list[EventSink] | None, run_id: str | None, first_seq: int) -> Emitter:
    if isinstance(sink, Emitter):
        return sink
    sinks = list(sink) if isinstance(sink, list | tuple) else [] if sink is None else [sink]
    return Emitter(run_id or uuid.uuid4().hex[:12], sinks, seq=first_seq)


def inspect(cfg: PrepareConfig, sink: EventSink | Emitter | list[EventSink] | None = None,
            should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The DatasetInfo of cfg.data (counts, classes, mean/std, sizes, the sample grid) without packing."""
    info, _, skipped, _ = _inspect(cfg, _emitter(sink, None, 0), should_stop or (lambda: False))
    return _with_skipped(info, skipped)


# ------------------------------------------------------------------------------------------- pack
def _plan(cfg: PrepareConfig, info: dict[str, Any], splits: dict[str, AnySet], per_shard: int) -> dict[str, Any]:
    return {
        "source": {"kind": info["kind"], "root": info["root"]},
        "short_side": cfg.short_side,
        "quality": cfg.quality,
        "splits": {name: {"images": len(s), "per_shard": per_shard, "shards": math.ceil(len(s) / per_shard)}
                   for name, s in splits.items()},
    }


def _estimate_per_shard(cfg: PrepareConfig, train: AnySet) -> int:
    """Images per shard for shards of about cfg.shard_mb: mean JPEG size of up to 16 images encoded here."""
    sizes = []
    step = max(1, len(train) // 16)
    for i in range(0, len(train), step)[:16]:
        try:
            with _open(train, i) as im:
                sizes.append(len(encode_image(im, cfg.short_side, cfg.quality)[0]))
        except Exception:
            continue
    mean = float(np.mean(sizes)) if sizes else 100_000.0
    return max(1, int(cfg.shard_mb * 2**20 // (mean * 1.05)))


def _clear(out: Path) -> None:
    """Remove what an earlier preparation with another plan left (our own file names only)."""
    for name in ("meta.json", "plan.json"):
        (out / name).unlink(missing_ok=True)
    for split in packed.SPLITS:
        folder = out / split
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and (path.name.startswith(("shard-", "part-", ".shard-", ".part-", ".index"))
                                   or path.name == "index.npz"):
                path.unlink()


def _part_done(split_dir: Path, shard: int, count: int) -> bool:
    """Shard `shard` was finished by an earlier run: its part is readable and matches its .bin."""
    part, binary = split_dir / packed.part_name(shard), split_dir / packed.shard_name(shard)
    if not part.is_file() or not binary.is_file():
        return False
    try:
        got = packed.load_npz_checked(part, ("lengths", "count"), count)
    except (ValueError, FileNotFoundError):
        return False
    return bool(got["count"].tolist() == [count] and int(got["lengths"].sum()) == binary.stat().st_size)


def _merge(split_dir: Path, shards: int, source_count: int, num_classes: int) -> tuple[int, list[int]]:
    """Join the parts of a split into index.npz and verify it; -> (images, skipped source indices)."""
    keys = ("lengths", "labels", "heights", "widths", "skipped", "count")
    parts = [packed.load_npz_checked(split_dir / packed.part_name(s), keys, source_count) for s in range(shards)]
    lengths = np.concatenate([p["lengths"] for p in parts])
    offsets = np.concatenate([np.cumsum(p["lengths"]) - p["lengths"] for p in parts])
    shard = np.concatenate([np.full(len(p["lengths"]), s, dtype=np.int64) for s, p in enumerate(parts)])
    skipped = np.concatenate([p["skipped"] for p in parts]).tolist()
    images = len(lengths)
    covered = sum(int(p["count"][0]) for p in parts)
    if covered != source_count or images + len(skipped) != source_count:
        raise ValueError(f"{split_dir}: the shards cover {covered} source images and hold {images} (+{len(skipped)} "
                         f"unreadable); the source has {source_count}")
    if images == 0:
        raise ValueError(f"{split_dir}: none of the {source_count} images could be read")
    packed.save_npz_atomic(split_dir / "index.npz", offsets=offsets, lengths=lengths,
                           labels=np.concatenate([p["labels"] for p in parts]),
                           heights=np.concatenate([p["heights"] for p in parts]),
                           widths=np.concatenate([p["widths"] for p in parts]), shard=shard)
    packed.read_index(split_dir, images, shards, num_classes)  # the verification: read back as hostile
    return images, skipped


def _check_out(out: Path, root: Path) -> None:
    if out == root or root in out.parents or out in root.parents:
        raise ValueError(f"out: {out} and the source {root} must not contain one another")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")


def _pack(cfg: PrepareConfig, info: dict[str, Any], splits: dict[str, AnySet], skipped: dict[str, str],
          emitter: Emitter, should_stop: Callable[[], bool], shard_images: int | None) -> dict[str, Any]:
    """Write (or resume, or reuse) the packed copy; -> the DatasetInfo's `packed` (with "stopped" when it stopped)."""
    assert cfg.out is not None
    out = Path(cfg.out).expanduser().resolve()
    _check_out(out, Path(info["root"]))
    out.mkdir(parents=True, exist_ok=True)
    train = splits["train"]
    t0 = time.perf_counter()
    plan_path = out / "plan.json"
    meta: dict[str, Any] | None = None
    old_plan: Any = None
    seconds_before = 0.0
    try:
        meta = packed.read_meta(out)
        old_plan = meta.get("plan")
    except (FileNotFoundError, ValueError):
        if plan_path.is_file():
            try:
                old = packed.read_json(plan_path)
                old_plan, seconds_before = old.get("plan"), float(old.get("seconds", 0.0))
            except (ValueError, TypeError):
                old_plan = None
    plan: dict[str, Any] | None = None
    if shard_images is None and isinstance(old_plan, dict):
        try:  # a rerun keeps the first run's cut (a new estimate could differ by a few bytes)
            same = _plan(cfg, info, splits, int(old_plan["splits"]["train"]["per_shard"]))
            plan = same if same == old_plan else None
        except (KeyError, TypeError, ValueError):
            plan = None
    if plan is None:
        plan = _plan(cfg, info, splits, shard_images or _estimate_per_shard(cfg, train))
    per_shard = plan["splits"]["train"]["per_shard"]
    if meta is not None and meta.get("plan") == plan:
        emitter.emit("log", message=f"{out} is prepared already: verifying it")
        return _verify_existing(out, meta, emitter)
    if old_plan != plan:
        if any(out.iterdir()):
            emitter.emit("log", message=f"{out} holds no preparation of this plan: starting afresh")
        _clear(out)
        seconds_before = 0.0
    packed.write_atomic(plan_path, packed.json_bytes({"plan": plan, "seconds": seconds_before}))
    (out / "meta.json").unlink(missing_ok=True)
    tasks, done_images, total = [], 0, 0
    for name, data in splits.items():
        split_dir = out / name
        split_dir.mkdir(exist_ok=True)
        for stale in split_dir.glob(".*.tmp*"):  # what an interrupted writer left
            stale.unlink(missing_ok=True)
        n, k = len(data), plan["splits"][name]["per_shard"]
        total += n
        for s in range(plan["splits"][name]["shards"]):
            start, end = s * k, min(n, (s + 1) * k)
            if _part_done(split_dir, s, end - start):
                done_images += end - start
            else:
                tasks.append((name, s, start, end, str(split_dir), cfg.short_side, cfg.quality))
    shards_total = sum(p["shards"] for p in plan["splits"].values())
    emitter.emit("log", message=f"packing {total} images into {shards_total} shards of up to {per_shard} images "
                                f"at short side {cfg.short_side}, quality {cfg.quality}, {cfg.workers} workers "
                                f"({shards_total - len(tasks)} shards done before)")
    progress = _Progress(emitter, "pack", total, done_images)
    _SOURCES.clear()
    _SOURCES.update(splits)
    results, stopped = _run_tasks(_pack_task, tasks, cfg.workers, progress, done_images, should_stop)
    progress.update(done_images + _COUNTER.value, force=True)
    seconds = seconds_before + time.perf_counter() - t0
    if stopped:
        packed.write_atomic(plan_path, packed.json_bytes({"plan": plan, "seconds": seconds}))
        done = shards_total - len(tasks) + len(results)
        emitter.emit("log", message=f"stopped at a shard boundary: {done} of {shards_total} shards written")
        return {"root": str(out), "stopped": True, "shards_done": done, "shards": shards_total,
                "shards_written": len(results)}
    progress = _Progress(emitter, "verify", total)
    split_info: dict[str, Any] = {}
    meta_splits: dict[str, Any] = {}
    checked = 0  # source images accounted for
    for name, data in splits.items():
        split_dir = out / name
        shards = plan["splits"][name]["shards"]
        images, bad = _merge(split_dir, shards, len(data), len(train.classes))
        for i in bad:
            skipped.setdefault(_name(data, name, i), "unreadable while packing")
        size = sum((split_dir / packed.shard_name(s)).stat().st_size for s in range(shards))
        split_info[name] = {"images": images}
        meta_splits[name] = {"images": images, "shards": shards, "bytes": size, "skipped": len(bad)}
        checked += len(data)
        progress.update(checked, force=True)
    seconds = seconds_before + time.perf_counter() - t0
    meta = {"format": packed.FORMAT, "version": packed.VERSION, "source": plan["source"],
            "classes": list(train.classes), "short_side": cfg.short_side, "quality": cfg.quality,
            "splits": meta_splits, "mean": info["mean"], "std": info["std"], "seconds": round(seconds, 2),
            "plan": plan, "complete": True}
    packed.write_atomic(out / "meta.json", packed.json_bytes(meta))
    for name in splits:
        for s in range(plan["splits"][name]["shards"]):
            (out / name / packed.part_name(s)).unlink(missing_ok=True)
    plan_path.unlink(missing_ok=True)
    result = _packed_info(out, meta)
    result["shards_written"] = len(results)
    emitter.emit("log", message=f"packed {sum(v['images'] for v in split_info.values())} images into "
                                f"{result['shards']} shards, {result['bytes'] / 2**20:.1f} MiB, in {seconds:.1f} s")
    return result


def _packed_info(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return {"root": str(out), "short_side": meta["short_side"], "quality": meta["quality"],
            "shards": sum(s["shards"] for s in meta["splits"].values()),
            "bytes": sum(s.get("bytes", 0) for s in meta["splits"].values()),
            "splits": {name: {"images": s["images"]} for name, s in meta["splits"].items()},
            "seconds": meta.get("seconds", 0.0)}


def _verify_existing(out: Path, meta: dict[str, Any], emitter: Emitter) -> dict[str, Any]:
    total = sum(s["images"] for s in meta["splits"].values())
    progress = _Progress(emitter, "verify", total)
    done = 0
    for name, split in meta["splits"].items():
        packed.read_index(out / name, split["images"], split["shards"], len(meta["classes"]))
        done += split["images"]
        progress.update(done, force=True)
    result = _packed_info(out, meta)
    result["shards_written"] = 0
    return result


# ------------------------------------------------------------------------------------------ entry
def run_prepare(cfg: PrepareConfig, sink: EventSink | Emitter | list[EventSink] | None,
                should_stop: Callable[[], bool] | None = None, *, run_id: str | None = None, first_seq: int = 0,
                shard_images: int | None = None) -> dict[str, Any]:
    """Inspect cfg.data and, with cfg.out, pack it (module docstring). -> the DatasetInfo, also emitted as the
    one `dataset` event; `{"stopped": True, ...}` when should_stop() turned true (rerun to resume).

    sink: an Emitter (numbering events on from its seq), or sinks for a new one with run_id and first_seq.
    shard_images: images per shard instead of the estimate for cfg.shard_mb (tests, tuning)."""
    emitter = _emitter(sink, run_id, first_seq)
    stop = should_stop or (lambda: False)
    emitter.emit("status", state="running", phase="prepare",
                 message=f"{'preparing' if cfg.out else 'inspecting'} {cfg.data.dataset} at {cfg.data.root or ''}")
    try:
        info, splits, skipped, stopped = _inspect(cfg, emitter, stop)
        if not stopped and cfg.out is not None:
            info["packed"] = _pack(cfg, info, splits, skipped, emitter, stop, shard_images)
            stopped = bool(info["packed"].get("stopped"))
    except Exception as exc:
        emitter.emit("status", state="failed", message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _SOURCES.clear()
    _with_skipped(info, skipped)
    if skipped:
        emitter.emit("log", level="warning", message=f"{len(skipped)} images skipped (unreadable, or links out of "
                     "the dataset's folder), e.g. "
                     + "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())[:3]))
    if stopped:
        emitter.emit("status", state="stopped", message="stop requested: rerun to resume")
        return {"stopped": True, **info}
    emitter.emit("dataset", **info)
    images = ", ".join(f"{v['images']} {k}" for k, v in info["splits"].items())
    emitter.emit("status", state="succeeded", message=f"{info['kind']}: {images} images, {len(info['classes'])} "
                 f"classes" + (f", packed into {info['packed']['root']}" if info["packed"] else ""))
    return info
