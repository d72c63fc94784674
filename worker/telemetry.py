"""What a worker's machine is doing: CPU and memory (psutil), and per GPU its name, memory, utilisation and
temperature (NVML, from nvidia-ml-py). A machine where NVML does not initialise reports ``gpus: []``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psutil

log = logging.getLogger("mocolab.worker.telemetry")


def _nvml() -> Any:
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def _read(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # a field this GPU or driver does not report
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Telemetry:
    """Samples the host; `gpu_index` limits the GPUs reported to the one a worker owns (NVML numbering)."""

    def __init__(self, gpu_index: int | None = None) -> None:
        self.gpu_index = gpu_index
        self._nv: Any = None
        try:
            self._nv = _nvml()
        except Exception as exc:  # no driver, no GPU, or no library: a CPU worker
            log.debug("NVML unavailable: %s", exc)
        psutil.cpu_percent(None)  # the first call primes the counter and returns 0

    @property
    def has_nvml(self) -> bool:
        return self._nv is not None

    def gpus(self) -> list[dict[str, Any]]:
        if self._nv is None:
            return []
        nv = self._nv
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception as exc:
            log.debug("NVML device count failed: %s", exc)
            return []
        indices = [self.gpu_index] if self.gpu_index is not None and self.gpu_index < count else range(count)
        out = []
        for i in indices:
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(i)
            except Exception:
                continue

            mem = _read(nv.nvmlDeviceGetMemoryInfo, handle)
            util = _read(nv.nvmlDeviceGetUtilizationRates, handle)
            temperature = _read(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
            out.append({
                "index": i,
                "name": _text(_read(nv.nvmlDeviceGetName, handle) or "unknown"),
                "memory_used": int(mem.used) if mem is not None else None,
                "memory_total": int(mem.total) if mem is not None else None,
                "utilization": int(util.gpu) if util is not None else None,
                "temperature": int(temperature) if temperature is not None else None,
            })
        return out

    def snapshot(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        gpus = self.gpus()
        return {"cpu_percent": psutil.cpu_percent(None), "cpu_count": psutil.cpu_count(),
                "memory_used": int(vm.total - vm.available), "memory_total": int(vm.total),
                "gpu": ", ".join(sorted({g["name"] for g in gpus})) or "none", "gpus": gpus}

    def close(self) -> None:
        if self._nv is not None:
            with contextlib.suppress(Exception):
                self._nv.nvmlShutdown()
            self._nv = None
