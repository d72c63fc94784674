"""Where one engine training step spends its time: each phase's host and device time, from torch.profiler.

    python bench/profile_step.py --set model.arch=vit_small_p16 --set data.crop_size=224 --set optim.batch_size=256

Builds the Pretrainer exactly as `bench/engine.py` does, runs warm-up steps, then profiles `--steps` steps
with the phases of `Pretrainer.train_step` marked (data, augment, forward, backward, grad norms, optimizer,
momentum update). Prints the phases, where the time of the step goes by kind of work (matrix multiplies and
convolutions, attention, the elementwise/norm "glue" between them, per phase), the top ops or kernels, and
the step's wall time against the device's busy time: a step whose wall time is far above its device time is
bound by the host (launches, syncs), not by the GPU. `--out FILE` also writes the report there.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import time
from collections import defaultdict
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


# What an op or kernel does, by its name: aten ops on the CPU; cuBLAS/CUTLASS, flash/cuDNN-attention and triton
# kernels on a GPU. Anything else is glue: norms, activations, residual adds, copies, casts, concatenations.
KINDS = (
    ("attention", re.compile(r"scaled_dot_product|flash|fmha|attention|_efficient_attention", re.I)),
    ("matmul", re.compile(r"^aten::(mm|addmm|bmm|baddbmm|_convolution|convolution|mkldnn_convolution|"
                          r"convolution_backward|_mkldnn_conv|mkldnn_linear)|gemm|xmma|cutlass|sm\d+_|"
                          r"cublas|wgrad|dgrad|implicit_convolve|conv2d_|nchwToNhwc|nhwcToNchw", re.I)),
)


def kind_of(name: str) -> str:
    return next((kind for kind, pattern in KINDS if pattern.search(name)), "glue")


def phase_of(event: Any) -> str:
    """The marked phase an op ran in. On a GPU the autograd engine runs the backward on a thread of its own,
    outside the phase:backward range: its ops are known by their `evaluate_function` ancestor."""
    parent, backward = event, False
    while parent is not None:
        if parent.name.startswith("phase:"):
            return str(parent.name[len("phase:"):])
        backward = backward or parent.name.startswith("autograd::engine::evaluate_function")
        parent = parent.cpu_parent
    return "backward" if backward else "other"


def kind_table(prof: Any, steps: int, cuda: bool) -> str:
    """Self time per (phase, kind of work), ms per step: host ops on a CPU run; on a GPU the device kernels, each
    in the phase of the op that launched it (kernels the profiler links to no op are shown as 'unlinked')."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cpu_ops = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU
               and not e.name.startswith("phase:") and not e.name.startswith("ProfilerStep")]
    if cuda:
        for e in cpu_ops:
            for kernel in e.kernels:
                table[phase_of(e)][kind_of(kernel.name)] += kernel.duration / 1e3 / steps
        everything: dict[str, float] = defaultdict(float)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith("phase:") \
                    and e.name != "Command Buffer Full":
                everything[kind_of(e.name)] += getattr(e, "self_device_time_total", 0.0) / 1e3 / steps
        for kind, t in everything.items():
            linked = sum(k[kind] for k in table.values())
            if t - linked > 0.05:
                table["unlinked"][kind] += t - linked
    else:
        for e in cpu_ops:
            table[phase_of(e)][kind_of(e.name)] += e.self_cpu_time_total / 1e3 / steps
    total = sum(sum(k.values()) for k in table.values()) or 1.0
    lines = [f"{'phase':<12}{'matmul ms':>11}{'attention':>11}{'glue ms':>10}{'all ms':>9}{'share':>8}"]
    for phase in (*PHASES, "other", "unlinked"):
        if phase not in table:
            continue
        k = table[phase]
        all_ms = sum(k.values())
        lines.append(f"{phase:<12}{k['matmul']:>11.1f}{k['attention']:>11.1f}{k['glue']:>10.1f}{all_ms:>9.1f}"
                     f"{100 * all_ms / total:>7.0f}%")
    sums = {kind: sum(k[kind] for k in table.values()) for kind in ("matmul", "attention", "glue")}
    lines.append(f"{'all':<12}{sums['matmul']:>11.1f}{sums['attention']:>11.1f}{sums['glue']:>10.1f}{total:>9.1f}"
                 f"{100:>7.0f}%")
    lines.append("shares of the step: " + ", ".join(f"{kind} {100 * v / total:.0f}%" for kind, v in sums.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="fmnist_small")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args()
    report = io.StringIO()
    with contextlib.redirect_stdout(Tee(report)):
        profile_steps(args)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(report.getvalue())


class Tee(io.TextIOBase):
    def __init__(self, copy: io.StringIO) -> None:
        self.copy, self.out = copy, __import__("sys").stdout

    def write(self, text: str) -> int:
        self.copy.write(text)
        return int(self.out.write(text))


def profile_steps(args: argparse.Namespace) -> None:
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
    print(f"{cfg.model.arch} at {cfg.data.crop_size}px, batch {cfg.optim.batch_size}, {trainer.precision}"
          f"{', compiled' if trainer.compiled else ''}, {torch.cuda.get_device_name() if cuda else 'CPU'} "
          f"({torch.get_num_threads()} threads, torch {torch.__version__}); {args.steps} profiled steps "
          f"(the profiler adds overhead: compare phases, not totals with bench/engine.py)")
    print(f"wall per step: {wall:.1f} ms")
    print(f"{'phase':<12}{'host ms/step':>14}{'device ms/step':>16}")
    by_name = {e.key: e for e in events}
    for name in PHASES:
        e = by_name.get(f"phase:{name}")
        if e is None:
            continue
        print(f"{name:<12}{e.cpu_time_total / 1e3 / args.steps:>14.2f}{getattr(e, dev) / 1e3 / args.steps:>16.2f}")
    print(f"\nby kind of work ({'device kernels' if cuda else 'host ops'}, self time, ms per step):")
    try:
        print(kind_table(prof, args.steps, cuda))
    except Exception as exc:  # noqa: BLE001  the tables below still come
        print(f"(no breakdown: {type(exc).__name__}: {exc})")
    print()
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
