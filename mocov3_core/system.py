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
