"""The scheduler loop without processes: agents are their heartbeats in Redis (the contract they write), node
tasks are the Celery messages it sends, and members joining or ending are the fields their node tasks set.
Reservation, release on a gang that does not form, release and re-queue on a machine lost, and the run's
attempts, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from server.core.config import Settings
from server.models import Run
from server.runs import gangs
from server.runs.dispatch import Dispatcher
from server.runs.gangs import GangScheduler
from worker import gang, protocol

from server_factories import Member, queue_messages, submit


def beat(r: redis.Redis, worker_id: str, devices: int = 1, storage: str = "/shared", queue: str = "testq") -> None:
    hb = {"worker_id": worker_id, "host": f"host-{worker_id}", "queue": queue, "state": "idle",
          "agent": {"devices": list(range(devices)), "device_kind": "gpu", "storage": storage,
                    "slots": [{"device": d, "run_id": None, "attempt": None} for d in range(devices)]}}
    r.hset(protocol.worker_key(worker_id), "hb", json.dumps(hb))
    r.pexpire(protocol.worker_key(worker_id), 30_000)


def scheduler(engine: Engine, r: redis.Redis, settings: Settings, **update: Any) -> GangScheduler:
    return GangScheduler(engine, r, Dispatcher(settings.redis_url), settings.model_copy(update=update))


def run_of(engine: Engine, run_id: str) -> Run:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


def set_status(engine: Engine, run_id: str, status: str) -> None:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status = status
        session.add(run)
        session.commit()


def held(r: redis.Redis, worker_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(gang.slots_key(worker_id)).items()}


@pytest.fixture(autouse=True)
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gangs, "SILENT_GRACE_S", 0.0)


def two_machine_run(client: TestClient, alice: Member, **overrides: Any) -> dict[str, Any]:
    return submit(client, alice, overrides={"optim.batch_size": 64, **overrides},
                  resources={"nodes": 2, "gpus_per_node": 1})


def running_on_two_machines(client: TestClient, engine: Engine, r: redis.Redis, settings: Settings,
                            alice: Member) -> tuple[dict[str, Any], GangScheduler, str]:
    """A two-machine run placed on agents a and b, both joined, running: (run, its scheduler, its gang)."""
    beat(r, "a")
    beat(r, "b")
    run = two_machine_run(client, alice)
    sched = scheduler(engine, r, settings)
    sched.tick()
    token = run_of(engine, run["id"]).task_id
    assert token
    for m in ("a", "b"):
        r.hset(gang.gang_key(token), f"joined:{m}", time.time())
    set_status(engine, run["id"], "running")
    return run, sched, token


def test_a_two_machine_run_is_placed_on_two_agents_all_at_once(client: TestClient, engine: Engine,
                                                               redis_client: redis.Redis, settings: Settings,
                                                               alice: Member) -> None:
    beat(redis_client, "a")
    beat(redis_client, "b")
    run = two_machine_run(client, alice)
    assert run["status"] == "queued" and not run["placement"]
    assert queue_messages(redis_client, "testq") == []  # not the shared queue's
    out = scheduler(engine, redis_client, settings).tick()
    assert out.placed == [run["id"]]
    placed = run_of(engine, run["id"])
    token = placed.task_id
    assert token and gang.parse_token(token) == (run["id"], 1)
    assert [p["worker_id"] for p in placed.placement or []] == ["a", "b"] and placed.wait_reason is None
    assert held(redis_client, "a") == {"0": token} and held(redis_client, "b") == {"0": token}
    for index, member in enumerate(("a", "b")):
        [message] = queue_messages(redis_client, gang.node_queue(member))
        assert message["task"] == protocol.TASK_NODE and message["id"] == f"{token}.{index}"
        assert message["args"][4]["gang"] == token and message["args"][4]["members"] == ["a", "b"]
    # placed once: the next pass sends nothing more
    assert scheduler(engine, redis_client, settings).tick().placed == []


def test_a_run_that_does_not_fit_waits_with_the_reason(client: TestClient, engine: Engine,
                                                       redis_client: redis.Redis, settings: Settings,
                                                       alice: Member) -> None:
    beat(redis_client, "a")
    beat(redis_client, "b")
    beat(redis_client, "c")
    first, second = two_machine_run(client, alice), two_machine_run(client, alice)
    out = scheduler(engine, redis_client, settings).tick()
    assert out.placed == [first["id"]]
    waiting = run_of(engine, second["id"])
    assert waiting.placement is None and waiting.task_id is None
    assert waiting.wait_reason == "waiting for 2 machines with 1 free GPU (free now: a: 0, b: 0, c: 1)"


def test_a_gang_that_does_not_form_gives_every_device_back_and_waits_again(
        client: TestClient, engine: Engine, redis_client: redis.Redis, settings: Settings, alice: Member) -> None:
    beat(redis_client, "a")
    beat(redis_client, "b")
    run = two_machine_run(client, alice)
    sched = scheduler(engine, redis_client, settings, gang_form_timeout_s=0.2)
    sched.tick()
    token = run_of(engine, run["id"]).task_id
    assert token
    redis_client.hset(gang.gang_key(token), "joined:a", time.time())  # b never takes its task
    time.sleep(0.3)
    redis_client.delete(protocol.worker_key("b"))  # and then goes away, so the run cannot be placed again
    out = sched.tick()
    assert out.unformed == [run["id"]] and token in out.forgotten
    back = run_of(engine, run["id"])
    assert back.status == "queued" and back.attempt == 1 and back.placement is None and back.task_id is None
    assert "did not form within 0 s: b never joined" in (back.message or "")
    assert "waiting for 2 machines" in (back.wait_reason or "")
    assert held(redis_client, "a") == {} and held(redis_client, "b") == {}
    assert gang.read_gang(redis_client, token).abort  # type: ignore[union-attr]  # a's node task stops waiting
    assert not redis_client.sismember(gang.ACTIVE_KEY, token)


def test_a_machine_lost_mid_run_frees_its_devices_and_requeues_the_next_attempt(
        client: TestClient, engine: Engine, redis_client: redis.Redis, settings: Settings, alice: Member) -> None:
    run, sched, token = running_on_two_machines(client, engine, redis_client, settings, alice)
    assert sched.tick().lost == []  # both alive: nothing to do
    redis_client.delete(protocol.worker_key("b"))  # b's machine is gone: no heartbeat, no exit recorded
    out = sched.tick()
    assert out.lost == [run["id"]] and out.requeued == [run["id"]]
    again = run_of(engine, run["id"])
    assert again.status == "queued" and again.attempt == 2 and again.task_id is None and again.placement is None
    assert "lost: machine b stopped heart-beating" in (again.message or "")
    assert held(redis_client, "b") == {}  # the dead machine's device, given back by the scheduler
    assert "machine b" in (gang.read_gang(redis_client, token).abort or "")  # type: ignore[union-attr]
    # a's node task ends (its processes stopped): the old gang is forgotten, a's device free again
    redis_client.hset(gang.gang_key(token), "exit:a", 1)
    gang.release(redis_client, "a", token, [0])
    out = sched.tick()
    assert token in out.forgotten
    assert run_of(engine, run["id"]).wait_reason and "waiting for 2 machines" in run_of(engine, run["id"]).wait_reason


def test_a_machine_whose_agent_stopped_after_its_processes_ended_is_not_lost(
        client: TestClient, engine: Engine, redis_client: redis.Redis, settings: Settings, alice: Member) -> None:
    run, sched, token = running_on_two_machines(client, engine, redis_client, settings, alice)
    redis_client.hset(gang.gang_key(token), "exit:b", 0)  # a warm stop: b's task ended, then its agent
    redis_client.delete(protocol.worker_key("b"))
    assert sched.tick().lost == []  # the run's final word (handed back) is still to come


def test_processes_gone_without_a_final_status_requeue_with_the_ranks_error_then_fail(
        client: TestClient, engine: Engine, redis_client: redis.Redis, settings: Settings, alice: Member) -> None:
    beat(redis_client, "a")
    beat(redis_client, "b")
    run = two_machine_run(client, alice)
    sched = scheduler(engine, redis_client, settings, max_attempts=2)
    assert sched.tick().placed == [run["id"]]
    for attempt in (1, 2):
        token = run_of(engine, run["id"]).task_id
        assert token
        key = gang.gang_key(token)
        for m in ("a", "b"):
            redis_client.hset(key, f"joined:{m}", time.time())
        set_status(engine, run["id"], "running")
        redis_client.hset(key, "error:b:1", json.dumps({"rank": 1, "host": "host-b", "message": "CUDA out of memory"}))
        redis_client.hset(key, mapping={"exit:a": 1, "exit:b": 1})
        for m in ("a", "b"):
            gang.release(redis_client, m, token, [0])
        out = sched.tick()
        assert out.lost == [run["id"]]
        after = run_of(engine, run["id"])
        if attempt == 1:  # re-queued, and placed again in the same pass (its devices were given back)
            assert out.requeued == [run["id"]] and out.placed == [run["id"]]
            assert after.status == "queued" and after.attempt == 2 and after.task_id != token
            assert "rank 1 on host-b: CUDA out of memory" in (after.message or "")
    failed = run_of(engine, run["id"])
    assert failed.status == "failed" and "gave up after 2 attempts" in (failed.error or "")


def test_a_cancelled_run_whose_machine_is_lost_ends_cancelled(client: TestClient, engine: Engine,
                                                              redis_client: redis.Redis, settings: Settings,
                                                              alice: Member) -> None:
    run, sched, token = running_on_two_machines(client, engine, redis_client, settings, alice)
    assert client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers).status_code == 200
    redis_client.delete(protocol.worker_key("a"))
    sched.tick()
    assert run_of(engine, run["id"]).status == "cancelled"


def test_one_scheduler_at_a_time(engine: Engine, redis_client: redis.Redis, settings: Settings) -> None:
    first, second = scheduler(engine, redis_client, settings), scheduler(engine, redis_client, settings)
    assert first.lead() and not second.lead() and first.lead()
