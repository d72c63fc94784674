"""The worker's settings from the environment, the CLI's environment for its pool, and the GPU telemetry shape."""

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from worker import Settings, Telemetry, protocol
from worker import telemetry as telemetry_module
from worker.cli import CPU_MALLOC_ENV, configure, parser


def test_settings_defaults_and_environment(tmp_path: Path) -> None:
    default = Settings.from_env({})
    assert default.redis_url == "redis://127.0.0.1:6379/0" and default.queue == protocol.DEFAULT_QUEUE
    assert default.gpu is None and default.worker_id.endswith(f"-{os.getpid()}")
    assert default.storage.is_absolute() and default.storage.parts[-2:] == (".mocolab", "storage")
    env = {"REDIS_URL": "redis://r:1/2", "MOCOLAB_STORAGE": str(tmp_path / "st"), "MOCOLAB_QUEUE": "a100",
           "MOCOLAB_GPU": "3", "MOCOLAB_WORKER_ID": "gpu3", "MOCOLAB_SPOOL_DIR": str(tmp_path / "sp")}
    s = Settings.from_env(env)
    assert (s.redis_url, s.queue, s.gpu, s.worker_id) == ("redis://r:1/2", "a100", 3, "gpu3")
    assert s.run_dir("abc") == tmp_path / "st" / "runs" / "abc" and s.spool_dir == tmp_path / "sp"
    assert Settings.from_env({"MOCOLAB_GPU": ""}).gpu is None
    with pytest.raises(ValueError, match="MOCOLAB_GPU"):
        Settings.from_env({"MOCOLAB_GPU": "cuda:0"})
    assert default.max_deliveries == protocol.MAX_DELIVERIES
    assert Settings.from_env({"MOCOLAB_MAX_DELIVERIES": "5"}).max_deliveries == 5
    for bad in ("0", "-1", "three"):
        with pytest.raises(ValueError, match="MOCOLAB_MAX_DELIVERIES"):
            Settings.from_env({"MOCOLAB_MAX_DELIVERIES": bad})


def test_cli_gives_the_pool_its_gpu_or_the_cpu_malloc_settings() -> None:
    env: dict[str, str] = {}
    changes = configure(parser().parse_args(["--queue", "q1", "--gpu", "2", "--worker-id", "w"]), env)
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and env["MOCOLAB_GPU"] == "2" and env["MOCOLAB_QUEUE"] == "q1"
    assert env["MOCOLAB_WORKER_ID"] == "w" and not set(CPU_MALLOC_ENV) & set(changes)
    env = {"CUDA_VISIBLE_DEVICES": "", "MALLOC_TOP_PAD_": "1"}
    configure(parser().parse_args(["--queue", "cpu", "--redis-url", "redis://x:2/0"]), env)
    assert env["MALLOC_MMAP_MAX_"] == "0" and env["MALLOC_TOP_PAD_"] == "1"  # a user's own value wins
    assert env["REDIS_URL"] == "redis://x:2/0" and env["MOCOLAB_WORKER_ID"]


class FakeNVML:
    """Stands in for pynvml on a machine without a GPU: two GPUs, the second without a temperature sensor."""

    NVML_TEMPERATURE_GPU = 0

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        if h == 1:
            raise RuntimeError("not supported")
        return 61

    def nvmlShutdown(self) -> None:
        pass


def test_gpu_telemetry_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry_module, "_nvml", FakeNVML)
    snap = Telemetry().snapshot()
    assert snap["gpu"] == "NVIDIA H100 80GB HBM3" and len(snap["gpus"]) == 2
    assert snap["gpus"][0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_used": 2**30,
                               "memory_total": 80 * 2**30, "utilization": 97, "temperature": 61}
    assert snap["gpus"][1]["temperature"] is None
    assert [g["index"] for g in Telemetry(gpu_index=1).gpus()] == [1]  # a worker reports the GPU it owns


def test_cpu_only_telemetry_when_nvml_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_driver() -> Any:
        raise OSError("NVML Shared Library Not Found")

    monkeypatch.setattr(telemetry_module, "_nvml", no_driver)
    snap = Telemetry().snapshot()
    assert snap["gpus"] == [] and snap["gpu"] == "none" and snap["memory_total"] > 0


def test_dataset_roots_from_the_environment_or_the_servers_default(tmp_path: Path) -> None:
    default = Settings.from_env({"MOCOLAB_STORAGE": str(tmp_path / "st")})
    assert default.allowed_dataset_roots == [(tmp_path / "st" / "datasets").resolve(), Path("/usr/share/datasets")]
    s = Settings.from_env({"MOCOLAB_DATASET_ROOTS": f"{tmp_path / 'a'}:{tmp_path / 'b'}, {tmp_path / 'c'}"})
    packed = (Path(".mocolab/storage") / "datasets").resolve()  # the packed copies: always allowed
    assert s.allowed_dataset_roots == [packed, *((tmp_path / x).resolve() for x in "abc")]
