"""Workers are online while their heartbeats keep arriving (within the heartbeat TTL) and they have not
said they stopped."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from server.core.db import utcnow
from server.core.errors import NotFound
from server.models import Worker, WorkerHeartbeat
from server.workers.schemas import HeartbeatPublic, WorkerHistory, WorkerPublic, WorkersPublic
from worker import protocol


def to_public(worker: Worker, now: datetime) -> WorkerPublic:
    state = worker.telemetry.get("state") if isinstance(worker.telemetry.get("state"), str) else None
    online = now - worker.last_seen <= timedelta(seconds=protocol.HEARTBEAT_TTL_S) and state != "stopped"
    return WorkerPublic(id=worker.id, host=worker.host, queue=worker.queue, version=worker.version, online=online,
                        state=state if online else "offline", current_run_id=worker.current_run_id if online else None,
                        first_seen=worker.first_seen, last_seen=worker.last_seen, telemetry=worker.telemetry)


def list_workers(session: Session, *, include_offline: bool = True) -> WorkersPublic:
    now = utcnow()
    rows = [to_public(w, now) for w in session.exec(select(Worker).order_by(col(Worker.id)))]
    if not include_offline:
        rows = [w for w in rows if w.online]
    return WorkersPublic(data=rows, count=len(rows))


def history(session: Session, *, worker_id: str, since: float | None, limit: int) -> WorkerHistory:
    if session.get(Worker, worker_id) is None:
        raise NotFound(f"worker {worker_id} not found")
    query = select(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id)
    if since is not None:
        query = query.where(col(WorkerHeartbeat.time) > since)
    rows = list(session.exec(query.order_by(col(WorkerHeartbeat.time).desc()).limit(limit)))
    rows.reverse()
    return WorkerHistory(worker_id=worker_id, data=[HeartbeatPublic(time=h.time, seq=h.seq, telemetry=h.telemetry)
                                                    for h in rows])
