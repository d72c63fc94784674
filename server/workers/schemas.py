"""Response schemas of the workers API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class WorkerPublic(BaseModel):
    id: str
    host: str | None
    queue: str | None
    version: str | None
    online: bool
    state: str | None
    current_run_id: str | None
    first_seen: datetime
    last_seen: datetime
    telemetry: dict[str, Any]


class WorkersPublic(BaseModel):
    data: list[WorkerPublic]
    count: int


class HeartbeatPublic(BaseModel):
    time: float
    seq: int
    telemetry: dict[str, Any]


class WorkerHistory(BaseModel):
    worker_id: str
    data: list[HeartbeatPublic]
