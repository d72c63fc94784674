"""The ingest loop against a real Redis Stream and a real database: idempotent, gap-aware, nothing lost when
the server dies between reading and acknowledging."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from server.embedded_redis import EmbeddedRedis
from server.events.ingest import Ingestor
from server.models import Alert, Checkpoint, EvalResult, Event, Metric, Run, Worker, WorkerHeartbeat
from server.projections import make_ingestor
from server.runs.projection import RunState
from worker import protocol

from server_factories import Member, drain, ev, metrics_ev, push, submit


def count(engine: Engine, model: type, run_id: str | None = None) -> int:
    with Session(engine) as s:
        query = select(func.count()).select_from(model)
        if run_id is not None:
            query = query.where(model.run_id == run_id)  # type: ignore[attr-defined]
        return int(s.exec(query).one())


def pending(client: redis.Redis) -> int:
    return int(client.xpending(protocol.EVENTS_STREAM, protocol.INGEST_GROUP)["pending"])


class TestIdempotency:
    def test_the_same_batch_twice_is_stored_once(self, engine: Engine, redis_client: redis.Redis,
                                                 ingestor: Ingestor) -> None:
        batch = [metrics_ev("r1", i, i, loss=4.0 - i / 10, lr=1e-3) for i in range(20)]
        push(redis_client, batch)
        first = drain(ingestor)
        assert (first.inserted, first.duplicates) == (20, 0)
        push(redis_client, batch)  # a worker re-sending after a lost acknowledgement
        second = drain(ingestor)
        assert (second.inserted, second.duplicates) == (0, 20)
        assert count(engine, Event, "r1") == 20 and count(engine, Metric, "r1") == 40
        assert ingestor.stats.duplicates == 20 and pending(redis_client) == 0
        assert second.published == []  # subscribers never see a duplicate

    def test_duplicates_inside_one_batch(self, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor) -> None:
        push(redis_client, [ev("r2", 0, "log", message="a"), ev("r2", 0, "log", message="a"), ev("r2", 1, "log")])
        result = drain(ingestor)
        assert (result.inserted, result.duplicates) == (2, 1)
        assert count(engine, Event, "r2") == 2

    def test_a_gap_in_seq_is_logged(self, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
                                    client: TestClient, alice: Member, caplog: pytest.LogCaptureFixture) -> None:
        run = submit(client, alice)
        push(redis_client, [ev(run["id"], i, "log") for i in range(5)])
        push(redis_client, [ev(run["id"], i, "log") for i in (7, 8, 9)])
        with caplog.at_level(logging.WARNING, logger="mocolab.ingest"):
            result = drain(ingestor)
        assert result.gaps == [(run["id"], 5, 6)]
        assert f"run {run['id']}: seq gap, 5..6 not received (yet)" in caplog.text
        push(redis_client, [ev(run["id"], 5, "log"), ev(run["id"], 6, "log")])  # the gap fills in later
        assert drain(ingestor).gaps == [] and count(engine, Event, run["id"]) == 10
        with Session(engine) as s:
            stored = s.get(Run, run["id"])
            assert stored is not None and stored.last_seq == 9

    def test_a_resumed_run_replaces_the_steps_it_runs_again(self, engine: Engine, redis_client: redis.Redis,
                                                            ingestor: Ingestor) -> None:
        push(redis_client, [metrics_ev("r3", i, i, loss=float(10 - i)) for i in range(10)])
        drain(ingestor)
        # killed after step 9, resumed from the checkpoint at step 6: steps 6..9 run again, with new seqs
        push(redis_client, [metrics_ev("r3", 10 + i, 6 + i, loss=0.5) for i in range(4)])
        drain(ingestor)
        with Session(engine) as s:
            rows = s.exec(select(Metric.step, Metric.value).where(Metric.run_id == "r3", Metric.key == "loss")
                          .order_by(col(Metric.step))).all()
        assert [step for step, _ in rows] == list(range(10))  # one continuous curve, no duplicate steps
        assert [v for _, v in rows][6:] == [0.5] * 4

    def test_non_finite_values_are_kept(self, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor) -> None:
        push(redis_client, [metrics_ev("r4", 0, 0, loss="nan", grad_norm="inf", lr=1e-3, images_encoded=64,
                                       flag=True, note="text")])
        drain(ingestor)
        with Session(engine) as s:
            values = dict(s.exec(select(Metric.key, Metric.value).where(Metric.run_id == "r4")).all())
        assert values["loss"] is None and values["grad_norm"] == math.inf and values["images_encoded"] == 64.0
        assert set(values) == {"loss", "grad_norm", "lr", "images_encoded"}  # bools and text are no metrics


class TestDelivery:
    def test_entries_read_but_not_acknowledged_are_read_again_after_a_restart(
            self, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor) -> None:
        ingestor.ensure_group()
        push(redis_client, [ev("r5", i, "log") for i in range(3)])
        # the server read the entry and died before writing it
        redis_client.xreadgroup(protocol.INGEST_GROUP, "test", {protocol.EVENTS_STREAM: ">"}, count=10)
        assert pending(redis_client) == 1 and count(engine, Event, "r5") == 0
        restarted = make_ingestor(engine, redis_client, consumer="test", block_ms=10)
        assert drain(restarted).inserted == 3
        assert pending(redis_client) == 0

    def test_an_entry_whose_read_reply_was_lost_is_read_again_at_once(self, engine: Engine,
                                                                       tmp_path: Path) -> None:
        """Redis hands an entry to the consumer and shuts down before the reply arrives (seen in the Redis
        restart test): the consumer's next read after the outage must take its own pending entries first,
        not wait for the 30 s claim of idle entries."""
        own = EmbeddedRedis(tmp_path / "redis").start()
        try:
            client = redis.Redis.from_url(own.url)
            ingestor = make_ingestor(engine, client, consumer="test", block_ms=10, claim_idle_ms=60_000)
            ingestor.ensure_group()
            push(client, [ev("r5b", 0, "log")])
            drain(ingestor)
            push(client, [ev("r5b", i, "log") for i in (1, 2)])
            # what Redis did before the reply was lost: the entry is now pending for this very consumer
            client.xreadgroup(protocol.INGEST_GROUP, "test", {protocol.EVENTS_STREAM: ">"}, count=10)
            own.stop()
            with pytest.raises(redis.ConnectionError):
                ingestor.step()
            own.start()
            push(client, [ev("r5b", 3, "log")])
            drain(ingestor)
            assert count(engine, Event, "r5b") == 4 and pending(client) == 0
        finally:
            own.stop()

    def test_entries_of_a_dead_consumer_are_claimed(self, engine: Engine, redis_client: redis.Redis) -> None:
        other = make_ingestor(engine, redis_client, consumer="other", block_ms=10, claim_idle_ms=1)
        other.ensure_group()
        push(redis_client, [ev("r6", 0, "log")])
        redis_client.xreadgroup(protocol.INGEST_GROUP, "dead-host", {protocol.EVENTS_STREAM: ">"}, count=10)
        time.sleep(0.01)  # idle longer than claim_idle_ms
        assert drain(other).inserted == 1
        assert pending(redis_client) == 0

    def test_unreadable_entries_are_skipped_not_retried(self, engine: Engine, redis_client: redis.Redis,
                                                        ingestor: Ingestor) -> None:
        redis_client.xadd(protocol.EVENTS_STREAM, {"b": "{not json"})
        redis_client.xadd(protocol.EVENTS_STREAM, {"x": "1"})
        push(redis_client, [ev("r7", 0, "log"), {"run_id": "r7", "seq": -1, "time": 0, "type": "log"},
                            {"run_id": "r7", "seq": 1, "time": 0, "type": "dance"}, ev("r7", 2, "log")])
        result = drain(ingestor)
        assert result.inserted == 2 and result.invalid == 4
        assert pending(redis_client) == 0
        dead = redis_client.xrange(f"{protocol.EVENTS_STREAM}:dead")
        errors = [fields[b"error"].decode() for _, fields in dead]
        assert [e.split(":")[0] for e in errors] == ["not JSON", "no field 'b'",
                                                      "2 of 4 events invalid (the others were stored)"]

    def test_an_entry_that_fails_only_when_stored_is_dead_lettered_and_the_rest_go_on(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            alice: Member) -> None:
        """A status event whose time no datetime holds passes the schema and fails in the run's projection:
        it once killed the ingest task, and a restart died again on the same entry."""
        run = submit(client, alice)["id"]
        push(redis_client, [ev(run, 0, "log", message="before")])
        poison = push(redis_client, [ev(run, 1, "log", message="fine"), {**ev(run, 2, "status", state="running"),
                                                                         "time": 1e20}])
        push(redis_client, [ev(run, 3, "log", message="after")])
        push(redis_client, [{**ev("worker:w9", 0, "heartbeat", host="h"), "time": -1e20}])  # a worker's beat too
        result = drain(ingestor)
        assert result.entries == 4 and pending(redis_client) == 0
        dead = redis_client.xrange(f"{protocol.EVENTS_STREAM}:dead")
        assert [fields[b"id"].decode() for _, fields in dead][0] == poison and len(dead) == 2
        assert all(b"year" in f[b"error"] or b"range" in f[b"error"] for _, f in dead), dead
        with Session(engine) as s:  # the poison's whole entry is out; the good entries around it are in
            assert sorted(e.seq for e in s.exec(select(Event).where(Event.run_id == run))) == [0, 3]
        push(redis_client, [ev(run, 4, "log", message="later")])  # the loop goes on
        assert drain(ingestor).inserted == 1
        assert drain(make_ingestor(engine, redis_client, consumer="test", block_ms=10)).entries == 0  # a restart too

    def test_a_value_the_database_refuses_goes_to_the_dead_letters(
            self, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor) -> None:
        push(redis_client, [ev("r8", 0, "log", message="fine")])
        # a NUL character: PostgreSQL text cannot hold it; SQLite can
        push(redis_client, [ev("r8", 1, "alert", kind="nan\x00", message="bad\x00")])
        push(redis_client, [ev("r8", 2, "log", message="fine too")])
        drain(ingestor)
        dead = redis_client.xlen(f"{protocol.EVENTS_STREAM}:dead")
        expected_dead = 1 if engine.dialect.name == "postgresql" else 0
        assert (count(engine, Event, "r8"), dead) == (3 - expected_dead, expected_dead)
        assert pending(redis_client) == 0  # nothing stays pending, nothing blocks the stream


class TestDerived:
    def test_status_progress_alerts_checkpoints_evals(self, engine: Engine, redis_client: redis.Redis,
                                                      ingestor: Ingestor, client: TestClient, alice: Member) -> None:
        run = submit(client, alice)
        rid = run["id"]
        push(redis_client, [
            ev(rid, 0, "config", spec={}),
            ev(rid, 1, "status", state="running", phase="pretrain", step=0, total_steps=64, message="pretraining"),
            metrics_ev(rid, 2, 0, loss=4.1), metrics_ev(rid, 3, 1, loss=4.0, knn_top1=40.0),
            ev(rid, 4, "alert", kind="grad_spike", step=1, metric="grad_norm", value="inf", severity="warning",
               message="gradient spike", remedy="lower the lr", evidence={"z": 12.0}),
            metrics_ev(rid, 5, 2, knn_top1=35.0),
            ev(rid, 6, "checkpoint", step=3, path="/x/step_3.pt", healthy=False),
            ev(rid, 7, "status", state="succeeded", step=64, message="finished at step 64"),
            ev(rid, 8, "status", state="succeeded", worker_id="w1", attempt=1),
        ])
        drain(ingestor)
        detail = client.get(f"/api/v1/runs/{rid}", headers=alice.headers).json()
        assert detail["status"] == "succeeded" and detail["worker_id"] == "w1"
        assert detail["started_at"] and detail["finished_at"] and detail["total_steps"] == 64
        assert detail["best_knn_top1"] == 40.0 and detail["last_seq"] == 8
        assert detail["alert_count"] == 1 and detail["model"] == "vit_micro_p7" and detail["framework"] == "mocov3"
        assert detail["dataset"] == "fashion_mnist"
        push(redis_client, [ev(rid, 4, "alert", kind="grad_spike", step=1)])  # a replay counts nothing
        drain(ingestor)
        assert client.get(f"/api/v1/runs/{rid}", headers=alice.headers).json()["alert_count"] == 1
        [alert] = client.get(f"/api/v1/runs/{rid}/alerts", headers=alice.headers).json()
        assert alert["kind"] == "grad_spike" and alert["step"] == 1 and alert["payload"]["evidence"] == {"z": 12.0}
        [ckpt] = client.get(f"/api/v1/runs/{rid}/checkpoints", headers=alice.headers).json()
        assert ckpt == {"run_id": rid, "step": 3, "seq": 6, "time": ckpt["time"], "path": "/x/step_3.pt",
                        "healthy": False}
        events = client.get(f"/api/v1/runs/{rid}/events", params={"after_seq": 5}, headers=alice.headers).json()
        assert [e["seq"] for e in events["data"]] == [6, 7, 8] and events["last_seq"] == 8
        only = client.get(f"/api/v1/runs/{rid}/events", params={"types": "alert"}, headers=alice.headers).json()
        assert [e["seq"] for e in only["data"]] == [4]

    def test_an_evaluation_result_updates_the_pretraining_run(
            self, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor, client: TestClient, alice: Member,
            settings: object) -> None:
        run = submit(client, alice)
        path = str(client.app.state.settings.storage_root / "runs" / run["id"] / "c.pt")  # type: ignore[attr-defined]
        push(redis_client, [ev(run["id"], 0, "checkpoint", step=8, path=path)])
        drain(ingestor)
        child = client.post(f"/api/v1/runs/{run['id']}/evaluate", json={"kind": "linear"}, headers=alice.headers)
        cid = child.json()["id"]
        push(redis_client, [ev(cid, 0, "eval_result", protocol="linear", top1=71.5, top5=90.0),
                            ev(cid, 1, "status", state="succeeded", worker_id="w", attempt=1)])
        drain(ingestor)
        parent = client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers).json()
        assert parent["best_linear_top1"] == 71.5
        evals = client.get(f"/api/v1/runs/{run['id']}/evals", headers=alice.headers).json()
        assert [(e["run_id"], e["top1"]) for e in evals] == [(cid, 71.5)]
        assert count(engine, EvalResult) == 1 and count(engine, Alert) == 0 and count(engine, Checkpoint) == 1

    def test_heartbeats_keep_worker_state_and_history(self, engine: Engine, redis_client: redis.Redis,
                                                      ingestor: Ingestor, client: TestClient, alice: Member) -> None:
        run = submit(client, alice)
        beat = {"worker_id": "gpu0", "host": "box", "queue": "gpu", "version": "0.1.0", "state": "busy",
                "run_id": run["id"], "step": 5, "runs": [{"run_id": run["id"], "step": 5}], "cpu_percent": 50.0,
                "gpus": [{"name": "H100", "memory_used": 1, "memory_total": 80, "utilization": 99, "temperature": 60}]}
        wid = protocol.worker_run_id("gpu0")
        first = ev(wid, 1000, "heartbeat", **beat)
        second = ev(wid, 1001, "heartbeat", **{**beat, "step": 6})
        push(redis_client, [first, second])
        push(redis_client, [second])  # re-sent
        drain(ingestor)
        assert count(engine, WorkerHeartbeat) == 2 and count(engine, Worker) == 1
        assert count(engine, Event) == 0  # heartbeats are history, not run events
        [worker] = client.get("/api/v1/workers", headers=alice.headers).json()["data"]
        assert worker["online"] and worker["id"] == "gpu0" and worker["current_run_id"] == run["id"]
        assert worker["telemetry"]["gpus"][0]["name"] == "H100" and worker["telemetry"]["step"] == 6
        history = client.get("/api/v1/workers/gpu0/history", headers=alice.headers).json()
        assert [h["telemetry"]["step"] for h in history["data"]] == [5, 6]
        with Session(engine) as s:
            stored = s.get(Run, run["id"])
            assert stored is not None and stored.worker_id == "gpu0" and stored.last_heartbeat is not None
        push(redis_client, [ev(wid, 1002, "heartbeat", **{**beat, "state": "stopped", "runs": [], "run_id": None})])
        drain(ingestor)
        [worker] = client.get("/api/v1/workers", headers=alice.headers).json()["data"]
        assert not worker["online"] and worker["state"] == "offline"
        assert client.get("/api/v1/workers/nope/history", headers=alice.headers).status_code == 404

    def test_heartbeat_history_older_than_the_retention_is_deleted(self, engine: Engine,
                                                                     redis_client: redis.Redis) -> None:
        ingestor = make_ingestor(engine, redis_client, consumer="test", block_ms=10, heartbeat_retention_s=86400,
                            prune_every_s=0)
        wid = protocol.worker_run_id("gpu1")
        beats = [ev(wid, seq, "heartbeat", worker_id="gpu1", state="idle") for seq in range(3)]
        beats[0]["time"] -= 3 * 86400
        beats[1]["time"] -= 2 * 86400
        push(redis_client, beats)
        drain(ingestor)
        with Session(engine) as s:
            kept = s.exec(select(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == "gpu1")).all()
            assert [h.seq for h in kept] == [2]
            assert s.get(Worker, "gpu1") is not None  # the worker itself stays

    def test_events_of_a_run_this_server_does_not_know_are_stored(self, engine: Engine, redis_client: redis.Redis,
                                                                  ingestor: Ingestor) -> None:
        push(redis_client, [ev("cli-run", 0, "status", state="running"), metrics_ev("cli-run", 1, 0, loss=1.0)])
        assert drain(ingestor).inserted == 2
        assert count(engine, Metric, "cli-run") == 1


def test_a_rollback_event_is_stored_like_any_other(engine: Engine, redis_client: redis.Redis,
                                                   ingestor: Ingestor) -> None:
    """The engine's `rollback` event (mocov3_core/events.py) passes the ingest's validation and is stored; the
    abandoned steps' metrics and the replayed ones land in order around it."""
    rollback = ev("rb", 2, "rollback", branch=1, from_step=24, to_step=16, alert_kind="grad_spike", alert_step=20,
                  lr_scale=0.5, skipped=[16, 22], checkpoint="/s/runs/rb/checkpoints/step_0000016.pt")
    push(redis_client, [metrics_ev("rb", 0, 23, loss=9.0), ev("rb", 1, "alert", kind="grad_spike", step=20),
                        rollback, metrics_ev("rb", 3, 16, loss=1.0)])
    result = drain(ingestor)
    assert (result.inserted, result.invalid) == (4, 0)
    with Session(engine) as session:
        stored = session.exec(select(Event).where(Event.run_id == "rb", Event.type == "rollback")).one()
    assert stored.seq == 2 and stored.payload["skipped"] == [16, 22] and stored.payload["branch"] == 1


def test_entry_bodies_are_json_lists_of_events(redis_client: redis.Redis) -> None:
    """The contract the worker's sink writes: one field `b` holding a JSON list (see worker/protocol.py)."""
    entry_id = push(redis_client, [ev("r", 0, "log")])
    [(_, fields)] = redis_client.xrange(protocol.EVENTS_STREAM, entry_id, entry_id)
    assert isinstance(json.loads(fields[b"b"]), list)


def test_progress_reaches_the_team_stream_at_most_once_a_second(engine: Engine, redis_client: redis.Redis,
                                                                client: TestClient, alice: Member) -> None:
    run = submit(client, alice)
    rid = run["id"]
    ingestor = make_ingestor(engine, redis_client, consumer="progress", progress_every_s=3600)
    push(redis_client, [ev(rid, 0, "status", state="running", step=0, total_steps=10), metrics_ev(rid, 1, 0, loss=1.0)])
    first = drain(ingestor)
    assert [(n.kind, n.data["status"]) for n in first.team] == [("run", "running")]  # the status change, once
    push(redis_client, [metrics_ev(rid, 2, 1, loss=0.9)])
    assert [n.kind for n in drain(ingestor).team] == []  # within the interval: nothing
    next(p for p in ingestor.projections if isinstance(p, RunState)).progress_every_s = 0.0
    push(redis_client, [metrics_ev(rid, 3, 2, loss=0.8, knn_top1=33.0)])
    [notice] = drain(ingestor).team
    kind, data = notice.kind, notice.data
    assert kind == "run" and data["step"] == 3 and data["best_knn_top1"] == 33.0
