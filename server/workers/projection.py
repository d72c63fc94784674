"""The workers' projection of the events stream: every heartbeat into the history (`worker_heartbeats`, pruned
past the retention), each worker's latest state into `workers`, and that state to the team stream."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from sqlmodel import Session, col, delete, select

from mocov3_core.events import Event
from server.core import bulk
from server.core.db import utcnow
from server.events.projection import Batch, Notice, beat_worker_id, text
from server.models import Run, Worker, WorkerHeartbeat
from server.workers.scope import runs_named, scoped_view

log = logging.getLogger("mocolab.ingest")


class WorkerState:
    def __init__(self, heartbeat_retention_s: float = 14 * 86400, prune_every_s: float = 600.0) -> None:
        self.heartbeat_retention_s = heartbeat_retention_s
        self.prune_every_s = prune_every_s
        self._pruned_at = -1e18  # monotonic time of the last history prune: the first beats prune at once

    def project(self, batch: Batch) -> None:
        if not batch.beats:
            return
        session = batch.session
        bulk.insert_new(session, WorkerHeartbeat.__table__, [  # type: ignore[attr-defined]
            {"worker_id": beat_worker_id(e), "time": e.time, "seq": e.seq, "telemetry": e.payload}
            for e in batch.beats], ["worker_id", "time", "seq"])
        self._prune_history(session)
        latest: dict[str, Event] = {}
        for e in batch.beats:
            latest[beat_worker_id(e)] = e
        now = utcnow()
        for worker_id, e in latest.items():
            if self._seen(session, worker_id, e, now, batch):
                batch.current_beats[worker_id] = e

    def _seen(self, session: Session, worker_id: str, e: Event, now: datetime, batch: Batch) -> bool:
        """The worker's state from its latest beat; -> False for an older beat delivered late (nothing changes)."""
        p = e.payload
        worker = session.get(Worker, worker_id) or Worker(id=worker_id, first_seen=now)
        seen = datetime.fromtimestamp(e.time, UTC)
        if worker.last_seen is not None and worker.last_seen > seen and worker.telemetry:
            return False
        worker.host = text(p.get("host"), 255) or worker.host
        worker.queue = text(p.get("queue"), 64) or worker.queue
        worker.version = text(p.get("version"), 64) or worker.version
        worker.current_run_id = text(p.get("run_id"), 64) or None
        worker.last_seen, worker.telemetry = min(seen, now), p
        session.add(worker)
        named = runs_named(p)
        run_teams = ({r: t for r, t in session.exec(select(Run.id, Run.team_id).where(col(Run.id).in_(named)))}
                     if named else {})  # who may see which run: the stream blanks the others' (workers/scope.py)
        data = {"id": worker_id, "host": worker.host, "queue": worker.queue, "version": worker.version,
                "last_seen": worker.last_seen.isoformat(), "current_run_id": worker.current_run_id, "telemetry": p}
        batch.notices.append(Notice("worker", None, data, scoped_view(data, run_teams)))
        return True

    def _prune_history(self, session: Session) -> None:
        """Delete worker telemetry older than the retention, at most every `prune_every_s` (in the same
        transaction as the beats that prompted it); the workers' latest state stays in `workers`."""
        now = time.monotonic()
        if now - self._pruned_at < self.prune_every_s:
            return
        self._pruned_at = now
        cutoff = time.time() - self.heartbeat_retention_s
        deleted = session.exec(delete(WorkerHeartbeat).where(col(WorkerHeartbeat.time) < cutoff))
        if deleted.rowcount:
            log.info("pruned %d worker heartbeats older than %.1f days", deleted.rowcount,
                     self.heartbeat_retention_s / 86400)
