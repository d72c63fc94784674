"""The worker's heartbeat: every HEARTBEAT_INTERVAL_S, who it is, what it runs, and how its machine is doing.

Each beat (1) writes the JSON to field ``hb`` of ``protocol.worker_key(id)`` with a TTL of HEARTBEAT_TTL_S,
so the key vanishes when the worker stops beating; (2) appends a ``heartbeat`` event (run id
``protocol.worker_run_id(id)``) through a RedisStreamSink, so the server keeps worker history like any
event; (3) refreshes the lock of each run the worker's pool processes are executing. A Redis outage
costs beats (the events wait in the sink's spool), never the thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import mocov3_core
from mocov3_core.events import Event

from . import protocol
from ._redis import OUTAGE_ERRORS, Redis, connect
from .lock import RunLock
from .settings import Settings
from .sink import RedisStreamSink
from .telemetry import Telemetry
from .workdir import WorkerDir

log = logging.getLogger("mocolab.worker.heartbeat")

HISTORY_SEQ_TTL_S = 7 * 24 * 3600.0  # a worker's seq key outlives any restart gap; its seq is time-based anyway


class Heartbeat:
    def __init__(self, settings: Settings, interval: float = protocol.HEARTBEAT_INTERVAL_S,
                 ttl: float = protocol.HEARTBEAT_TTL_S, redis: Redis | None = None,
                 sink: RedisStreamSink | None = None, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id
        self.interval = interval
        self.ttl_ms = int(ttl * 1000)
        self.redis = redis or connect(settings.redis_url)
        self.sink = sink or RedisStreamSink(settings.redis_url, spool_dir=settings.spool_dir,
                                            seq_ttl_s=HISTORY_SEQ_TTL_S)
        self.telemetry = telemetry or Telemetry(settings.gpu)
        self.workdir = WorkerDir(settings.spool_dir, settings.worker_id)
        self.host = socket.gethostname()
        self.started_at = time.time()
        self.beats = 0
        self.seq = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def payload(self, state: str | None = None) -> dict[str, Any]:
        runs = self.workdir.active_runs()
        current = runs[0] if runs else {}
        return {"worker_id": self.worker_id, "host": self.host, "pid": os.getpid(), "queue": self.settings.queue,
                "version": mocov3_core.__version__, "started_at": self.started_at,
                "state": state or ("busy" if runs else "idle"), "run_id": current.get("run_id"),
                "step": current.get("step"), "runs": [{"run_id": r["run_id"], "step": r.get("step")} for r in runs],
                "interval_s": self.interval, **self.telemetry.snapshot(), **self._agent()}

    def _agent(self) -> dict[str, Any]:
        from .agent import agent_info

        info = agent_info(self.settings, self.redis)
        return {"agent": info} if info is not None else {}

    def _next_seq(self) -> int:
        # time-based, so a worker restarted under the same id keeps counting upwards
        self.seq = max(self.seq + 1, int(time.time() * 1000))
        return self.seq

    def beat(self, state: str | None = None) -> dict[str, Any] | None:
        """One heartbeat; -> its payload (None if even the payload could not be built). Never raises."""
        try:
            payload = self.payload(state)
        except Exception:
            log.exception("heartbeat: cannot read the machine's state")
            return None
        try:
            self.sink.write(Event(run_id=protocol.worker_run_id(self.worker_id), seq=self._next_seq(),
                                  time=time.time(), type="heartbeat", payload=payload))
        except Exception:
            log.exception("heartbeat: cannot queue the event")
        try:
            key = protocol.worker_key(self.worker_id)
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(key, "hb", json.dumps(payload))
            pipe.pexpire(key, self.ttl_ms)
            pipe.execute()
            for run in payload["runs"]:
                if not RunLock(self.redis, run["run_id"], self.worker_id).refresh():
                    log.warning("heartbeat: the lock of run %s is no longer ours", run["run_id"])
        except OUTAGE_ERRORS as exc:
            log.debug("heartbeat: Redis unreachable: %s", exc)
        self.beats += 1
        return payload

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self.interval):
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating: a last `stopped` heartbeat event, the worker's key deleted, the sink flushed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.beat("stopped")
        with contextlib.suppress(*OUTAGE_ERRORS):
            self.redis.delete(protocol.worker_key(self.worker_id))
        self.sink.close(timeout)
        self.telemetry.close()
