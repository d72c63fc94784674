"""Device and numeric precision choices shared by pretraining and evaluation."""

from __future__ import annotations

from collections.abc import Callable
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
    on for CUDA runs except `train.precision=fp32-strict`; bf16/fp16 autocast regions are unaffected.
    Process-wide; -> the previous values, for `restore_tf32`.

    Set through `torch.set_float32_matmul_precision` and `torch.backends.cudnn.allow_tf32`, not through the
    per-backend `fp32_precision` properties that torch >= 2.9 adds: once those have set "tf32", torch's own
    getters of the older API raise ("mix of the legacy and new APIs"), and inductor still calls them (torch 2.14's
    max-autotune: `torch.get_float32_matmul_precision()`; other releases' inductor reads `matmul.allow_tf32` when
    it first compiles). Set this way, both APIs read back the same state (`tests/core/test_flops.py`).
    """
    cudnn: Any = torch.backends.cudnn
    before = {"matmul": _read(torch.get_float32_matmul_precision), "cudnn": _read(lambda: cudnn.allow_tf32)}
    torch.set_float32_matmul_precision("high" if enabled else "highest")  # "high": TF32 ("medium" would be bf16)
    cudnn.allow_tf32 = enabled
    return before


def _read(getter: Callable[[], Any]) -> Any:
    """A legacy getter's value; None where another caller's use of the new API makes it raise."""
    try:
        return getter()
    except RuntimeError:
        return None


def restore_tf32(before: dict[str, Any]) -> None:
    """Put back the flags `set_tf32` returned."""
    if before["matmul"] is not None:
        torch.set_float32_matmul_precision(before["matmul"])
    if before["cudnn"] is not None:
        torch.backends.cudnn.allow_tf32 = before["cudnn"]


def tf32_enabled() -> bool:
    """Whether fp32 matrix multiplies run as TF32 now (what a fp32 run's peak is)."""
    matmul: Any = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return bool(matmul.fp32_precision == "tf32")
    return bool(matmul.allow_tf32)
