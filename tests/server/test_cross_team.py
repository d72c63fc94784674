"""Two teams on one server: a checkpoint is named by its run (resolved within the caller's teams), never by
a path; a worker's run and the team stream's items are shown only to the run's team. Each hole is refused
with a 4xx naming the field and stores nothing; the same-team evaluation still works."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from server.core.config import Settings
from server.core.db import make_engine
from server.events.ingest import Ingestor
from worker import protocol

from server_factories import LiveServer, Member, drain, ev, make_member, push, queue_messages, submit


def with_checkpoint(client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
                    member: Member) -> dict[str, Any]:
    """A pretraining run of `member`'s team with checkpoints at steps 16 and 32."""
    run = submit(client, member)
    ckpts = settings.storage_root / "runs" / run["id"] / "checkpoints"
    push(redis_client, [ev(run["id"], 0, "checkpoint", step=16, path=str(ckpts / "step_0000016.pt"), healthy=True),
                        ev(run["id"], 1, "checkpoint", step=32, path=str(ckpts / "step_0000032.pt"), healthy=True)])
    drain(ingestor)
    return run


def run_count(client: TestClient, member: Member) -> int:
    count: int = client.get("/api/v1/runs", headers=member.headers).json()["count"]
    return count


class TestCheckpointByRun:
    def test_a_checkpoint_path_from_a_client_is_422_and_stores_nothing(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            alice: Member, bob: Member) -> None:
        theirs = with_checkpoint(client, redis_client, ingestor, settings, alice)
        folder = f"runs/{theirs['id']}"
        before = run_count(client, bob)
        for body, loc in (({"kind": "knn", "spec": {"checkpoint": folder}}, ["body", "spec", "checkpoint"]),
                          ({"kind": "knn", "overrides": {"checkpoint": folder}}, ["body", "overrides", "checkpoint"]),
                          ({"kind": "linear", "spec": {"checkpoint": f"{folder}/checkpoints/step_0000032.pt"}},
                           ["body", "spec", "checkpoint"]),
                          ({"kind": "knn", "spec": {"checkpoint": "/etc/passwd"}}, ["body", "spec", "checkpoint"])):
            response = client.post("/api/v1/runs", headers=bob.headers, json={**body, "queue": "testq"})
            assert response.status_code == 422, (body, response.text)
            [error] = response.json()["detail"]
            assert error["loc"] == loc and "run_id" in error["msg"]
        # the evaluate route's overrides cannot carry one either, even on the caller's own run
        own = with_checkpoint(client, redis_client, ingestor, settings, bob)
        response = client.post(f"/api/v1/runs/{own['id']}/evaluate", headers=bob.headers,
                               json={"kind": "knn", "overrides": {"checkpoint": folder}})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "overrides", "checkpoint"]
        assert run_count(client, bob) == before + 1  # only its own pretraining run
        assert [m["id"] for m in queue_messages(redis_client, "testq")] == [f"{own['id']}.1", f"{theirs['id']}.1"]

    def test_another_teams_run_is_404_by_run_id(self, client: TestClient, redis_client: redis.Redis,
                                                 ingestor: Ingestor, settings: Settings, alice: Member,
                                                 bob: Member) -> None:
        theirs = with_checkpoint(client, redis_client, ingestor, settings, alice)
        for body in ({"kind": "knn", "run_id": theirs["id"]},
                     {"kind": "linear", "run_id": theirs["id"], "checkpoint_step": 16}):
            response = client.post("/api/v1/runs", headers=bob.headers, json=body)
            assert response.status_code == 404 and response.json()["detail"] == f"run {theirs['id']} not found"
        response = client.post(f"/api/v1/runs/{theirs['id']}/evaluate", headers=bob.headers, json={"kind": "knn"})
        assert response.status_code == 404
        assert run_count(client, bob) == 0 and run_count(client, alice) == 1

    def test_a_same_team_evaluation_by_run_id_reads_the_resolved_checkpoint(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            engine: Engine, alice: Member) -> None:
        run = with_checkpoint(client, redis_client, ingestor, settings, alice)
        carol = make_member(engine, "carol", alice.team)  # another member of the run's team
        response = client.post("/api/v1/runs", headers=carol.headers,
                               json={"kind": "knn", "run_id": run["id"], "checkpoint_step": 16, "tags": ["t"],
                                     "overrides": {"k": 10}, "notes": "early"})
        assert response.status_code == 201, response.text
        child = response.json()
        assert child["parent_run_id"] == run["id"] and child["team"] == alice.team and child["owner"] == "carol"
        assert child["checkpoint"] == child["spec"]["checkpoint"] == f"runs/{run['id']}/checkpoints/step_0000016.pt"
        assert child["spec"]["k"] == 10 and child["tags"] == ["t"] and child["notes"] == "early"
        latest = client.post("/api/v1/runs", headers=alice.headers, json={"kind": "linear", "run_id": run["id"]})
        assert latest.json()["spec"]["checkpoint"].endswith("step_0000032.pt")
        evaluated = client.post(f"/api/v1/runs/{run['id']}/evaluate", headers=carol.headers, json={"kind": "knn"})
        assert evaluated.status_code == 201 and evaluated.json()["checkpoint"].endswith("step_0000032.pt")

    def test_run_id_and_step_are_refused_where_they_mean_nothing(self, client: TestClient, redis_client: redis.Redis,
                                                                 ingestor: Ingestor, settings: Settings,
                                                                 alice: Member) -> None:
        run = with_checkpoint(client, redis_client, ingestor, settings, alice)
        for body, loc, status in (({"kind": "pretrain", "run_id": run["id"]}, ["body", "run_id"], 422),
                                  ({"kind": "knn", "checkpoint_step": 16}, ["body", "checkpoint_step"], 422),
                                  ({"kind": "knn", "run_id": "../x"}, ["body", "run_id"], 422)):
            response = client.post("/api/v1/runs", headers=alice.headers, json=body)
            assert response.status_code == status, (body, response.text)
            assert response.json()["detail"][0]["loc"] == loc
        missing = client.post("/api/v1/runs", headers=alice.headers,
                              json={"kind": "knn", "run_id": run["id"], "checkpoint_step": 17})
        assert missing.status_code == 409
        assert missing.json()["detail"] == f"run {run['id']} has no checkpoint at step 17"
        assert run_count(client, alice) == 1

    def test_a_study_cannot_carry_a_checkpoint_path(self, client: TestClient, alice: Member) -> None:
        response = client.post("/api/v1/studies", headers=alice.headers,
                               json={"name": "s", "preset": "fmnist_tiny", "evaluations": ["knn"],
                                     "axes": [{"path": "optim.base_lr", "values": [1e-4, 1e-3]}],
                                     "eval_overrides": {"knn": {"checkpoint": "runs/x"}}})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "eval_overrides", "knn", "checkpoint"]
        assert run_count(client, alice) == 0


def beat(run_id: str | None, worker: str, step: int = 5) -> dict[str, Any]:
    runs = [{"run_id": run_id, "step": step}] if run_id else []
    return ev(protocol.worker_run_id(worker), int(time.time() * 1000), "heartbeat", worker_id=worker, host="box",
              queue="testq", state="busy" if run_id else "idle", run_id=run_id, step=step if run_id else None,
              runs=runs)


class TestWorkersScope:
    def test_a_workers_run_is_shown_only_to_its_team(self, client: TestClient, redis_client: redis.Redis,
                                                      ingestor: Ingestor, alice: Member, bob: Member) -> None:
        run = submit(client, alice)
        push(redis_client, [beat(run["id"], "gpu0")])
        drain(ingestor)
        mine = client.get("/api/v1/workers", headers=alice.headers).json()["data"][0]
        assert mine["current_run_id"] == run["id"] and mine["telemetry"]["run_id"] == run["id"]
        theirs = client.get("/api/v1/workers", headers=bob.headers).json()["data"][0]
        assert theirs["id"] == "gpu0" and theirs["online"] and theirs["state"] == "busy"  # the worker is shared
        assert theirs["current_run_id"] is None and theirs["telemetry"]["run_id"] is None
        assert theirs["telemetry"]["runs"] == [] and theirs["telemetry"]["step"] is None
        assert run["id"] not in json.dumps(client.get("/api/v1/workers", headers=bob.headers).json())
        history = client.get("/api/v1/workers/gpu0/history", headers=bob.headers).json()
        assert history["data"] and run["id"] not in json.dumps(history)
        assert client.get("/api/v1/workers/gpu0/history", headers=alice.headers).json()["data"][0][
            "telemetry"]["run_id"] == run["id"]


@pytest.fixture
def live_engine(live: LiveServer) -> Iterator[Engine]:
    engine = make_engine(live.app.state.settings.database)
    yield engine
    engine.dispose()


def team_items(live: LiveServer, member: Member, until: Any, last_event_id: str | None = None,
               ) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of the team stream until `until(items)` holds."""
    headers = {**member.headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    items: list[tuple[str, str, dict[str, Any]]] = []
    current: dict[str, str] = {}
    with httpx.stream("GET", f"{live.url}/api/v1/stream", headers=headers, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                current[name] = value[1:] if value.startswith(" ") else value
                continue
            if "event" in current:
                items.append((current.get("id", ""), current["event"], json.loads(current["data"])))
                if until(items):
                    return items
            current = {}
    return items


class TestTeamStreamScope:
    def test_team_items_and_worker_runs_go_only_to_their_team(self, live: LiveServer, live_engine: Engine,
                                                               redis_client: redis.Redis, tmp_path: Path) -> None:
        a, b = make_member(live_engine, "ann", "team-1"), make_member(live_engine, "ben", "team-2")
        run_a = httpx.post(f"{live.url}/api/v1/runs", headers=a.headers, json={"preset": "fmnist_tiny"}).json()["id"]

        def feed() -> None:
            time.sleep(0.5)
            push(redis_client, [ev(run_a, 0, "status", state="running"),
                                ev(run_a, 1, "alert", kind="nan", step=3, message="NaN loss")])
            push(redis_client, [beat(run_a, "w1")])

        def workers(items: list[tuple[str, str, dict[str, Any]]]) -> bool:
            return any(kind == "worker" for _, kind, _ in items)

        feeder = threading.Thread(target=feed)
        feeder.start()
        seen_by_b = team_items(live, b, workers)
        feeder.join()
        assert [kind for _, kind, _ in seen_by_b] == ["worker"]  # team 1's run and alert never reach team 2
        [(first_id, _, worker)] = seen_by_b
        assert worker["id"] == "w1" and worker["current_run_id"] is None and run_a not in json.dumps(worker)
        # the replay from the server's buffer is scoped the same way
        replay_b = team_items(live, b, workers, last_event_id=f"{first_id.partition('-')[0]}-0")
        assert [kind for _, kind, _ in replay_b] == ["worker"] and run_a not in json.dumps(replay_b)
        replay_a = team_items(live, a, workers, last_event_id=f"{first_id.partition('-')[0]}-0")
        kinds = {kind: data for _, kind, data in replay_a}
        assert kinds["run"]["id"] == run_a and kinds["alert"]["run_id"] == run_a
        assert kinds["worker"]["current_run_id"] == run_a and kinds["worker"]["telemetry"]["runs"][0]["run_id"] == run_a
