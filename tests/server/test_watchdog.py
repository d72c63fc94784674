"""Lost runs: a running run whose worker stopped heart-beating is re-queued (same id, next attempt) a bounded
number of times, then failed with the reason."""

from __future__ import annotations

from datetime import timedelta

import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from server.core.config import Settings
from server.core.db import utcnow
from server.events.ingest import Ingestor
from server.models import Run
from server.runs.dispatch import Dispatcher
from server.runs.watchdog import Watchdog
from worker import protocol

from server_factories import Member, drain, ev, push, queue_messages, submit


def start(redis_client: redis.Redis, ingestor: Ingestor, run_id: str, seq: int) -> None:
    push(redis_client, [ev(run_id, seq, "status", state="running", step=0, total_steps=100)])
    drain(ingestor)


def status(client: TestClient, member: Member, run_id: str) -> dict[str, object]:
    body: dict[str, object] = client.get(f"/api/v1/runs/{run_id}", headers=member.headers).json()
    return body


class TestLostRuns:
    def test_a_silent_run_is_requeued_then_failed_after_max_attempts(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url),
                            settings.model_copy(update={"max_attempts": 2}))
        run = submit(client, alice)
        start(redis_client, ingestor, run["id"], 0)
        assert watchdog.check().requeued == []  # heard from just now

        later = utcnow() + timedelta(seconds=settings.lost_after_s + 1)
        assert watchdog.check(now=later).requeued == [run["id"]]
        requeued = status(client, alice, run["id"])
        assert requeued["status"] == "queued" and requeued["attempt"] == 2 and requeued["id"] == run["id"]
        assert "lost: no heartbeat" in str(requeued["message"])
        assert [m["id"] for m in queue_messages(redis_client, "testq")] == [f"{run['id']}.2", f"{run['id']}.1"]
        assert queue_messages(redis_client, "testq")[0]["args"][3] == 2

        start(redis_client, ingestor, run["id"], 1)  # attempt 2 runs, and goes silent too
        result = watchdog.check(now=utcnow() + timedelta(seconds=settings.lost_after_s + 1))
        assert result.failed == [run["id"]] and result.requeued == []
        failed = status(client, alice, run["id"])
        assert failed["status"] == "failed" and "gave up after 2 attempts" in str(failed["error"])

    def test_a_run_whose_lock_is_alive_is_not_lost(self, client: TestClient, engine: Engine,
                                                   redis_client: redis.Redis, ingestor: Ingestor,
                                                   settings: Settings, alice: Member) -> None:
        """The ingest may lag behind (a restarted server catching up): the worker's lock says it still runs."""
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings)
        run = submit(client, alice)
        start(redis_client, ingestor, run["id"], 0)
        redis_client.set(protocol.lock_key(run["id"]), "worker-1", px=int(protocol.LOCK_TTL_S * 1000))
        later = utcnow() + timedelta(seconds=settings.lost_after_s + 1)
        assert watchdog.check(now=later).requeued == []
        assert status(client, alice, run["id"])["status"] == "running"

    def test_heartbeats_naming_the_run_keep_it_alive(self, client: TestClient, engine: Engine,
                                                     redis_client: redis.Redis, ingestor: Ingestor,
                                                     settings: Settings, alice: Member) -> None:
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings)
        run = submit(client, alice)
        start(redis_client, ingestor, run["id"], 0)
        with Session(engine) as s:  # the run's own events stopped long ago...
            row = s.get(Run, run["id"])
            assert row is not None
            row.last_heartbeat = row.started_at = utcnow() - timedelta(seconds=settings.lost_after_s + 5)
            s.add(row)
            s.commit()
        # ...but its worker's heartbeat still names it (a long evaluation step, a slow checkpoint)
        push(redis_client, [ev(protocol.worker_run_id("w1"), 1, "heartbeat", worker_id="w1", state="busy",
                               run_id=run["id"], runs=[{"run_id": run["id"], "step": 3}])])
        drain(ingestor)
        assert watchdog.check().requeued == []

    def test_a_lost_run_that_was_being_cancelled_is_cancelled(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings)
        run = submit(client, alice)
        start(redis_client, ingestor, run["id"], 0)
        client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers)
        later = utcnow() + timedelta(seconds=settings.lost_after_s + 1)
        assert watchdog.check(now=later).cancelled == [run["id"]]
        assert status(client, alice, run["id"])["status"] == "cancelled"

    def test_resume_a_lost_run_after_it_failed(self, client: TestClient, engine: Engine, redis_client: redis.Redis,
                                               ingestor: Ingestor, settings: Settings, alice: Member) -> None:
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url),
                            settings.model_copy(update={"max_attempts": 1}))
        run = submit(client, alice)
        start(redis_client, ingestor, run["id"], 0)
        assert watchdog.check(now=utcnow() + timedelta(seconds=settings.lost_after_s + 1)).failed == [run["id"]]
        resumed = client.post(f"/api/v1/runs/{run['id']}/resume", headers=alice.headers).json()
        assert resumed["status"] == "queued" and resumed["attempt"] == 2
