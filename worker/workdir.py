"""Small files a worker's processes share on the local disk (``<spool dir>/procs/``), so that they keep
working while Redis is away.

- ``<worker>.<pid>.json``: the run a pool process is executing and its last step (written by
  ProgressSink); the heartbeat in the main process reports it and refreshes that run's lock, and ignores
  files whose process is gone (a run killed with SIGKILL must not keep its lock alive).
- ``<worker>.stopping``: the main process is shutting down; a running run stops at a checkpoint and goes
  back to the queue.
- ``revoked.<run_id>``: the main process terminated the run's task on a revoke; the run ends cancelled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from mocov3_core.events import Event


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", name)


class WorkerDir:
    def __init__(self, spool_dir: str | Path, worker_id: str) -> None:
        self.dir = Path(spool_dir) / "procs"
        self.worker_id = worker_id
        self._name = _safe(worker_id)

    def _ensure(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir

    # ---- what each pool process is running
    def progress_path(self, pid: int | None = None) -> Path:
        return self.dir / f"{self._name}.{pid or os.getpid()}.json"

    def write_progress(self, run_id: str, step: int | None) -> None:
        self._ensure()
        path = self.progress_path()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": run_id, "step": step, "pid": os.getpid(), "time": time.time()}))
        os.replace(tmp, path)

    def clear_progress(self) -> None:
        self.progress_path().unlink(missing_ok=True)

    def active_runs(self) -> list[dict[str, Any]]:
        """The runs of this worker's live processes, oldest first; files of dead processes are removed."""
        runs = []
        for path in sorted(self.dir.glob(f"{glob_escape(self._name)}.*.json")):
            try:
                info = json.loads(path.read_text())
                pid = int(info["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not psutil.pid_exists(pid):
                path.unlink(missing_ok=True)
                continue
            runs.append(info)
        return runs

    def running_elsewhere(self, run_id: str) -> bool:
        """Another live process of this worker is running `run_id`."""
        return any(r["run_id"] == run_id and r["pid"] != os.getpid() for r in self.active_runs())

    # ---- shutdown and revoke, from the main process to the pool
    @property
    def _stop_flag(self) -> Path:
        return self.dir / f"{self._name}.stopping"

    def request_stop(self) -> None:
        self._ensure()
        self._stop_flag.touch()

    def clear_stop(self) -> None:
        self._stop_flag.unlink(missing_ok=True)

    def stop_requested(self) -> bool:
        return self._stop_flag.exists()

    def _revoked_path(self, run_id: str) -> Path:
        return self.dir / f"revoked.{_safe(run_id)}"

    def mark_revoked(self, run_id: str) -> None:
        self._ensure()
        self._revoked_path(run_id).touch()

    def revoked(self, run_id: str) -> bool:
        return self._revoked_path(run_id).exists()

    def clear_revoked(self, run_id: str) -> None:
        self._revoked_path(run_id).unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


class ProgressSink:
    """An EventSink that records the run's latest training step for the heartbeat (at most once a second)."""

    def __init__(self, workdir: WorkerDir, run_id: str, every_s: float = 1.0) -> None:
        self.workdir = workdir
        self.run_id = run_id
        self.every_s = every_s
        self.step: int | None = None
        self._written = 0.0
        self._lock = threading.Lock()
        workdir.write_progress(run_id, None)

    def write(self, event: Event) -> None:
        if event.type != "metrics" or event.run_id != self.run_id or "step" not in event.payload:
            return
        with self._lock:
            self.step = int(event.payload["step"])
            now = time.monotonic()
            if now - self._written >= self.every_s:
                self._written = now
                with contextlib.suppress(OSError):  # a full disk costs the heartbeat its step, never the run
                    self.workdir.write_progress(self.run_id, self.step)

    def close(self) -> None:
        self.workdir.clear_progress()
