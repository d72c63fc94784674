"""Response schemas of the workers API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AgentSlot(BaseModel):
    device: int
    held: bool = Field(description="A run holds the device (its run_id is null when the run is another team's).")
    run_id: str | None = None
    attempt: int | None = None


class AgentPublic(BaseModel):
    """What an agent (`mocolab worker --gpus ...`) says about its devices in its heartbeat."""

    devices: list[int]
    device_kind: str = Field(description="gpu, or cpu (CPU slots, on a machine without GPUs).")
    storage: str | None = None
    slots: list[AgentSlot]


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
    agent: AgentPublic | None = Field(None, description="An agent's devices and who holds each; null for a "
                                      "one-GPU worker (`--gpu N`).")


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
