"""Where one engine training step spends its time: each phase's host and device time, from torch.profiler.

    python bench/profile_step.py --set model.arch=vit_small_p16 --set data.crop_size=224 --set optim.batch_size=256

Builds the Pretrainer exactly as `bench/engine.py` does, runs warm-up steps, then profiles `--steps` steps
with the phases of `Pretrainer.train_step` marked (data, augment, forward, backward, grad norms, optimizer,
momentum update). Prints the phases, the top kernels by device time, and the step's wall time against the
device's busy time: a step whose wall time is far above its device time is bound by the host (launches,
syncs), not by the GPU.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from mocov3_core.presets import build_spec
from mocov3_core.train.loop import Pretrainer

PHASES = ("data", "augment", "forward", "backward", "grad_norms", "optimizer", "momentum")


def mark(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with record_function(f"phase:{name}"):
            return fn(*args, **kwargs)

    return wrapped


def instrument(trainer: Pretrainer) -> None:
    trainer.stream.batch = mark("data", trainer.stream.batch)  # type: ignore[method-assign]
    trainer.augment = mark("augment", trainer.augment)  # type: ignore[assignment]
    trainer.ddp.forward = mark("forward", trainer.ddp.forward)  # type: ignore[method-assign]
    trainer.grad_norms = mark("grad_norms", trainer.grad_norms)  # type: ignore[assignment]
    trainer.optimizer.step = mark("optimizer", trainer.optimizer.step)  # type: ignore[method-assign]
    trainer.model.update_momentum = mark("momentum", trainer.model.update_momentum)  # type: ignore[method-assign]
    original = torch.Tensor.backward

    def backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        with record_function("phase:backward"):
            original(self, *args, **kwargs)

    torch.Tensor.backward = backward  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="fmnist_small")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    cfg = build_spec("pretrain", args.preset, args.set)
    trainer = Pretrainer(cfg, "/tmp/mocolab-bench-profile")
    trainer.model.train()
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for step in range(args.warmup):
        trainer.train_step(step)
    sync()
    instrument(trainer)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        rows = [trainer.train_step(args.warmup + i)[0] for i in range(args.steps)]
        torch.stack(rows).cpu()
        sync()
    wall = (time.perf_counter() - t0) / args.steps * 1e3
    events = prof.key_averages()
    dev = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    print(f"{cfg.model.arch} at {cfg.data.crop_size}px, batch {cfg.optim.batch_size}, {trainer.precision}, "
          f"{torch.cuda.get_device_name() if cuda else 'CPU'}; {args.steps} profiled steps "
          f"(the profiler adds overhead: compare phases, not totals with bench/engine.py)")
    print(f"wall per step: {wall:.1f} ms")
    print(f"{'phase':<12}{'host ms/step':>14}{'device ms/step':>16}")
    by_name = {e.key: e for e in events}
    for name in PHASES:
        e = by_name.get(f"phase:{name}")
        if e is None:
            continue
        print(f"{name:<12}{e.cpu_time_total / 1e3 / args.steps:>14.2f}{getattr(e, dev) / 1e3 / args.steps:>16.2f}")
    if cuda:
        # kernels and copies only: the phases' own GPU ranges and the "Command Buffer Full" waits overlap them
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.key.startswith("phase:") and e.key != "Command Buffer Full"]
        busy = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in kernels)
        print(f"device busy per step: {busy / 1e3 / args.steps:.1f} ms of {wall:.1f} ms wall "
              f"({100 * busy / 1e3 / args.steps / wall:.0f}%)")
        sort = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
        print(events.table(sort_by=sort, row_limit=args.top, max_name_column_width=70))
    else:
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=70))


if __name__ == "__main__":
    main()
