"""Data-path throughput: the official MoCo v3 input pipeline against mocov3_core's, on realistic JPEGs.

Makes an ImageNet-like image folder on the fly (10 classes, each cut from one of scikit-image's bundled
photographs with random crops, scales, flips and colour shifts, saved at about 500x375, JPEG quality 90;
without scikit-image, smooth random colour fields), prepares its packed copy once (timed separately), then
measures in one run, for the same batch size, workers and number of images, warm-up batches excluded:

  (a) official: torchvision ImageFolder + the paper's per-image PIL transforms for both views
      (RandomResizedCrop(224, scale=(0.08, 1)), ColorJitter p 0.8, grayscale 0.2, PIL Gaussian blur p 1.0 / 0.1,
      solarize p 0 / 0.2, flip, ToTensor, Normalize) in a DataLoader with W workers;
  (b) ours, image folder: TrainStream (CPU crops, DCT-reduced decode where the crop allows) + the batched
      TwoViewAugment on the training device;
  (c) ours, packed copy (short side 256): the same;
  (d) with --device cuda, (c) again with decode on the device (nvJPEG) and the augmentation on the GPU.

An image counts when both of its views are ready for the model (normalised float tensors on the device).

    python bench/data.py                      # CPU, about 2-3 minutes on 2 cores
    python bench/data.py --device cuda --workers 16 --per-class 200 --batch 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import pil_pipeline  # noqa: E402  (bench/engine.py: the official per-image transforms)

from mocov3_core.config import DataConfig, PrepareConfig  # noqa: E402
from mocov3_core.data import TrainStream, TwoViewAugment, load_dataset  # noqa: E402
from mocov3_core.data.prepare import run_prepare  # noqa: E402
from mocov3_core.presets import build_spec  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
          "camera", "brick", "gravel")


def _photos() -> list[np.ndarray]:
    """scikit-image's bundled photographs as RGB (gray ones tinted), or smooth colour fields without it."""
    try:
        import skimage.data
    except ImportError:
        rng = np.random.default_rng(0)
        fields = []
        for _ in PHOTOS:
            low = rng.random((6, 8, 3))
            fields.append(np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((800, 600),
                                     Image.Resampling.BICUBIC)))
        return fields
    out = []
    for k, name in enumerate(PHOTOS):
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            tint = np.array([1.0, 0.85 + 0.05 * k % 3, 0.7])
            image = (image[..., None] * tint).clip(0, 255).astype(np.uint8)
        out.append(image[..., :3])
    return out


def make_folder(root: Path, per_class: int, seed: int = 0) -> float:
    """root/train/<class>/<i>.jpg: ImageNet-like JPEGs (about 500x375, quality 90). -> seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    for label, photo in enumerate(_photos()):
        folder = root / "train" / f"n{label:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = Image.fromarray(photo)
        for i in range(per_class):
            w0, h0 = base.size
            scale = rng.uniform(0.35, 1.0)
            cw, ch = max(32, int(w0 * scale)), max(32, int(h0 * scale * rng.uniform(0.75, 1.33)))
            cw, ch = min(cw, w0), min(ch, h0)
            left, top = rng.integers(0, w0 - cw + 1), rng.integers(0, h0 - ch + 1)
            size = (500, 375) if rng.random() < 0.8 else (375, 500)
            size = (size[0] + int(rng.integers(-40, 41)), size[1] + int(rng.integers(-30, 31)))
            im = base.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            x = np.asarray(im, dtype=np.float32) * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20, 3)
            x += rng.normal(0, 3, x.shape)  # sensor noise: real photos do not compress like smooth renders
            Image.fromarray(x.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    return time.perf_counter() - t0


class TwoViews(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """The official TwoCropsTransform over an ImageFolder: both views from one PIL decode."""

    def __init__(self, root: Path, t1: Any, t2: Any) -> None:
        self.folder = ImageFolder(str(root))
        self.t1, self.t2 = t1, t2

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, label = self.folder[i]
        return self.t1(image), self.t2(image), label


def run_official(root: Path, crop: int, batch: int, workers: int, warmup: int, batches: int,
                 device: torch.device) -> float:
    cfg = build_spec("pretrain", None, [f"data.crop_size={crop}"])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    data = TwoViews(root, pil_pipeline(cfg, 0, mean, std), pil_pipeline(cfg, 1, mean, std))
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    it = iter(loader)
    for _ in range(warmup):
        x1, x2, _ = next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        x1, x2, _ = next(it)
        x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - t0)


def run_ours(data: Any, crop: int, batch: int, workers: int, warmup: int, batches: int, device: torch.device,
             decode: str, augmented: bool = True) -> float:
    cfg = build_spec("pretrain", None, [f"data.crop_size={crop}"])
    stream = TrainStream(data, batch, seed=0, device=device, crop_size=crop, num_workers=workers,
                         decode=decode)  # type: ignore[arg-type]
    views = TwoViewAugment(cfg.augment, crop, data.mean, data.std)
    gen = torch.Generator(device=device)

    def augment(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return views(images, generator) if augmented else (images[0], images[1])

    for step in range(warmup):
        x1, x2 = augment(stream.batch(step)[0], gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for step in range(warmup, warmup + batches):
        x1, x2 = augment(stream.batch(step)[0], gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    stream.close()
    return batches * batch / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=60, help="images per class (10 classes)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="DataLoader workers, all sides")
    ap.add_argument("--warmup", type=int, default=3, help="batches before timing starts (worker start-up)")
    ap.add_argument("--batches", type=int, default=15, help="timed batches per side")
    ap.add_argument("--rounds", type=int, default=2, help="each side runs this often, interleaved; best is kept")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of this process (ours augments here; "
                    "the workers use the other cores)")
    ap.add_argument("--device", default="cpu", help="where the views end up (and ours augments): cpu or cuda")
    ap.add_argument("--dir", type=Path, default=None, help="keep the generated folder and packed copy here")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    need = (args.warmup + args.batches) * args.batch
    if args.per_class * 10 < need:
        ap.error(f"--per-class {args.per_class} gives {args.per_class * 10} images; the timing needs {need}")
    work = args.dir or Path(tempfile.mkdtemp(prefix="mocolab-bench-data-"))
    src, out = work / "folder", work / "packed"
    what = (f"{'GPU ' + torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}; batch {args.batch}, "
            f"{args.workers} workers, {args.threads} main thread(s), crop {args.crop}, "
            f"{args.warmup} warm-up + {args.batches} timed batches, "
            f"best of {args.rounds}")
    print(f"bench/data.py: {what}")
    try:
        if not (src / "train").is_dir():
            seconds = make_folder(src, args.per_class)
            print(f"  generated {args.per_class * 10} JPEGs in {seconds:.1f} s")
        files = sorted((src / "train").rglob("*.jpg"))
        sizes = [f.stat().st_size for f in files]
        with Image.open(files[0]) as im:
            print(f"  folder: {len(files)} JPEGs, mean {np.mean(sizes) / 1024:.0f} KiB, e.g. {im.size[0]}x{im.size[1]}")
        t0 = time.perf_counter()
        info = run_prepare(PrepareConfig(data=DataConfig(dataset="imagefolder", root=str(src)), out=str(out),
                                         workers=args.workers, samples=0, stats_images=len(files)), None)
        prep_s = time.perf_counter() - t0
        p = info["packed"]
        print(f"  prepare (inspect + pack + verify, {args.workers} workers): {prep_s:.1f} s, "
              f"{len(files) / prep_s:.0f} images/s; packed {p['bytes'] / 2**20:.1f} MiB "
              f"({p['bytes'] / len(files) / 1024:.0f} KiB/image vs {np.mean(sizes) / 1024:.0f} KiB source)")
        folder = load_dataset(DataConfig(dataset="imagefolder", root=str(src)), train=True)
        packed_set = load_dataset(DataConfig(dataset="packed", root=str(out)), train=True)
        sides: dict[str, Any] = {
            "official": lambda: run_official(src / "train", args.crop, args.batch, args.workers, args.warmup,
                                             args.batches, device),
            "ours-folder": lambda: run_ours(folder, args.crop, args.batch, args.workers, args.warmup, args.batches,
                                            device, "cpu"),
            "ours-packed": lambda: run_ours(packed_set, args.crop, args.batch, args.workers, args.warmup,
                                            args.batches, device, "cpu"),
        }
        # The loader alone (crops, no colour ops): what the CPU does when the views are augmented on a GPU.
        sides["ours-folder-loader"] = lambda: run_ours(folder, args.crop, args.batch, args.workers, args.warmup,
                                                       args.batches, device, "cpu", augmented=False)
        sides["ours-packed-loader"] = lambda: run_ours(packed_set, args.crop, args.batch, args.workers, args.warmup,
                                                       args.batches, device, "cpu", augmented=False)
        if device.type == "cuda":
            sides["ours-packed-nvjpeg"] = lambda: run_ours(packed_set, args.crop, args.batch, args.workers,
                                                           args.warmup, args.batches, device, "device")
            sides["ours-folder-nvjpeg"] = lambda: run_ours(folder, args.crop, args.batch, args.workers,
                                                           args.warmup, args.batches, device, "device")
        best: dict[str, float] = {}
        for r in range(args.rounds):
            for name, run in sides.items():
                rate = run()
                best[name] = max(best.get(name, 0.0), rate)
                print(f"  round {r + 1} {name:20s} {rate:8.1f} images/s", flush=True)
        base = best["official"]
        print("\n| pipeline | images/s | vs official |\n|---|---|---|")
        for name, rate in best.items():
            print(f"| {name} | {rate:.1f} | {rate / base:.2f}x |")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"setup": what, "prepare_s": prep_s, "images": len(files), "images_per_s": best,
                           "ratios": {k: v / base for k, v in best.items()}}, fh, indent=1)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
