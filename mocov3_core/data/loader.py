"""Deterministic, resumable training batches.

The data order is a pure function of (seed, step): epoch e uses the permutation of a generator seeded
with seed + e, split into global batches of batch_size x world_size, and rank r takes every world_size-th
index of its global batch (what DistributedSampler followed by drop_last batching gives). So `batch(step)`
is the same whether or not the run was restarted, and a checkpoint only needs the step.

In-memory sets (`ArraySet`) go to the device once as uint8 NCHW and a batch is one gather there; the
augmentation then runs on the device. File-backed sets (image folders, packed sets) get each view's crop box
and flip from per-image seeds derived from (seed, step, index, view), then are either decoded, cropped and
flipped in DataLoader workers on the CPU, or read as bytes there and decoded + cropped in one batch on the
training device (nvJPEG; `decode.py`). `batch(step)` keeps a loader running ahead of the steps asked for, so
the training loop's one call per step gets its batch from workers that prepared it in advance.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from mocov3_core.data import _ops
from mocov3_core.data.augment import RATIO, normalize, resize_center_crop
from mocov3_core.data.decode import Box, crop_views, decode_batch, device_crops
from mocov3_core.data.readers import AnySet, ArraySet, FileSet, Stats

Batch = tuple[torch.Tensor, torch.Tensor]  # (images, labels) on the device
_MASK64 = (1 << 64) - 1


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (SplitMix64 finaliser per key): nearby keys give unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for key in keys:
        h = (h ^ (key & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h = (h ^ (h >> 31)) + 0x9E3779B97F4A7C15 & _MASK64
    return h >> 1


class _FileCrops(Dataset[tuple[torch.Tensor, int]]):
    """Item (step, index) -> (uint8 [V, 3, S, S] crops, label); views V are independent RandomResizedCrop + flip,
    made on the CPU (`decode.crop_views`: boxes from the header, DCT-domain reduced JPEG decode)."""

    def __init__(self, data: FileSet, seed: int, views: int, crop_size: int, crop_min: float, flip_p: float):
        self.data, self.seed, self.views = data, seed, views
        self.crop_size, self.crop_min, self.flip_p = crop_size, crop_min, flip_p

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        step, index = key
        with self.data.open_pil(index) as im:
            boxes, flips = view_boxes(self.seed, step, index, self.views, im.height, im.width, self.crop_min,
                                      self.flip_p)
            crops = crop_views(im, boxes, flips, self.crop_size)
        return torch.from_numpy(crops).permute(0, 3, 1, 2), int(self.data.labels[index])


class _FileBytes(Dataset[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]):
    """Item (step, index) -> (encoded bytes uint8 [n], label, boxes float [V, 4], flips bool [V]): what the
    training process needs to decode and crop the views on its device (`decode.device_crops`)."""

    def __init__(self, data: FileSet, seed: int, views: int, crop_min: float, flip_p: float):
        self.data, self.seed, self.views, self.crop_min, self.flip_p = data, seed, views, crop_min, flip_p

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        step, index = key
        height, width = self.data.size(index)
        boxes, flips = view_boxes(self.seed, step, index, self.views, height, width, self.crop_min, self.flip_p)
        return (self.data.file_bytes(index), int(self.data.labels[index]), torch.tensor(boxes, dtype=torch.float32),
                torch.tensor(flips, dtype=torch.bool))


def view_boxes(seed: int, step: int, index: int, views: int, height: int, width: int, crop_min: float,
               flip_p: float) -> tuple[list[Box], list[bool]]:
    """Each view's RandomResizedCrop box (top, left, h, w in pixels of the original image) and flip, from a
    generator seeded with (seed, step, index, view): the same whichever process or decoder makes the crop."""
    boxes: list[Box] = []
    flips: list[bool] = []
    for view in range(views):
        g = torch.Generator().manual_seed(derive_seed(seed, step, index, view))
        top, left, h, w = _ops.sample_boxes(1, height, width, (crop_min, 1.0), RATIO, g)[0].tolist()
        boxes.append((top, left, h, w))
        flips.append(float(torch.rand(1, generator=g)) < flip_p)
    return boxes, flips


def _collate_views(items: list[tuple[torch.Tensor, int]]) -> Batch:
    views = torch.stack([crops for crops, _ in items], dim=1)  # [V, B, 3, S, S]
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return (views[0] if views.shape[0] == 1 else views), labels


RawBatch = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]


def _collate_bytes(items: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]) -> RawBatch:
    """-> (encoded images, labels [B], boxes [V, B, 4], flips [V, B])."""
    labels = torch.tensor([label for _, label, _, _ in items], dtype=torch.int64)
    boxes = torch.stack([b for _, _, b, _ in items], dim=1)
    flips = torch.stack([f for _, _, _, f in items], dim=1)
    return [data for data, _, _, _ in items], labels, boxes, flips


class _Steps:
    """The batch sampler of a prefetching loader: step s's (step, index) pairs for s = start, start + 1, ..."""

    def __init__(self, stream: TrainStream, start: int) -> None:
        self.stream, self.start = stream, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in itertools.count(self.start):
            yield [(step, i) for i in self.stream.indices(step).tolist()]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers run in parallel already; intra-op threads would oversubscribe the CPU


class TrainStream:
    """Training batches for one process.

    ArraySet: `batch(step)` -> (uint8 [B, C, H, W] uncropped images, labels), both on `device`.
    File-backed sets: -> (view pairs [2, B, 3, S, S], labels) ([B, 3, S, S] with views=1): uint8 crops made on
    the CPU, or float [0, 1] crops made on the device (decode on the device); `TwoViewAugment.__call__`
    accepts every form.
    """

    def __init__(
        self,
        dataset: AnySet,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        *,
        crop_size: int | None = None,
        crop_min: float = 0.08,
        flip_p: float = 0.5,
        views: int = 2,
        num_workers: int = 0,
        decode: Literal["auto", "cpu", "device"] = "auto",
    ) -> None:
        """Args:
        batch_size: images per process per step (the global batch is batch_size x world_size).
        crop_size, crop_min, flip_p: the crop of file-backed sets (unused for in-memory sets).
        views: crops per image: 2 for pretraining, 1 for a linear probe's train transform.
        num_workers: DataLoader processes that decode (or, decoding on the device, read) file-backed sets.
        decode: where JPEGs are decoded: "device" = the training device, in batches (any device, the CPU
            included); "cpu" = in the workers; "auto" = the device when it is a GPU and every file is a JPEG.
        """
        assert 0 <= rank < world_size, f"rank {rank} outside world of {world_size}"
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.num_samples = len(dataset)
        self.iters_per_epoch = self.num_samples // (batch_size * world_size)  # drop_last
        if self.iters_per_epoch == 0:
            raise ValueError(f"{self.num_samples} images do not fill one global batch of {batch_size} x {world_size}")
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)
        self._perm_device = self._perm
        self._folder: _FileCrops | _FileBytes | None = None
        self.num_workers = num_workers
        self.decode_on_device = False
        self._pending: Iterator[Any] | None = None  # the prefetching loader's iterator
        self._next_step = -1  # the step it yields next
        if isinstance(dataset, ArraySet):
            # Once, up front: the whole set as uint8 NCHW on the device (Fashion-MNIST train is 47 MB).
            self._images = dataset.images.to(self.device).permute(0, 3, 1, 2).contiguous()
            self._labels = dataset.labels.to(self.device)
        else:
            if crop_size is None:
                raise ValueError("crop_size is required to stream an image folder")
            assert views in (1, 2), f"views must be 1 or 2, got {views}"
            self.crop_size = crop_size
            self.decode_on_device = decode == "device" or (
                decode == "auto" and self.device.type == "cuda" and dataset.is_jpeg)
            if self.decode_on_device:
                self._folder = _FileBytes(dataset, seed, views, crop_min, flip_p)
            else:
                self._folder = _FileCrops(dataset, seed, views, crop_size, crop_min, flip_p)

    @property
    def precropped(self) -> bool:
        """True when batches are crops (file-backed sets) rather than whole images."""
        return self._folder is not None

    def epoch_of(self, step: int) -> int:
        return step // self.iters_per_epoch

    def _permutation(self, epoch: int) -> None:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = torch.randperm(self.num_samples, generator=g)
            self._perm_device = self._perm
            if self._folder is None and self.device.type == "cuda":  # pinned: the copy does not wait for the GPU
                self._perm_device = self._perm.pin_memory().to(self.device, non_blocking=True)
            elif self._folder is None:
                self._perm_device = self._perm.to(self.device)
            self._epoch = epoch

    def _slice(self, step: int, perm_device: bool) -> torch.Tensor:
        self._permutation(self.epoch_of(step))
        perm = self._perm_device if perm_device else self._perm
        size = self.batch_size * self.world_size
        start = (step % self.iters_per_epoch) * size
        return perm[start + self.rank : start + size : self.world_size]

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices (CPU int64 [B]) of this rank's batch at `step`."""
        return self._slice(step, perm_device=False)

    def batch(self, step: int) -> Batch:
        if self._folder is None:
            idx = self._slice(step, perm_device=True)
            return self._images.index_select(0, idx), self._labels.index_select(0, idx)
        return self._finish(self._fetch(step))

    def _fetch(self, step: int) -> Any:
        """Step `step`'s collated items: made here without workers; else from the loader running ahead, which
        is (re)started at `step` when the caller asks for any step but the next one (a resume, a rollback)."""
        assert self._folder is not None
        collate = _collate_bytes if self.decode_on_device else _collate_views
        if self.num_workers == 0:
            return collate([self._folder[(step, i)] for i in self.indices(step).tolist()])  # type: ignore[misc]
        if self._pending is None or step != self._next_step:
            self.close()
            pin = self.device.type == "cuda"
            loader = DataLoader(
                self._folder,
                batch_sampler=_Steps(self, step),
                num_workers=self.num_workers,
                collate_fn=collate,
                pin_memory=pin,
                worker_init_fn=_worker_init,
                prefetch_factor=4,
            )
            self._pending = iter(loader)
        self._next_step = step + 1
        return next(self._pending)

    def _finish(self, raw: Any) -> Batch:
        pin = self.device.type == "cuda"
        if not self.decode_on_device:
            images, labels = raw
            return images.to(self.device, non_blocking=pin), labels.to(self.device, non_blocking=pin)
        data, labels, boxes, flips = raw
        views = device_crops(decode_batch(data, self.device), boxes, flips, self.crop_size)
        return (views[0] if views.shape[0] == 1 else views), labels.to(self.device, non_blocking=pin)

    def close(self) -> None:
        """Stop the prefetching loader's workers (they also stop when the stream is garbage collected)."""
        self._pending = None

    def iterate(self, start_step: int, num_steps: int) -> Iterator[tuple[int, Batch]]:
        """(step, batch) for steps start_step .. start_step + num_steps - 1, the next batch issued in advance."""
        end = start_step + num_steps
        if self._folder is not None:  # the loader's workers run ahead already
            for step in range(start_step, end):
                yield step, self.batch(step)
            return
        nxt = self.batch(start_step) if num_steps > 0 else None
        for step in range(start_step, end):
            assert nxt is not None
            cur = nxt
            if step + 1 < end:
                nxt = self.batch(step + 1)  # on a GPU the gather is queued before the caller's work
            yield step, cur

    def state_dict(self) -> dict[str, Any]:
        """What fixes the data order; with the step it reproduces every batch."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refuse to resume with a different data order (the restarted batches would not match)."""
        mine = self.state_dict()
        diff = {k: (v, mine.get(k)) for k, v in state.items() if mine.get(k) != v}
        if diff:
            raise ValueError(f"data order differs from the checkpoint's (saved, now): {diff}")


class _FolderEval(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, data: FileSet, crop_size: int) -> None:
        self.data, self.crop_size = data, crop_size

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return resize_center_crop(self.data.load(index), self.crop_size), int(self.data.labels[index])


class _FolderEvalBytes(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, data: FileSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.data.file_bytes(index), int(self.data.labels[index])


def _collate_eval_bytes(items: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [data for data, _ in items], torch.tensor([label for _, label in items], dtype=torch.int64)


def eval_batches(
    dataset: AnySet,
    batch_size: int,
    crop_size: int,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    decode: Literal["auto", "cpu", "device"] = "cpu",
) -> Iterator[Batch]:
    """The whole set in order, resized + centre-cropped + normalised with the dataset's stats (no drop_last).

    decode (file-backed sets): "cpu" decodes in the workers; "device" (or "auto" on a GPU with JPEG files)
    has the workers read bytes and decodes each batch on `device` in one call."""
    device = torch.device(device)
    mean: Stats = dataset.mean
    std: Stats = dataset.std
    if isinstance(dataset, ArraySet):
        for start in range(0, len(dataset), batch_size):
            images = dataset.images[start : start + batch_size].to(device).permute(0, 3, 1, 2)
            x = normalize(resize_center_crop(images, crop_size), mean, std)
            yield x, dataset.labels[start : start + batch_size].to(device)
        return
    on_device = decode == "device" or (decode == "auto" and device.type == "cuda" and dataset.is_jpeg)
    common: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers,
                              "pin_memory": device.type == "cuda",
                              "worker_init_fn": _worker_init if num_workers > 0 else None}
    if on_device:
        for data, labels in DataLoader(_FolderEvalBytes(dataset), collate_fn=_collate_eval_bytes, **common):
            images = torch.stack([resize_center_crop(im, crop_size) for im in decode_batch(data, device)])
            yield normalize(images, mean, std), labels.to(device, non_blocking=True)
        return
    for images, labels in DataLoader(_FolderEval(dataset, crop_size), **common):
        yield normalize(images.to(device, non_blocking=True), mean, std), labels.to(device, non_blocking=True)
