"""TrainStream: data order from (seed, step) only, resumable mid-epoch, sharded like DistributedSampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler, TensorDataset

from mocov3_core.config import AugmentConfig
from mocov3_core.data import ArraySet, ImageFolderSet, TrainStream, TwoViewAugment, derive_seed, eval_batches


def indexed_set(n: int, channels: int = 1) -> ArraySet:
    """Image i is filled with the value i, so a batch's pixels name its indices."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 6, 5, channels).contiguous()
    return ArraySet(images, torch.arange(n) % 7, [str(i) for i in range(7)], (0.5,) * 3, (0.25,) * 3)


def test_batches_follow_indices() -> None:
    data = indexed_set(50)
    stream = TrainStream(data, batch_size=8, seed=3)
    assert stream.iters_per_epoch == 6 and not stream.precropped  # 50 // 8, drop_last
    images, labels = stream.batch(4)
    assert images.shape == (8, 1, 6, 5) and images.dtype == torch.uint8
    idx = stream.indices(4)
    assert images[:, 0, 0, 0].tolist() == idx.tolist() and labels.tolist() == (idx % 7).tolist()


def test_restart_mid_epoch_reproduces_batches() -> None:
    data = indexed_set(103)
    first = TrainStream(data, batch_size=8, seed=11, rank=1, world_size=2)
    seen = {step: first.batch(step) for step in range(0, 3 * first.iters_per_epoch)}
    resumed = TrainStream(data, batch_size=8, seed=11, rank=1, world_size=2)  # a fresh process, resumed at 9
    for step, (images, labels) in resumed.iterate(9, 8):
        assert torch.equal(images, seen[step][0]) and torch.equal(labels, seen[step][1])
    assert [s for s, _ in resumed.iterate(9, 3)] == [9, 10, 11]


def test_epochs_reshuffle() -> None:
    stream = TrainStream(indexed_set(64), batch_size=16, seed=0)
    epochs = [torch.cat([stream.indices(e * 4 + s) for s in range(4)]) for e in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(64))  # each epoch visits every image once
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    assert not torch.equal(TrainStream(indexed_set(64), 16, seed=1).indices(0), epochs[0][:16])


def test_rank_shards_disjoint_covering_and_like_distributed_sampler() -> None:
    n, batch, world, seed = 96, 4, 3, 5
    data = indexed_set(n)
    streams = [TrainStream(data, batch, seed, rank=r, world_size=world) for r in range(world)]
    iters = streams[0].iters_per_epoch
    assert iters == n // (batch * world)
    for epoch in range(2):
        shards = [torch.cat([s.indices(epoch * iters + i) for i in range(iters)]) for s in streams]
        flat = torch.cat(shards).tolist()
        assert len(set(flat)) == len(flat) == n  # disjoint and covering
        for rank, shard in enumerate(shards):
            items = TensorDataset(torch.arange(n))
            sampler: DistributedSampler[int] = DistributedSampler(items, world, rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            assert shard.tolist() == list(sampler)


def test_state_dict_guards_resume() -> None:
    stream = TrainStream(indexed_set(40), batch_size=8, seed=2)
    stream.load_state_dict(stream.state_dict())
    with pytest.raises(ValueError, match="batch_size"):
        stream.load_state_dict({**stream.state_dict(), "batch_size": 16})
    with pytest.raises(ValueError, match="do not fill one global batch"):
        TrainStream(indexed_set(10), batch_size=8, seed=0, world_size=2)


def test_derive_seed() -> None:
    seeds = {derive_seed(0, step, index, view) for step in range(20) for index in range(20) for view in range(2)}
    assert len(seeds) == 800 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)


def folder(root: Path, n: int = 12) -> ImageFolderSet:
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (10 + i, 14 - i % 4, 3), dtype=np.uint8)  # sizes differ
        Image.fromarray(pixels).save(root / f"c{i % 3}" / f"{i}.png")
    return ImageFolderSet(root)


def test_image_folder_stream(tmp_path: Path) -> None:
    data = folder(tmp_path)
    stream = TrainStream(data, batch_size=4, seed=7, crop_size=8, num_workers=0)
    assert stream.precropped and stream.iters_per_epoch == 3
    views, labels = stream.batch(4)
    assert views.shape == (2, 4, 3, 8, 8) and views.dtype == torch.uint8
    assert labels.tolist() == data.labels[stream.indices(4)].tolist()
    assert not torch.equal(views[0], views[1])  # independent crops per view
    again = TrainStream(data, batch_size=4, seed=7, crop_size=8)
    assert torch.equal(again.batch(4)[0], views)
    # A worker process decodes and crops the same batches as the main process.
    workers = TrainStream(data, batch_size=4, seed=7, crop_size=8, num_workers=1)
    for step, (v, lab) in workers.iterate(2, 3):
        expected = stream.batch(step)
        assert torch.equal(v, expected[0]) and torch.equal(lab, expected[1])
    x1, x2 = TwoViewAugment(AugmentConfig(), 8, data.mean, data.std)(views, torch.Generator().manual_seed(0))
    assert x1.shape == x2.shape == (4, 3, 8, 8)
    single = TrainStream(data, batch_size=4, seed=7, crop_size=8, views=1)
    assert single.batch(0)[0].shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="crop_size is required"):
        TrainStream(data, batch_size=4, seed=7)


def test_eval_batches(tmp_path: Path) -> None:
    data = indexed_set(10, channels=3)
    batches = list(eval_batches(data, batch_size=4, crop_size=5))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]  # in order, nothing dropped
    x = torch.cat([b[0] for b in batches])
    assert x.shape == (10, 3, 5, 5) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0, 0, 0], (torch.arange(10) / 255 - 0.5) / 0.25)
    images = list(eval_batches(folder(tmp_path, n=5), batch_size=2, crop_size=8))
    assert [tuple(b[0].shape) for b in images] == [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stream_matches_cpu_without_waiting() -> None:
    data = indexed_set(100)
    cpu = TrainStream(data, 8, seed=1)
    gpu = TrainStream(data, 8, seed=1, device="cuda")
    gpu.batch(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = [gpu.batch(step) for step in range(1, 30)]  # crosses two epochs: new permutations
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for step, (images, labels) in enumerate(batches, start=1):
        assert torch.equal(images.cpu(), cpu.batch(step)[0]) and torch.equal(labels.cpu(), cpu.batch(step)[1])
