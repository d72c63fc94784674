"""Model FLOPs of one training step, counted, and the device's dense peak: achieved TFLOP/s and MFU.

The count is `torch.utils.flop_counter.FlopCounterMode` over a real forward and backward of the whole
framework (online encoder, heads, the momentum encoder's forward, the loss) built on the `meta` device:
every op is dispatched with its real shapes and no arithmetic is done, so ViT-B/16 at a batch of 256 is
counted in about a second on any machine. On the meta device `F.scaled_dot_product_attention` runs its math
decomposition, whose two batched matmuls are counted like any other; on a CPU the fused attention kernel is
not in the counter's table and would be missed. Frozen tensors get no gradient, exactly as in training
(the random patch projection: no backward through it at all). Counted are matrix multiplies and
convolutions (2 FLOPs per multiply-add), the usual "model FLOPs" of MFU (PaLM, App. B): the augmentation,
norms, activations and the optimizer are not counted, while their time is in the step.

Peaks are dense (no 2:4 sparsity) tensor-core figures from the vendors' datasheets; see `PEAKS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import PretrainConfig
from ..system import tf32_enabled


@dataclass(frozen=True)
class FlopCount:
    total: int  # FLOPs of one call
    by_op: dict[str, int] = field(default_factory=dict)  # aten op name -> FLOPs


def count_flops(fn: Callable[[], Any]) -> FlopCount:
    """FLOPs of the matmuls and convolutions `fn()` dispatches (forward and any backward it runs)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return FlopCount(int(counter.get_total_flops()), by_op)


def step_flops(cfg: PretrainConfig, batch: int | None = None) -> FlopCount:
    """Model FLOPs of one training step of `cfg` at `batch` images per device (default: the whole batch).

    Builds `cfg.framework` on the meta device and counts its forward of both views and the backward of its
    loss: the step's own modules, not a formula. Dtype does not change a count, so no autocast is needed.
    Raises when the framework gathers across processes (meta tensors cannot be sent): count before
    `torch.distributed` is initialised, or in a process of its own.
    """
    from ..frameworks import build_framework  # torch-heavy: only when counting

    n = batch or cfg.optim.batch_size
    size = cfg.data.crop_size
    with torch.device("meta"):
        model = build_framework(cfg)
        x1, x2 = torch.empty(n, 3, size, size), torch.empty(n, 3, size, size)
    model.train()

    def step() -> None:
        loss, _ = model(x1, x2)
        loss.backward()

    return count_flops(step)


# Dense peak TFLOP/s per precision, from NVIDIA's datasheets (the figures marked "with sparsity" halved):
#   H100 SXM and PCIe, H100 NVL: "NVIDIA H100 Tensor Core GPU" datasheet (nvidia.com/en-us/data-center/h100/)
#   H200 SXM and NVL: "NVIDIA H200 Tensor Core GPU" datasheet (nvidia.com/en-us/data-center/h200/)
#   A100 40 GB / 80 GB, SXM and PCIe (the same peaks): "NVIDIA A100 Tensor Core GPU" datasheet
#   L4: "NVIDIA L4 Tensor Core GPU" datasheet
# bf16 and fp16 share a peak on each of these. "fp32" is the plain (non-tensor-core) FP32 peak, what
# train.precision=fp32-strict runs at; "tf32" is what fp32 matmuls run at once TF32 is on.
# Matched in this order against torch.cuda.get_device_name(), case-insensitively, the more specific first
# ("NVIDIA H100 80GB HBM3" is the SXM part; "L4" must not match an L40S).
PEAKS: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("H200 NVL", r"h200 nvl", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H200", r"h200", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    ("H100 NVL", r"h100 nvl", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H100 PCIe", r"h100 pcie", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    ("H100 SXM", r"h100", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    ("A100", r"a100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L4", r"\bl4\b", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
)


def peak_key(precision: str, tf32: bool = True) -> str:
    """The PEAKS column a step in `precision` runs at: bf16/fp16 -> bf16; fp32 -> tf32 when TF32 is on."""
    if precision in ("bf16", "fp16"):
        return "bf16"
    return "tf32" if precision == "fp32" and tf32 else "fp32"


def device_peak(device_name: str, precision: str, tf32: bool = True) -> tuple[str, float] | None:
    """(table row, dense peak TFLOP/s) of a CUDA device name for `precision`; None when unknown (CPUs)."""
    for label, pattern, peaks in PEAKS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return label, peaks[peak_key(precision, tf32)]
    return None


def current_peak(device: torch.device, precision: str) -> tuple[str, float] | None:
    """The peak of the training device, None on CPUs and unknown GPUs; TF32 as `system.set_tf32` left it."""
    if device.type != "cuda":
        return None
    return device_peak(torch.cuda.get_device_name(device), precision, tf32_enabled())


def achieved(flops_per_step: int, seconds_per_step: float, peak_tflops: float | None) -> tuple[float, float | None]:
    """-> (achieved TFLOP/s, MFU as a fraction of the peak or None)."""
    tflops = flops_per_step / max(seconds_per_step, 1e-12) / 1e12
    return tflops, (tflops / peak_tflops if peak_tflops else None)
