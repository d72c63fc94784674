"""mocolab's GPU workers: a Celery app whose tasks run the engine with a Redis Streams sink, a per-run lock,
cooperative cancel, resume from the last checkpoint, and a heartbeat with GPU telemetry; with --gpus, an agent
that runs torchrun on the devices the server's scheduler reserved (`worker.agent`, `worker.rank`).

The Redis contract with the server is `worker.protocol`, and for runs placed on agents `worker.gang`. Public
names load lazily, so that importing the package (the server imports `worker.protocol`) runs none of the
worker's runtime: no runner, sink, heartbeat, Celery or torch. `worker.celery_app` builds the app,
`worker.tasks` registers the tasks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import protocol
    from .heartbeat import Heartbeat
    from .lock import RunLock
    from .runner import execute_run
    from .settings import Settings
    from .sink import RedisStreamSink, last_seq
    from .telemetry import Telemetry
    from .workdir import ProgressSink, WorkerDir

__all__ = ["Heartbeat", "ProgressSink", "RedisStreamSink", "RunLock", "Settings", "Telemetry", "WorkerDir",
           "execute_run", "last_seq", "protocol"]
_WHERE = {"Heartbeat": "heartbeat", "ProgressSink": "workdir", "RedisStreamSink": "sink", "RunLock": "lock",
          "Settings": "settings", "Telemetry": "telemetry", "WorkerDir": "workdir", "execute_run": "runner",
          "last_seq": "sink"}


def __getattr__(name: str) -> Any:
    if name == "protocol":
        return importlib.import_module(f"{__name__}.protocol")
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
