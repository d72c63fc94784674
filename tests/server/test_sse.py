"""Server-sent events against a live server (uvicorn in a thread) with the ingest loop running: a client
that disconnects and comes back with Last-Event-ID gets every event once, in order."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine

from server.core.config import Settings
from server.core.db import make_engine

from server_factories import LiveServer, Member, ev, make_member, metrics_ev, push, start_live


@pytest.fixture
def live_engine(live: LiveServer) -> Iterator[Engine]:
    engine = make_engine(live.app.state.settings.database)
    yield engine
    engine.dispose()


@pytest.fixture
def member(live_engine: Engine) -> Member:
    return make_member(live_engine, "sse-user", "team-s")


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into {id, event, data, retry} dicts (comments and pings skipped)."""
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if current:
                yield current
                current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        current[name] = value[1:] if value.startswith(" ") else value


def read_seqs(live: LiveServer, member: Member, run_id: str, until: int, last_event_id: str | None = None,
              stop_after: int | None = None) -> list[int]:
    headers = dict(member.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    seqs: list[int] = []
    with httpx.Client(timeout=httpx.Timeout(30.0)) as http, \
            http.stream("GET", f"{live.url}/api/v1/runs/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(response):
            if "id" not in event:
                continue  # server-made state changes carry no seq
            data = json.loads(event["data"])
            assert int(event["id"]) == data["seq"] and data["run_id"] == run_id
            seqs.append(data["seq"])
            if data["seq"] >= until or (stop_after is not None and len(seqs) >= stop_after):
                break
    return seqs


def submit(live: LiveServer, member: Member) -> str:
    response = httpx.post(f"{live.url}/api/v1/runs", headers=member.headers,
                          json={"preset": "fmnist_tiny", "queue": "sse-test"})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


class TestRunStream:
    def test_stream_needs_credentials_and_scopes_to_the_team(self, live: LiveServer, member: Member,
                                                             live_engine: Engine) -> None:
        run_id = submit(live, member)
        assert httpx.get(f"{live.url}/api/v1/runs/{run_id}/stream").status_code == 401
        other = make_member(live_engine, "outsider", "team-o")
        assert httpx.get(f"{live.url}/api/v1/runs/{run_id}/stream", headers=other.headers).status_code == 404

    def test_resume_with_last_event_id_misses_nothing(self, live: LiveServer, member: Member,
                                                      redis_client: redis.Redis) -> None:
        run_id = submit(live, member)
        push(redis_client, [ev(run_id, 0, "status", state="running", step=0, total_steps=100)]
             + [metrics_ev(run_id, s, s - 1, loss=1.0 / s) for s in range(1, 10)])
        first = read_seqs(live, member, run_id, until=9)
        assert first == list(range(10))
        # disconnected: the run goes on
        push(redis_client, [metrics_ev(run_id, s, s - 1, loss=1.0) for s in range(10, 20)])
        push(redis_client, [metrics_ev(run_id, s, s - 1, loss=1.0) for s in range(20, 30)])

        def more() -> None:  # and goes on while the client replays
            time.sleep(0.3)
            for start in range(30, 60, 5):
                push(redis_client, [metrics_ev(run_id, s, s - 1, loss=1.0) for s in range(start, start + 5)])
                time.sleep(0.05)

        feeder = threading.Thread(target=more)
        feeder.start()
        second = read_seqs(live, member, run_id, until=59, last_event_id=str(first[-1]))
        feeder.join()
        assert first + second == list(range(60))  # no gap, no duplicate, in order

    def test_a_live_client_gets_events_as_they_arrive(self, live: LiveServer, member: Member,
                                                      redis_client: redis.Redis) -> None:
        run_id = submit(live, member)
        push(redis_client, [metrics_ev(run_id, s, s, loss=1.0) for s in range(5)])

        def feed() -> None:
            time.sleep(0.5)
            for s in range(5, 25):
                push(redis_client, [metrics_ev(run_id, s, s, loss=1.0)])
                time.sleep(0.01)

        feeder = threading.Thread(target=feed)
        feeder.start()
        # after_seq skips the history the page already has (e.g. loaded over REST)
        seqs: list[int] = []
        with httpx.stream("GET", f"{live.url}/api/v1/runs/{run_id}/stream", params={"after_seq": 4},
                          headers=member.headers, timeout=30) as response:
            for event in sse_events(response):
                if "id" in event:
                    seqs.append(int(event["id"]))
                    if seqs[-1] == 24:
                        break
        feeder.join()
        assert seqs == list(range(5, 25))

    def test_a_change_the_server_makes_comes_without_seq_or_id(self, live: LiveServer, member: Member,
                                                              redis_client: redis.Redis) -> None:
        """The browser tells the server's own notices from the run's events by the absent seq."""
        run_id = submit(live, member)
        push(redis_client, [ev(run_id, 0, "log", message="hello")])
        subscribed = threading.Event()

        def cancel_once_subscribed() -> None:
            subscribed.wait(30)
            httpx.post(f"{live.url}/api/v1/runs/{run_id}/cancel", headers=member.headers, timeout=30)

        canceller = threading.Thread(target=cancel_once_subscribed)
        canceller.start()
        with httpx.stream("GET", f"{live.url}/api/v1/runs/{run_id}/stream", headers=member.headers,
                          timeout=30) as response:
            for event in sse_events(response):
                subscribed.set()  # an event came: the subscription exists (it is made before the replay)
                if event.get("event") == "run":
                    notice = event
                    break
        canceller.join()
        data = json.loads(notice["data"])
        assert "id" not in notice and "seq" not in data
        assert (data["type"], data["run_id"], data["payload"]["status"]) == ("run", run_id, "cancelled")

    def test_a_slow_client_that_overflows_its_queue_still_gets_everything(
            self, settings: Settings, redis_client: redis.Redis) -> None:
        live = start_live(settings.model_copy(update={"sse_queue": 4}))
        engine = make_engine(settings.database)
        try:
            member = make_member(engine, "slow", "team-q")
            run_id = submit(live, member)
            seqs: list[int] = []
            with httpx.stream("GET", f"{live.url}/api/v1/runs/{run_id}/stream", headers=member.headers,
                              timeout=30) as response:
                events = sse_events(response)
                for _ in range(3):  # 3 x 100 events, far more than the 4 the subscriber's queue holds
                    push(redis_client, [metrics_ev(run_id, s, s, loss=1.0) for s in range(len(seqs), len(seqs) + 100)])
                    for event in events:
                        if "id" in event:
                            seqs.append(int(event["id"]))
                            if len(seqs) % 100 == 0:
                                break
            assert seqs == list(range(300))
        finally:
            engine.dispose()
            live.stop()

    def test_a_connection_ends_after_its_lifetime_with_a_retry(self, settings: Settings, redis_client: redis.Redis,
                                                                ) -> None:
        live = start_live(settings.model_copy(update={"sse_lifetime_s": 1.0}))
        engine = make_engine(settings.database)
        try:
            member = make_member(engine, "short", "team-l")
            run_id = submit(live, member)
            started = time.monotonic()
            with httpx.stream("GET", f"{live.url}/api/v1/runs/{run_id}/stream", headers=member.headers,
                              timeout=30) as response:
                events = list(sse_events(response))
            assert time.monotonic() - started < 10
            assert events[-1].get("retry") == "1000"
        finally:
            engine.dispose()
            live.stop()


class TestTeamStream:
    def test_status_alerts_and_workers_of_your_team_only(self, live: LiveServer, member: Member,
                                                         live_engine: Engine, redis_client: redis.Redis) -> None:
        mine = submit(live, member)
        outsider = make_member(live_engine, "outsider2", "team-x")
        theirs = submit(live, outsider)
        received: list[dict[str, Any]] = []

        def feed() -> None:
            time.sleep(0.5)
            push(redis_client, [ev(theirs, 0, "status", state="running")])
            push(redis_client, [ev(mine, 0, "status", state="running"),
                                ev(mine, 1, "alert", kind="nan", step=3, message="NaN loss")])
            push(redis_client, [ev("worker:w9", 1, "heartbeat", worker_id="w9", state="idle", runs=[])])

        feeder = threading.Thread(target=feed)
        feeder.start()
        with httpx.stream("GET", f"{live.url}/api/v1/stream", headers=member.headers, timeout=30) as response:
            for event in sse_events(response):
                received.append(event)
                if {"run", "alert", "worker"} <= {e.get("event") for e in received}:
                    break
        feeder.join()
        kinds = [(e["event"], json.loads(e["data"]).get("id") or json.loads(e["data"]).get("run_id"))
                 for e in received]
        assert ("run", mine) in kinds and ("alert", mine) in kinds and ("worker", "w9") in kinds
        assert all(ident != theirs for _, ident in kinds)
        # Last-Event-ID replays from the server's buffer; an id from another server epoch asks for a resync
        with httpx.stream("GET", f"{live.url}/api/v1/stream", timeout=30,
                          headers={**member.headers, "Last-Event-ID": received[0]["id"]}) as response:
            replay = next(e for e in sse_events(response))
        assert replay["id"] == received[1]["id"]
        with httpx.stream("GET", f"{live.url}/api/v1/stream", timeout=30,
                          headers={**member.headers, "Last-Event-ID": "0-5"}) as response:
            assert next(e for e in sse_events(response))["event"] == "resync"
