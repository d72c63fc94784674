"""The run status machine: the table refuses what no one may do, the ingest goes through it, and the
browser learns the statuses from OpenAPI."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from server.events.ingest import Ingestor
from server.models import Run
from server.runs import lifecycle

from server_factories import Member, drain, ev, push, submit


def a_run(status: str) -> Run:
    return Run(id="r", kind="pretrain", spec={}, status=status, team_id=1, project_id=1, owner_id=1, queue="q")


class TestTable:
    @pytest.mark.parametrize(("start", "end", "cause"), [
        ("succeeded", "running", "worker"),  # an ended run does not start again by itself
        ("running", "queued", "engine"),  # only a worker hands its task back
        ("queued", "lost", "watchdog"),  # a run not started cannot go silent
        ("failed", "cancelled", "engine"),  # after the end, only the worker's final word counts
        ("succeeded", "queued", "resume"),  # a success is not resumed
        ("running", "cancelled", "cancel"),  # a running run is asked to stop; the worker says when it did
    ])
    def test_an_illegal_transition_is_refused_and_changes_nothing(self, start: str, end: lifecycle.RunStatus,
                                                                  cause: lifecycle.Cause) -> None:
        run = a_run(start)
        with pytest.raises(lifecycle.IllegalTransition, match=f"{start} -> {end}"):
            lifecycle.transition(run, end, cause, reason="no")
        assert run.status == start and run.message is None and run.finished_at is None

    def test_entering_an_end_stamps_it_and_a_failure_keeps_its_error(self) -> None:
        run = a_run("running")
        assert lifecycle.transition(run, "failed", "engine", error="loss is NaN")
        assert run.status == "failed" and run.error == "loss is NaN" and run.finished_at is not None

    def test_requeue_starts_the_next_attempt_from_clean(self) -> None:
        run = a_run("lost")
        run.worker_id, run.task_id, run.cancel_requested = "w1", "t1", True
        lifecycle.requeue(run, "watchdog", "lost; re-queued")
        assert (run.status, run.attempt, run.worker_id, run.task_id, run.cancel_requested) == \
            ("queued", 2, None, None, False)

    def test_every_status_is_terminal_active_or_lost(self) -> None:
        assert set(lifecycle.STATUSES) == lifecycle.TERMINAL | lifecycle.ACTIVE | {"lost"}
        assert not lifecycle.TERMINAL & lifecycle.ACTIVE
        assert {s for pair in lifecycle.ALLOWED for s in pair} <= set(lifecycle.STATUSES)


def test_a_late_running_event_does_not_revive_a_cancelled_run(client: TestClient, engine: Engine,
                                                               redis_client: redis.Redis, ingestor: Ingestor,
                                                               alice: Member) -> None:
    run = submit(client, alice)
    assert client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers).json()["status"] == "cancelled"
    push(redis_client, [ev(run["id"], 0, "status", state="running", step=0)])
    drain(ingestor)
    with Session(engine) as s:
        stored = s.get(Run, run["id"])
        assert stored is not None and stored.status == "cancelled" and stored.last_seq == 0


def test_openapi_types_the_status_as_the_enum(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("RunPublic", "EvalCell"):
        status = schemas[name]["properties"]["status"]
        ref = status.get("$ref", "").rsplit("/", 1)[-1]
        assert (schemas[ref] if ref else status)["enum"] == list(lifecycle.STATUSES), name
