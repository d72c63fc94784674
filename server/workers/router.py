"""/api/v1/workers: every authenticated user sees the shared workers (and only its teams' runs on them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from server.core.errors import ERROR_RESPONSES
from server.deps import CallerDep, SessionDep
from server.workers import service
from server.workers.schemas import WorkerHistory, WorkersPublic

router = APIRouter(tags=["workers"], responses=ERROR_RESPONSES)


@router.get("/workers", response_model=WorkersPublic)
def read_workers(session: SessionDep, caller: CallerDep, include_offline: bool = True) -> WorkersPublic:
    return service.list_workers(session, team_ids=caller.team_ids, include_offline=include_offline)


@router.get("/workers/{worker_id}/history", response_model=WorkerHistory)
def read_worker_history(worker_id: Annotated[str, Path(max_length=128)], session: SessionDep, caller: CallerDep,
                        since: Annotated[float | None, Query(ge=0, le=1e12, description="Unix seconds.")] = None,
                        limit: Annotated[int, Query(ge=1, le=10_000)] = 720) -> WorkerHistory:
    """The latest `limit` heartbeats (an hour at one per 5 s), oldest first."""
    return service.history(session, worker_id=worker_id, team_ids=caller.team_ids, since=since, limit=limit)
