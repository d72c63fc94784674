"""Training-step throughput: mocolab's engine against a plain Algorithm 1 as the official code runs it.

Both sides train the same MoCo v3 model (same preset, batch and data: Fashion-MNIST from Debian's
package) for the same number of timed steps after a warm-up, augmentation included.

baseline ("official"): per-image PIL augmentation (torchvision transforms on PIL images) in DataLoader
    workers, a separate forward per view for each encoder (4 forwards), the momentum update as a Python
    loop over parameters, a for-loop AdamW, a loss.item() every step (the official meter), fp16 autocast +
    GradScaler on CUDA and fp32 on the CPU, cudnn.benchmark on.
engine: batched augmentation on the training device, one forward of both views per encoder with per-view
    BN, foreach EMA, fused AdamW with on-device skip of non-finite steps, metrics read back every
    `train.log_every` steps, bf16 autocast on GPUs that have it.

    python bench/engine.py                       # CPU: the fmnist_small preset at batch 256
    python bench/engine.py --set model.arch=vit_small_p16 --set data.crop_size=224 --set optim.batch_size=256
    python bench/engine.py --no-baseline --set model.arch=vit_base_p16 ...   # the engine alone
Prints images/s of each and the ratio engine / baseline, and beside images/s the model FLOPs of one step
(`mocov3_core/train/flops.py`: FlopCounterMode over the framework's real forward and backward, the momentum
encoder's forward included, counted once before timing), the achieved TFLOP/s and the MFU against the GPU's
dense peak for the precision each side runs (n/a on a CPU). Both sides train the same model, so one count
serves both; the augmentation's time is in each step, its arithmetic is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from typing import Any

import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import DataLoader, Dataset

from mocov3_core.config import PretrainConfig
from mocov3_core.data import load_dataset
from mocov3_core.frameworks import MoCo
from mocov3_core.moco import symmetric_loss
from mocov3_core.presets import build_spec
from mocov3_core.train.flops import achieved, device_peak, step_flops
from mocov3_core.train.loop import Pretrainer
from mocov3_core.train.schedules import learning_rate, momentum, scaled_lr


# ---------------------------------------------------------------------------------------------- baseline
class PilBlur:
    def __init__(self, sigma: tuple[float, float]) -> None:
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class PilSolarize:
    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img)


def pil_pipeline(cfg: Any, view: int, mean: Any, std: Any) -> T.Compose:
    a = cfg.augment
    sigma = tuple(s * cfg.data.crop_size / 224 for s in a.blur_sigma)
    return T.Compose([
        T.RandomResizedCrop(cfg.data.crop_size, scale=(a.crop_min, 1.0)),
        T.RandomApply([T.ColorJitter(*a.jitter)], p=a.jitter_p),
        T.RandomGrayscale(p=a.grayscale_p),
        T.RandomApply([PilBlur(sigma)], p=a.blur_p[view]),
        T.RandomApply([PilSolarize()], p=a.solarize_p[view]),
        T.RandomHorizontalFlip(p=a.flip_p),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


class TwoCropsPil(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, t1: T.Compose, t2: T.Compose) -> None:
        self.images, self.labels, self.t1, self.t2 = images.numpy(), labels, t1, t2

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        arr = self.images[i]
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).convert("RGB")
        return self.t1(img), self.t2(img), int(self.labels[i])


def run_baseline(cfg: Any, device: torch.device, warmup: int, steps: int, workers: int) -> float:
    data = load_dataset(cfg.data, train=True)
    ds = TwoCropsPil(data.images, data.labels, pil_pipeline(cfg, 0, data.mean, data.std),
                     pil_pipeline(cfg, 1, data.mean, data.std))
    loader = DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(cfg.train.seed)
    torch.backends.cudnn.benchmark = True  # as main_moco.py sets it (the engine sets its own in its Pretrainer)
    model = MoCo(cfg.model, cfg.moco, cfg.data.crop_size).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=cfg.optim.weight_decay, foreach=False)
    fp16 = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    online = list(model.base.parameters())
    target = list(model.momentum.parameters())
    ipe = len(loader)
    peak = scaled_lr(cfg.optim.base_lr, cfg.optim.batch_size)
    it = iter(loader)
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x1, x2, _ = next(it)
        x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
        t = step / ipe
        for g in opt.param_groups:
            g["lr"] = learning_rate(t, peak, cfg.optim.warmup_epochs, cfg.optim.epochs)
        m = momentum(t, cfg.moco.momentum, cfg.optim.epochs)
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            q1 = model.predictor(model.base(x1)[1])
            q2 = model.predictor(model.base(x2)[1])
            with torch.no_grad():
                for pk, pq in zip(target, online, strict=True):  # the official per-parameter EMA
                    pk.data = pk.data * m + pq.data * (1.0 - m)
                k1 = model.momentum(x1)[1]
                k2 = model.momentum(x2)[1]
            loss = symmetric_loss(q1, q2, k1, k2, cfg.moco.temperature)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        loss.item()  # the official AverageMeter reads the loss every step
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.optim.batch_size / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- engine
def run_engine(cfg: Any, warmup: int, steps: int) -> tuple[float, Pretrainer]:
    trainer = Pretrainer(cfg, "/tmp/mocolab-bench-engine")
    trainer.model.train()
    pending = []
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        pending.append(trainer.train_step(step)[0])
        if len(pending) == cfg.train.log_every:
            torch.stack(pending).cpu()  # the loop's one readback per interval
            pending = []
    if pending:
        torch.stack(pending).cpu()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.optim.batch_size / (time.perf_counter() - t0), trainer


def signal_cost(trainer: Pretrainer, steps: int) -> float:
    """Seconds per step of the update-to-weight ratios (`train/signals.py`: the copy before the optimizer step,
    the subtraction and norms after it), timed alone: the part of every engine step the SSL signals add."""
    ratios = trainer.update_ratios
    for _ in range(2):  # warm-up
        ratios.snapshot()
        ratios()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        ratios.snapshot()
        ratios()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def throughput(images_per_s: float, batch: int, flops: int,
               peak: tuple[str, float] | None) -> tuple[float, float | None]:
    """images/s -> (achieved TFLOP/s, MFU or None)."""
    return achieved(flops, batch / images_per_s, peak[1] if peak else None)


def row(label: str, images_per_s: float, tflops: float, mfu: float | None) -> str:
    return f"  {label:<40}{images_per_s:>10.1f}{tflops:>10.3f}{(f'{100 * mfu:.1f}%' if mfu is not None else 'n/a'):>8}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="fmnist_small")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                    help="baseline DataLoader workers (default: one per CPU core)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--no-baseline", action="store_true", help="time the engine only")
    args = ap.parse_args()
    cfg = build_spec("pretrain", args.preset, ["monitor.knn_every=0", *args.overrides])
    assert isinstance(cfg, PretrainConfig)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    what = (f"{cfg.model.arch} at {cfg.data.crop_size}px, batch {cfg.optim.batch_size}, "
            f"{'GPU ' + torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'} "
            f"({os.cpu_count()} cores, torch {torch.__version__}, {platform.processor() or platform.machine()})")
    print(f"bench/engine.py: {what}; {args.warmup} warm-up + {args.steps} timed steps each")
    t0 = time.perf_counter()
    flops = step_flops(cfg).total  # the whole batch on one device: the step both sides time
    b = cfg.optim.batch_size
    print(f"  model FLOPs per step: {flops / 1e12:.3f} TFLOP ({flops / b / 1e9:.2f} GFLOP per image, both views; "
          f"FlopCounterMode on the meta device, counted in {time.perf_counter() - t0:.1f} s)")
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
    print(f"  {'':<40}{'images/s':>10}{'TFLOP/s':>10}{'MFU':>8}")
    out: dict[str, Any] = {"setup": what, "step_flops": flops}
    base = None
    if not args.no_baseline:
        base = run_baseline(cfg, device, args.warmup, args.steps, args.workers)
        base_peak = device_peak(gpu, "fp16") if gpu else None  # the official loop's fp16 autocast
        tf, mfu = throughput(base, b, flops, base_peak)
        print(row("baseline (official-style Algorithm 1)", base, tf, mfu))
        out.update(baseline_imgs_per_s=base, baseline_tflops=tf, baseline_mfu=mfu)
    ours, trainer = run_engine(cfg, args.warmup, args.steps)
    tf, mfu = throughput(ours, b, flops, trainer.peak)
    label = f"engine ({trainer.precision}{', compiled' if trainer.compiled else ''})"
    print(row(label, ours, tf, mfu))
    out.update(engine_imgs_per_s=ours, engine_tflops=tf, engine_mfu=mfu, precision=trainer.precision,
               compiled=trainer.compiled, peak=list(trainer.peak) if trainer.peak else None)
    cost, step_s = signal_cost(trainer, max(args.steps, 10)), b / ours
    print(f"  update-to-weight ratios: {1e3 * cost:.2f} ms of a {1e3 * step_s:.1f} ms step "
          f"({100 * cost / step_s:.2f}% of the engine's step, included in its images/s)")
    out.update(update_ratio_ms=1e3 * cost, update_ratio_pct=100 * cost / step_s)
    peak = f"{trainer.peak[0]} {trainer.peak[1]:g} TFLOP/s dense" if trainer.peak else "n/a (no known GPU peak)"
    print(f"  peak for the engine's precision: {peak}")
    if base is not None:
        print(f"  ratio engine / baseline: {ours / base:.2f}x")
        out["ratio"] = ours / base
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
