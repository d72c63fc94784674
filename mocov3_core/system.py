"""Device and numeric precision choices shared by pretraining and evaluation."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device) -> str:
    """The spec's train.precision on this device: auto -> bf16 / fp16 / fp32; fp32-strict stays as it is (fp32
    arithmetic with TF32 off, see `set_tf32`)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # bf16 autocast is ~15x slower on CPUs without native bf16 (docs/operations.md)


def pin_threads(threads: int | None) -> int:
    """Intra-op CPU threads: the spec's `train.threads` when set, else torch's default (one per physical core, or
    OMP_NUM_THREADS); -> the count in use. A CPU reduction (a matmul's sums) is split over the threads, so the
    count changes the last bits of each step and, over a run, the evaluations' digits: two processes give the
    same digits only with the same count (docs/results.md, "Determinism")."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def set_tf32(enabled: bool) -> dict[str, Any]:
    """TF32 for fp32 matrix multiplies (cuBLAS) and cuDNN convolutions on; or both off (IEEE fp32).

    With it on, an fp32 matmul on an Ampere or later GPU runs on the tensor cores with a 10-bit mantissa in the
    products and fp32 accumulation: about 7x the fp32 rate on an H100, well inside SGD's noise. The engine turns it
    on for CUDA runs except `train.precision=fp32-strict`; bf16/fp16 autocast regions are unaffected. Process-wide
    flags, set through PyTorch's per-backend `fp32_precision` API (torch >= 2.9; older torch: `allow_tf32`);
    -> the previous values, for `restore_tf32`. Once that API has set "tf32" ("ieee" for convolutions), torch's
    legacy getters (`torch.get_float32_matmul_precision()`, `torch.backends.cuda.matmul.allow_tf32`,
    `torch.backends.cudnn.allow_tf32`) raise: nothing in the engine reads them, nor does inductor's default mode
    (its max-autotune does: one reason the engine does not use it).
    """
    matmul: Any = torch.backends.cuda.matmul
    cudnn: Any = torch.backends.cudnn  # its per-op flags live on a module subclass that mypy does not see
    if not hasattr(matmul, "fp32_precision"):  # torch < 2.9
        before = {"allow_tf32": (matmul.allow_tf32, cudnn.allow_tf32)}
        matmul.allow_tf32 = cudnn.allow_tf32 = enabled
        return before
    value = "tf32" if enabled else "ieee"
    before = {"matmul": matmul.fp32_precision, "conv": cudnn.conv.fp32_precision}
    matmul.fp32_precision = value
    cudnn.conv.fp32_precision = value
    return before


def restore_tf32(before: dict[str, Any]) -> None:
    """Put back the flags `set_tf32` returned."""
    matmul: Any = torch.backends.cuda.matmul
    cudnn: Any = torch.backends.cudnn
    if "allow_tf32" in before:
        matmul.allow_tf32, cudnn.allow_tf32 = before["allow_tf32"]
        return
    matmul.fp32_precision = before["matmul"]
    cudnn.conv.fp32_precision = before["conv"]


def tf32_enabled() -> bool:
    """Whether fp32 matrix multiplies run as TF32 now (what a fp32 run's peak is)."""
    matmul: Any = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return bool(matmul.fp32_precision == "tf32")
    return bool(matmul.allow_tf32)
