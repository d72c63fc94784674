"""The Celery app of the workers (broker: REDIS_URL), with the hooks that tie a worker's main process to
its pool: the heartbeat runs in the main process from worker start to shutdown; a warm shutdown asks the
running run to stop at a checkpoint and go back to the queue; a revoke with terminate marks the run
cancelled before its process receives the SIGTERM.

The server sends runs with `app.send_task(protocol.TASK_RUN, args=[run_id, kind, spec, attempt],
queue=...)` from an app built by `make_app(redis_url)`, so both sides share `celery_config`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from celery import Celery, signals

from . import protocol
from .settings import Settings, default_worker_id

log = logging.getLogger("mocolab.worker")


def make_app(redis_url: str | None = None) -> Celery:
    app = Celery("mocolab", broker=redis_url or Settings.from_env().redis_url, include=["worker.tasks"])
    app.config_from_object("worker.celery_config")  # by name: the app must pickle for spawned pool processes
    return app


app = make_app()

_heartbeat: Any = None  # the main process's Heartbeat, between worker_init and worker_shutdown


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    """Main process, before the pool starts: one worker id for all its processes, a clean stop flag, the heartbeat."""
    global _heartbeat
    os.environ.setdefault("MOCOLAB_WORKER_ID", default_worker_id())  # the pool processes inherit it
    from .heartbeat import Heartbeat
    from .workdir import WorkerDir

    settings = Settings.from_env()
    WorkerDir(settings.spool_dir, settings.worker_id).clear_stop()
    if settings.agent_devices:
        from .agent import reset_slots

        reset_slots(settings)
    _heartbeat = Heartbeat(settings).start()
    log.info("worker %s: queue %s, heartbeat every %.0f s", settings.worker_id, settings.queue,
             protocol.HEARTBEAT_INTERVAL_S)


@signals.worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    """Main process, in its signal handler: ask a running run to checkpoint and go back to the queue."""
    from .workdir import WorkerDir

    settings = Settings.from_env()
    WorkerDir(settings.spool_dir, settings.worker_id).request_stop()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None


@signals.task_revoked.connect
def _on_task_revoked(request: Any = None, terminated: bool = False, **_: Any) -> None:
    """Main process: a run terminated by revoke ends cancelled, not re-queued (see runner.StopWatch), unless the
    server terminated it to restart it (protocol.restart_key)."""
    args = getattr(request, "args", None) or []
    if not terminated or not args:
        return
    run_id = str(args[0])
    from ._redis import OUTAGE_ERRORS, connect
    from .workdir import WorkerDir

    settings = Settings.from_env()
    if len(args) > 3 and isinstance(args[3], int):  # the server's stall watch restarts the run: no cancel
        with contextlib.suppress(*OUTAGE_ERRORS):
            if connect(settings.redis_url, timeout=1.0).exists(protocol.restart_key(run_id, args[3])):
                log.warning("run %s attempt %d terminated to be restarted (stalled)", run_id, args[3])
                return
    WorkerDir(settings.spool_dir, settings.worker_id).mark_revoked(run_id)
    with contextlib.suppress(*OUTAGE_ERRORS):
        connect(settings.redis_url, timeout=1.0).set(protocol.cancel_key(run_id), "revoked", ex=24 * 3600)
