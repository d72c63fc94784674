"""mocolab's GPU workers: a Celery app whose one task runs the engine with a Redis Streams sink, a per-run
lock, cooperative cancel, resume from the last checkpoint, and a heartbeat with GPU telemetry.

The Redis contract with the server is `worker.protocol`. Importing this package does not import torch or
the Celery app; `worker.celery_app` builds the app, `worker.tasks` registers the task.
"""

from __future__ import annotations

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
