"""Deterministic, resumable training batches.

The data order is a pure function of (seed, step): epoch e uses the permutation of a generator seeded
with seed + e, split into global batches of batch_size x world_size, and rank r takes every world_size-th
index of its global batch (what DistributedSampler followed by drop_last batching gives). So `batch(step)`
is the same whether or not the run was restarted, and a checkpoint only needs the step.

In-memory sets (`ArraySet`) go to the device once as uint8 NCHW and a batch is one gather there; the
augmentation then runs on the device. Image folders are decoded, cropped and flipped per image in
DataLoader workers (sizes differ per file), with per-image seeds derived from (seed, step, index, view).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mocov3_core.data.augment import normalize, random_resized_crop, resize_center_crop
from mocov3_core.data.readers import ArraySet, ImageFolderSet, Stats

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


class _FolderCrops(Dataset[tuple[torch.Tensor, int]]):
    """Item (step, index) -> (uint8 [V, 3, S, S] crops, label); views V are independent RandomResizedCrop + flip."""

    def __init__(self, data: ImageFolderSet, seed: int, views: int, crop_size: int, crop_min: float, flip_p: float):
        self.data, self.seed, self.views = data, seed, views
        self.crop_size, self.crop_min, self.flip_p = crop_size, crop_min, flip_p

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        step, index = key
        image = self.data.load(index)
        crops = []
        for view in range(self.views):
            g = torch.Generator().manual_seed(derive_seed(self.seed, step, index, view))
            crops.append(random_resized_crop(image, self.crop_size, self.crop_min, self.flip_p, g))
        return torch.stack(crops), int(self.data.labels[index])


def _collate_views(items: list[tuple[torch.Tensor, int]]) -> Batch:
    views = torch.stack([crops for crops, _ in items], dim=1)  # [V, B, 3, S, S]
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return (views[0] if views.shape[0] == 1 else views), labels


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers run in parallel already; intra-op threads would oversubscribe the CPU


class TrainStream:
    """Training batches for one process.

    ArraySet: `batch(step)` -> (uint8 [B, C, H, W] uncropped images, labels), both on `device`.
    ImageFolderSet: -> (uint8 [2, B, 3, S, S] crop+flipped view pairs, labels) ([B, 3, S, S] with views=1);
    `TwoViewAugment.__call__` accepts either form.
    """

    def __init__(
        self,
        dataset: ArraySet | ImageFolderSet,
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
    ) -> None:
        """Args:
        batch_size: images per process per step (the global batch is batch_size x world_size).
        crop_size, crop_min, flip_p: the CPU crop of image folders (unused for in-memory sets).
        views: crops per image folder image: 2 for pretraining, 1 for a linear probe's train transform.
        num_workers: decoding processes for image folders.
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
        self._folder: _FolderCrops | None = None
        self.num_workers = num_workers
        if isinstance(dataset, ArraySet):
            # Once, up front: the whole set as uint8 NCHW on the device (Fashion-MNIST train is 47 MB).
            self._images = dataset.images.to(self.device).permute(0, 3, 1, 2).contiguous()
            self._labels = dataset.labels.to(self.device)
        else:
            if crop_size is None:
                raise ValueError("crop_size is required to stream an image folder")
            assert views in (1, 2), f"views must be 1 or 2, got {views}"
            self._folder = _FolderCrops(dataset, seed, views, crop_size, crop_min, flip_p)

    @property
    def precropped(self) -> bool:
        """True when batches are crops made on the CPU (image folders) rather than whole images."""
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
        images, labels = _collate_views([self._folder[(step, i)] for i in self.indices(step).tolist()])
        return images.to(self.device), labels.to(self.device)

    def iterate(self, start_step: int, num_steps: int) -> Iterator[tuple[int, Batch]]:
        """(step, batch) for steps start_step .. start_step + num_steps - 1, the next batch issued in advance."""
        if self._folder is not None:
            yield from self._iterate_folder(start_step, num_steps)
            return
        end = start_step + num_steps
        nxt = self.batch(start_step) if num_steps > 0 else None
        for step in range(start_step, end):
            assert nxt is not None
            cur = nxt
            if step + 1 < end:
                nxt = self.batch(step + 1)  # on a GPU the gather is queued before the caller's work
            yield step, cur

    def _iterate_folder(self, start_step: int, num_steps: int) -> Iterator[tuple[int, Batch]]:
        steps = range(start_step, start_step + num_steps)
        sampler = [[(s, i) for i in self.indices(s).tolist()] for s in steps]
        pin = self.device.type == "cuda"
        loader = DataLoader(
            self._folder,  # type: ignore[arg-type]
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_collate_views,
            pin_memory=pin,
            worker_init_fn=_worker_init if self.num_workers > 0 else None,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )
        pending: tuple[int, Batch] | None = None
        for step, (images, labels) in zip(steps, loader, strict=True):
            ready = step, (images.to(self.device, non_blocking=pin), labels.to(self.device, non_blocking=pin))
            if pending is not None:
                yield pending
            pending = ready  # the copy of this batch overlaps the caller's work on the previous one
        if pending is not None:
            yield pending

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
    def __init__(self, data: ImageFolderSet, crop_size: int) -> None:
        self.data, self.crop_size = data, crop_size

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return resize_center_crop(self.data.load(index), self.crop_size), int(self.data.labels[index])


def eval_batches(
    dataset: ArraySet | ImageFolderSet,
    batch_size: int,
    crop_size: int,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> Iterator[Batch]:
    """The whole set in order, resized + centre-cropped + normalised with the dataset's stats (no drop_last)."""
    device = torch.device(device)
    mean: Stats = dataset.mean
    std: Stats = dataset.std
    if isinstance(dataset, ArraySet):
        for start in range(0, len(dataset), batch_size):
            images = dataset.images[start : start + batch_size].to(device).permute(0, 3, 1, 2)
            x = normalize(resize_center_crop(images, crop_size), mean, std)
            yield x, dataset.labels[start : start + batch_size].to(device)
        return
    loader = DataLoader(
        _FolderEval(dataset, crop_size),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )
    for images, labels in loader:
        yield normalize(images.to(device, non_blocking=True), mean, std), labels.to(device, non_blocking=True)
