"""Workers are online while their heartbeats keep arriving (within the heartbeat TTL) and they have not
said they stopped. Every team sees every worker, but a run a worker executes only its team (`scope`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from server.core.db import utcnow
from server.core.errors import NotFound
from server.models import Run, Worker, WorkerHeartbeat
from server.workers.schemas import (
    AgentPublic,
    AgentSlot,
    HeartbeatPublic,
    WorkerHistory,
    WorkerPublic,
    WorkersPublic,
)
from server.workers.scope import runs_named, scope_telemetry
from worker import protocol


def to_public(worker: Worker, now: datetime, visible: set[str]) -> WorkerPublic:
    state = worker.telemetry.get("state") if isinstance(worker.telemetry.get("state"), str) else None
    online = now - worker.last_seen <= timedelta(seconds=protocol.HEARTBEAT_TTL_S) and state != "stopped"
    current = worker.current_run_id if online and worker.current_run_id in visible else None
    telemetry = scope_telemetry(worker.telemetry, visible)
    return WorkerPublic(id=worker.id, host=worker.host, queue=worker.queue, version=worker.version, online=online,
                        state=state if online else "offline", current_run_id=current, first_seen=worker.first_seen,
                        last_seen=worker.last_seen, telemetry=telemetry, agent=agent_of(telemetry))


def agent_of(telemetry: dict[str, Any]) -> AgentPublic | None:
    """The agent part of a (scoped) heartbeat, or None for a one-GPU worker or a payload of another shape."""
    info = telemetry.get("agent")
    if not isinstance(info, dict):
        return None
    try:
        devices = sorted({int(d) for d in info.get("devices") or []})
        by_device = {int(s["device"]): s for s in info.get("slots") or [] if isinstance(s, dict) and "device" in s}
        slots = []
        for device in devices:
            slot = by_device.get(device, {})
            run_id = slot.get("run_id") if isinstance(slot.get("run_id"), str) else None
            attempt = slot.get("attempt") if isinstance(slot.get("attempt"), int) and run_id else None
            slots.append(AgentSlot(device=device, held=run_id is not None or bool(slot.get("hidden")),
                                   run_id=run_id, attempt=attempt))
        storage = info.get("storage")
        return AgentPublic(devices=devices, device_kind=str(info.get("device_kind") or "gpu"),
                           storage=storage if isinstance(storage, str) else None, slots=slots)
    except (TypeError, ValueError, AttributeError):
        return None


def visible_runs(session: Session, run_ids: Iterable[str], team_ids: Iterable[int]) -> set[str]:
    """Those of `run_ids` that belong to one of `team_ids`."""
    ids, teams = {r for r in run_ids if r}, list(team_ids)
    if not ids or not teams:
        return set()
    return set(session.exec(select(Run.id).where(col(Run.id).in_(ids), col(Run.team_id).in_(teams))))


def list_workers(session: Session, *, team_ids: Iterable[int], include_offline: bool = True) -> WorkersPublic:
    now = utcnow()
    workers = list(session.exec(select(Worker).order_by(col(Worker.id))))
    named = {w.current_run_id or "" for w in workers} | {r for w in workers for r in runs_named(w.telemetry)}
    visible = visible_runs(session, named, team_ids)
    rows = [to_public(w, now, visible) for w in workers]
    if not include_offline:
        rows = [w for w in rows if w.online]
    return WorkersPublic(data=rows, count=len(rows))


def history(session: Session, *, worker_id: str, team_ids: Iterable[int], since: float | None,
            limit: int) -> WorkerHistory:
    if session.get(Worker, worker_id) is None:
        raise NotFound(f"worker {worker_id} not found")
    query = select(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id)
    if since is not None:
        query = query.where(col(WorkerHeartbeat.time) > since)
    rows = list(session.exec(query.order_by(col(WorkerHeartbeat.time).desc()).limit(limit)))
    rows.reverse()
    visible = visible_runs(session, {r for h in rows for r in runs_named(h.telemetry)}, team_ids)
    return WorkerHistory(worker_id=worker_id, data=[
        HeartbeatPublic(time=h.time, seq=h.seq, telemetry=scope_telemetry(h.telemetry, visible)) for h in rows])
