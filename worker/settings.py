"""The worker's settings, read from the environment. Workers need Redis and the storage, never the database.

REDIS_URL            broker, events stream, locks, cancel flags, heartbeats (default redis://127.0.0.1:6379/0)
MOCOLAB_STORAGE      storage root: runs/<run_id>/ (checkpoints, result.json) below it (default ./.mocolab/storage)
MOCOLAB_QUEUE        the Celery queue this worker consumes (default protocol.DEFAULT_QUEUE)
MOCOLAB_GPU          the GPU index this worker owns; empty = none given (the engine picks CUDA if visible, else CPU)
MOCOLAB_WORKER_ID    the worker's name in heartbeats and locks (default <host>-<pid>); `python -m worker` exports it
                     so that its pool processes share it
MOCOLAB_DATASET_ROOTS folders a spec's data.root may point into, separated by ':' or ','; empty = /usr/share/datasets;
                     <storage>/datasets (the packed copies) always (the server's rule: the worker checks again,
                     trusting nothing it is sent)
MOCOLAB_MAX_DELIVERIES  deliveries of one attempt whose process died before the run is failed (default 3)
MOCOLAB_AGENT_DEVICES  an agent's devices: '0,1,3' (GPUs) or 'cpu:N' (N CPU slots); empty = a one-GPU worker
                     (`mocolab worker --gpus ...` sets it; see worker/agent.py)
MOCOLAB_SPOOL_DIR    local folder for events held while Redis is unreachable, and the files the worker's processes
                     share (default ./.mocolab/spool; keep it on a local disk, one per host)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import protocol


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    storage: Path = Path(".mocolab/storage")
    queue: str = protocol.DEFAULT_QUEUE
    gpu: int | None = None
    worker_id: str = ""
    spool_dir: Path = Path(".mocolab/spool")
    dataset_roots: tuple[Path, ...] = ()
    max_deliveries: int = protocol.MAX_DELIVERIES
    agent_devices: tuple[int, ...] = ()  # an agent's devices (empty: a one-GPU worker on the shared queue)
    agent_kind: str = "gpu"  # "gpu", or "cpu" for CPU slots

    def __post_init__(self) -> None:
        object.__setattr__(self, "storage", Path(self.storage))  # accept strings from callers and tests
        object.__setattr__(self, "spool_dir", Path(self.spool_dir))
        object.__setattr__(self, "dataset_roots", tuple(Path(p) for p in self.dataset_roots))
        if not self.worker_id:
            object.__setattr__(self, "worker_id", default_worker_id())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(name, "").strip()

        gpu = get("MOCOLAB_GPU")
        if gpu and not gpu.isdigit():
            raise ValueError(f"MOCOLAB_GPU: expected a GPU index such as 0, got {gpu!r}")
        kind, devices = "gpu", tuple[int, ...]()
        agent = get("MOCOLAB_AGENT_DEVICES")
        if agent:
            if agent.lower().startswith("cpu:") and agent[4:].isdigit() and int(agent[4:]) >= 1:
                kind, devices = "cpu", tuple(range(int(agent[4:])))
            elif all(p.strip().isdigit() for p in agent.split(",")):
                devices = tuple(sorted({int(p) for p in agent.split(",")}))
            else:
                raise ValueError(f"MOCOLAB_AGENT_DEVICES: expected GPU indices such as 0,1,3 or cpu:N, got {agent!r}")
        deliveries = get("MOCOLAB_MAX_DELIVERIES")
        if deliveries and not (deliveries.isdigit() and int(deliveries) >= 1):
            raise ValueError(f"MOCOLAB_MAX_DELIVERIES: expected a whole number >= 1, got {deliveries!r}")
        return cls(redis_url=get("REDIS_URL") or cls.redis_url,
                   max_deliveries=int(deliveries) if deliveries else cls.max_deliveries,
                   storage=Path(get("MOCOLAB_STORAGE") or cls.storage).expanduser().absolute(),
                   queue=get("MOCOLAB_QUEUE") or cls.queue,
                   gpu=int(gpu) if gpu else None, agent_devices=devices, agent_kind=kind,
                   worker_id=get("MOCOLAB_WORKER_ID"),
                   spool_dir=Path(get("MOCOLAB_SPOOL_DIR") or cls.spool_dir).expanduser().absolute(),
                   dataset_roots=tuple(Path(p.strip()).expanduser() for chunk in get("MOCOLAB_DATASET_ROOTS").split(",")
                                       for p in chunk.split(os.pathsep) if p.strip()))

    @property
    def runs_dir(self) -> Path:
        return self.storage / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    @property
    def packed_datasets_root(self) -> Path:
        """<storage>/datasets: where prepare runs write the teams' packed copies."""
        return (self.storage / "datasets").resolve()

    @property
    def allowed_dataset_roots(self) -> list[Path]:
        packed = self.packed_datasets_root
        roots = [r.resolve() for r in self.dataset_roots] or [Path("/usr/share/datasets")]
        return [packed, *(r for r in roots if r != packed)]


def inside(path: str | Path, roots: list[Path]) -> bool:
    """`path`, symlinks and '..' resolved, is one of `roots` or below one (roots given resolved)."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)
