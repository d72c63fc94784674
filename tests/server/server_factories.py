"""Factories and helpers for the server tests: members with tokens, a worker's view of the events stream,
Celery messages in a queue, and a live uvicorn server (SSE needs real streaming)."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from server import admin
from server.core.config import Settings
from server.core.db import make_engine, writer
from server.core.errors import NotFound
from server.embedded_redis import free_port
from server.events.ingest import Ingestor, IngestResult
from server.main import create_app
from worker import gang, protocol


@dataclass
class Member:
    name: str
    team: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_member(engine: Engine, name: str, team: str) -> Member:
    with Session(writer(engine), expire_on_commit=False) as s:
        user = admin.create_user(s, name=name)
        try:
            t = admin.get_team(s, name=team)
        except NotFound:
            t = admin.create_team(s, name=team)
        admin.add_member(s, user=user, team=t)
        return Member(name, team, admin.create_token(s, user=user, name="tests"))


# ---------------------------------------------------------------- feeding the stream like a worker
def ev(run_id: str, seq: int, type: str, /, **payload: Any) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "time": time.time(), "type": type, "payload": payload}


def metrics_ev(run_id: str, seq: int, step: int, **values: Any) -> dict[str, Any]:
    return ev(run_id, seq, "metrics", step=step, epoch=step / 10, values=values)


def push(client: redis.Redis, events: list[dict[str, Any]]) -> str:
    entry_id = client.xadd(protocol.EVENTS_STREAM, {"b": json.dumps(events)})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def drain(ingestor: Ingestor) -> IngestResult:
    """Step until the stream has nothing more for this consumer."""
    total = IngestResult()
    while True:
        result = ingestor.step(block_ms=10)
        if not result.entries:
            return total
        total.add(result)


def submit(client: TestClient, member: Member, **body: Any) -> dict[str, Any]:
    body = {"kind": "pretrain", "preset": "fmnist_tiny", "queue": "testq", **body}
    response = client.post("/api/v1/runs", json=body, headers=member.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def with_checkpoints(client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, storage: Path, member: Member,
                     steps: tuple[int, ...] = (16, 32), **body: Any) -> dict[str, Any]:
    """A submitted run whose worker reported checkpoints at `steps` (paths under `storage` as a worker writes them)."""
    run = submit(client, member, **body)
    ckpts = storage / "runs" / run["id"] / "checkpoints"
    push(redis_client, [ev(run["id"], i, "checkpoint", step=s, path=str(ckpts / f"step_{s:07d}.pt"), healthy=True)
                        for i, s in enumerate(steps)])
    drain(ingestor)
    return run


def fork(client: TestClient, member: Member, run_id: str, **body: Any) -> Any:
    """POST /runs/{run_id}/fork -> the response."""
    return client.post(f"/api/v1/runs/{run_id}/fork", json=body, headers=member.headers)


def queue_messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The Celery messages waiting in a queue (kombu's Redis transport: one list per queue)."""
    out = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append({"task": message["headers"]["task"], "id": message["headers"]["id"], "args": body[0]})
    return out


# ---------------------------------------------------------------- a live server (SSE needs real streaming)
@dataclass
class LiveServer:
    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def start_live(settings: Settings, log_level: str = "warning") -> LiveServer:
    settings = settings.model_copy(update={"port": free_port(), "background": True})
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    return LiveServer(f"http://127.0.0.1:{settings.port}", app, server, thread)


def agent_beat(r: redis.Redis, agent_id: str, devices: list[int], *, queue: str = "testq", storage: str = "/shared",
               kind: str = "gpu", held: dict[int, str] | None = None, state: str = "idle") -> None:
    """An agent's heartbeat exactly as `mocolab worker --gpus ...` writes it (gang contract)."""
    held = held or {}
    slots = [{"device": d, "run_id": held[d].rpartition(".")[0] if d in held else None,
              "attempt": int(held[d].rpartition(".")[2]) if d in held else None} for d in devices]
    hb = {"worker_id": agent_id, "host": f"{agent_id}.example", "pid": 1, "queue": queue, "state": state,
          "version": "test", "time": 0.0,
          "agent": {"devices": devices, "device_kind": kind, "storage": storage,
                    "node_queue": gang.node_queue(agent_id), "slots": slots}}
    r.hset(protocol.worker_key(agent_id), "hb", json.dumps(hb))
    r.expire(protocol.worker_key(agent_id), int(protocol.HEARTBEAT_TTL_S) * 10)  # as long as the test needs
    for device, token in held.items():
        r.hset(gang.slots_key(agent_id), str(device), token)


def cli_member(live: LiveServer, monkeypatch: Any, name: str = "alice", team: str = "team-a") -> Member:
    """A member of a new team whose token the `mocolab` CLI uses against the live server (MOCOLAB_URL/TOKEN)."""
    engine = make_engine(live.app.state.settings.database)
    try:
        member = make_member(engine, name, team)
    finally:
        engine.dispose()
    monkeypatch.setenv("MOCOLAB_URL", live.url)
    monkeypatch.setenv("MOCOLAB_TOKEN", member.token)
    return member
