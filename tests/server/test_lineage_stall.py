"""Stalled runs: heartbeats alive, no new step for longer than max(stall_factor x the usual step time,
stall_min_s): one `stall` alert per episode, and with stall_policy "restart" the attempt killed and the run re-queued
as its next attempt through the status machine. The watchdog's clock is injected (`now`)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from server.core.config import Settings
from server.core.db import utcnow
from server.events.bus import EventBus
from server.events.ingest import Ingestor
from server.models import Run
from server.runs.dispatch import Dispatcher
from server.runs.watchdog import Watchdog
from worker import protocol

from server_factories import Member, drain, ev, push, queue_messages, submit

MONITOR = {"monitor.stall_min_s": 30, "monitor.stall_factor": 10}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Webhooks to loopback allowed: a channel's receiver in these tests is never reached (nothing delivers)."""
    return settings.model_copy(update={"notify_allow_nets": "127.0.0.1/32"})


class Feed:
    """A worker's view of one run: a running attempt, then steps at a chosen pace on the worker's clock."""

    def __init__(self, redis_client: redis.Redis, ingestor: Ingestor, run_id: str) -> None:
        self.redis, self.ingestor, self.run_id = redis_client, ingestor, run_id
        self.seq, self.clock = 0, time.time() - 1000.0

    def push(self, events: list[dict[str, Any]]) -> datetime:
        """-> the server's time just before the ingest stored them (step_at is at or after it)."""
        push(self.redis, events)
        before = utcnow()
        drain(self.ingestor)
        return before

    def start(self, attempt: int = 1, worker: str = "w1") -> datetime:
        event = ev(self.run_id, self.seq, "status", state="running", worker_id=worker, attempt=attempt, final=False)
        self.seq += 1
        return self.push([event])

    def steps(self, first: int, n: int, every_s: float) -> datetime:
        events = []
        for step in range(first, first + n):
            self.clock += every_s
            events.append({"run_id": self.run_id, "seq": self.seq, "time": self.clock, "type": "metrics",
                           "payload": {"step": step, "values": {"loss": 1.0}}})
            self.seq += 1
        return self.push(events)


def watchdog(engine: Engine, redis_client: redis.Redis, settings: Settings, bus: EventBus | None = None,
             **changes: Any) -> Watchdog:
    return Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings.model_copy(update=changes), bus)


def row(engine: Engine, run_id: str) -> Run:
    with Session(engine) as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run


def alerts(client: TestClient, member: Member, run_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/runs/{run_id}/alerts", headers=member.headers)
    assert response.status_code == 200
    return [a for a in response.json() if a["kind"] == "stall"]


class TestStallAlert:
    def test_one_alert_per_episode_stored_counted_and_published(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        bus = EventBus()
        dog = watchdog(engine, redis_client, settings, bus)
        run = submit(client, alice, overrides=MONITOR)["id"]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        at = feed.steps(0, 20, every_s=0.5)
        assert abs(row(engine, run).step_time_s - 0.5) < 1e-6  # type: ignore[operator]
        assert dog.check(now=at + timedelta(seconds=29)).stalled == []  # limit: max(10 x 0.5 s, 30 s)
        result = dog.check(now=at + timedelta(seconds=45))
        assert result.stalled == [run] and result.restarted == []
        (alert,) = alerts(client, alice, run)
        assert alert["seq"] == -1 and alert["step"] == 20 and alert["severity"] == "critical"
        assert alert["metric"] == "step" and "no new step for 4" in alert["message"]
        assert alert["payload"]["threshold"] == 30 and alert["payload"]["baseline"] == 0.5
        assert "stall_policy=restart" in alert["remedy"]
        detail = client.get(f"/api/v1/runs/{run}", headers=alice.headers).json()
        assert detail["alert_count"] == 1 and detail["status"] == "running"
        published = [i for i in bus.team_since(f"{bus.epoch}-0") or [] if i.kind == "alert"]
        assert [(i.data["kind"], i.data["run_id"], i.data["seq"]) for i in published] == [("stall", run, -1)]

        assert dog.check(now=at + timedelta(seconds=55)).stalled == []  # the same episode: no second alert
        assert len(alerts(client, alice, run)) == 1

        at = feed.steps(20, 1, every_s=0.5)  # it moves again, then stops again: a new episode
        assert dog.check(now=at + timedelta(seconds=20)).stalled == []
        assert dog.check(now=at + timedelta(seconds=31)).stalled == [run]
        assert [a["seq"] for a in alerts(client, alice, run)] == [-2, -1]
        assert client.get(f"/api/v1/runs/{run}", headers=alice.headers).json()["alert_count"] == 2

    def test_the_usual_step_time_sets_the_limit_above_the_minimum(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        """Steps of 10 s: a pause of 60 s is no stall (limit 10 x 10 s), one of 101 s is (its heartbeats count as
        alive for lost_after_s)."""
        dog = watchdog(engine, redis_client, settings, lost_after_s=1000)
        run = submit(client, alice, overrides=MONITOR)["id"]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        at = feed.steps(0, 5, every_s=10.0)
        assert dog.check(now=at + timedelta(seconds=60)).stalled == []
        assert dog.check(now=at + timedelta(seconds=101)).stalled == [run]

    def test_steps_that_keep_coming_raise_nothing(self, client: TestClient, engine: Engine,
                                                 redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
                                                 alice: Member) -> None:
        dog = watchdog(engine, redis_client, settings)
        run = submit(client, alice, overrides=MONITOR)["id"]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        for first in range(0, 50, 10):
            at = feed.steps(first, 10, every_s=0.5)
            assert dog.check(now=at + timedelta(seconds=25)).stalled == []
        assert alerts(client, alice, run) == [] and row(engine, run).stalled_at is None

    def test_dead_heartbeats_are_a_lost_run_not_a_stall(self, client: TestClient, engine: Engine,
                                                       redis_client: redis.Redis, ingestor: Ingestor,
                                                       settings: Settings, alice: Member) -> None:
        dog = watchdog(engine, redis_client, settings)
        run = submit(client, alice, overrides=MONITOR)["id"]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        at = feed.steps(0, 10, every_s=0.5)
        result = dog.check(now=at + timedelta(seconds=settings.lost_after_s + 5))
        assert result.requeued == [run] and result.stalled == []
        assert alerts(client, alice, run) == []

    def test_an_attempt_that_has_not_stepped_yet_is_not_judged(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        """Loading data and compiling come before the first step; a new attempt (the usual step time of the last
        one kept) waits for its step to move before the watch judges it."""
        dog = watchdog(engine, redis_client, settings, lost_after_s=10_000)
        run = submit(client, alice, overrides=MONITOR)["id"]
        feed = Feed(redis_client, ingestor, run)
        at = feed.start()
        assert dog.check(now=at + timedelta(seconds=500)).stalled == []
        feed.steps(0, 10, every_s=0.5)
        at = feed.start()  # the worker reports running again (a resumed attempt's engine): startup again
        assert row(engine, run).step_time_s is not None
        assert dog.check(now=at + timedelta(seconds=500)).stalled == []
        at = feed.steps(10, 1, every_s=0.5)
        assert dog.check(now=at + timedelta(seconds=31)).stalled == [run]

    def test_defaults_when_the_spec_says_nothing(self, client: TestClient, engine: Engine,
                                                redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
                                                alice: Member) -> None:
        """Without monitor.stall_*: factor 10, at least 120 s, record only."""
        dog = watchdog(engine, redis_client, settings, lost_after_s=10_000)
        run = submit(client, alice)["id"]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        at = feed.steps(0, 10, every_s=0.5)
        assert dog.check(now=at + timedelta(seconds=119)).stalled == []
        result = dog.check(now=at + timedelta(seconds=121))
        assert result.stalled == [run] and result.restarted == []
        assert row(engine, run).status == "running"


    def test_the_stall_goes_to_the_teams_channels_once(self, client: TestClient, engine: Engine,
                                                       redis_client: redis.Redis, ingestor: Ingestor,
                                                       settings: Settings, alice: Member) -> None:
        """The stall is queued in the outbox of every matching channel in the alert's transaction (the delivery
        loop sends it later; server/notify)."""
        hook = client.post("/api/v1/channels", headers=alice.headers, json={
            "name": "stalls", "kind": "webhook", "url": "http://127.0.0.1:9/hook", "rules": {"alert_kinds": ["stall"]}})
        assert hook.status_code == 201, hook.text
        dog = watchdog(engine, redis_client, settings)
        run = submit(client, alice, overrides=MONITOR)["id"]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        at = feed.steps(0, 10, every_s=0.5)
        assert dog.check(now=at + timedelta(seconds=31)).stalled == [run]
        assert dog.check(now=at + timedelta(seconds=40)).stalled == []
        log = client.get(f"/api/v1/channels/{hook.json()['id']}/deliveries", headers=alice.headers).json()
        assert [(d["kind"], d["step"], d["status"]) for d in log] == [("alert", 10, "pending")]
        assert "stall" in log[0]["title"]


class TestStallRestart:
    def test_restart_kills_the_attempt_and_requeues_the_run(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        dog = watchdog(engine, redis_client, settings)
        run = submit(client, alice, overrides={**MONITOR, "monitor.stall_policy": "restart"})["id"]
        with Session(engine) as s:  # as dispatch recorded it: the task of attempt 1
            assert s.get(Run, run).task_id == f"{run}.1"  # type: ignore[union-attr]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        at = feed.steps(0, 10, every_s=0.5)
        redis_client.set(protocol.lock_key(run), "w1", px=60_000)  # the hung process's lock
        result = dog.check(now=at + timedelta(seconds=31))
        assert result.stalled == [run] and result.restarted == [run]
        after = client.get(f"/api/v1/runs/{run}", headers=alice.headers).json()
        assert after["status"] == "queued" and after["attempt"] == 2 and after["worker_id"] is None
        assert "stalled: no new step for 31 s on worker w1" in after["message"]
        assert [m["id"] for m in queue_messages(redis_client, "testq")] == [f"{run}.2", f"{run}.1"]
        assert redis_client.exists(protocol.restart_key(run, 1))  # the worker's revoke hook: not a cancel
        assert not redis_client.exists(protocol.lock_key(run)) and not redis_client.exists(protocol.cancel_key(run))
        (alert,) = alerts(client, alice, run)
        assert "restarted from its latest checkpoint" in alert["remedy"] and "attempt 2" in alert["remedy"]

        # the killed attempt's last word, late, changes nothing; attempt 2 runs, steps, and is not stalled
        push(redis_client, [ev(run, feed.seq, "status", state="cancelled", worker_id="w1", attempt=1, final=True)])
        feed.seq += 1
        drain(ingestor)
        assert row(engine, run).status == "queued"
        feed.start(attempt=2)
        at = feed.steps(10, 10, every_s=0.5)
        assert row(engine, run).status == "running" and row(engine, run).stalled_at is None
        assert dog.check(now=at + timedelta(seconds=20)).restarted == []

    def test_out_of_attempts_the_stalled_run_fails(self, client: TestClient, engine: Engine,
                                                  redis_client: redis.Redis, ingestor: Ingestor,
                                                  settings: Settings, alice: Member) -> None:
        dog = watchdog(engine, redis_client, settings, max_attempts=1)
        run = submit(client, alice, overrides={**MONITOR, "monitor.stall_policy": "restart"})["id"]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        at = feed.steps(0, 10, every_s=0.5)
        assert dog.check(now=at + timedelta(seconds=31)).restarted == [run]
        failed = client.get(f"/api/v1/runs/{run}", headers=alice.headers).json()
        assert failed["status"] == "failed" and "stalled: no new step" in failed["error"]
        assert "gave up after 1 attempts" in failed["error"]

    def test_a_run_being_cancelled_is_left_to_the_revoke(self, client: TestClient, engine: Engine,
                                                        redis_client: redis.Redis, ingestor: Ingestor,
                                                        settings: Settings, alice: Member) -> None:
        dog = watchdog(engine, redis_client, settings)
        run = submit(client, alice, overrides={**MONITOR, "monitor.stall_policy": "restart"})["id"]
        feed = Feed(redis_client, ingestor, run)
        feed.start()
        at = feed.steps(0, 10, every_s=0.5)
        client.post(f"/api/v1/runs/{run}/cancel", headers=alice.headers)
        result = dog.check(now=at + timedelta(seconds=31))
        assert result.stalled == [] and result.restarted == [] and result.revoked == [run]
        assert row(engine, run).attempt == 1
