"""A run's resources through the REST API: machines and devices per machine, checked at submission against the
spec's global batch and against the agents that exist (their heartbeats in Redis, as `worker/gang.py` describes
them), stored with the run and shown by it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from server.events.ingest import Ingestor
from server.models import Run
from worker import gang, protocol

from server_factories import Member, agent_beat, drain, ev, push, queue_messages, submit


def post(client: TestClient, member: Member, **body: Any) -> Any:
    return client.post("/api/v1/runs", headers=member.headers,
                       json={"kind": "pretrain", "preset": "fmnist_tiny", "queue": "testq", **body})


def the_error(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert isinstance(error, dict)
    return error


def test_a_run_asks_for_one_device_by_default(client: TestClient, engine: Engine, alice: Member) -> None:
    run = submit(client, alice)
    assert (run["nodes"], run["gpus_per_node"], run["wait_reason"], run["placement"]) == (1, 1, None, None)
    with Session(engine) as s:
        row = s.get(Run, run["id"])
        assert row is not None and (row.nodes, row.gpus_per_node) == (1, 1)
    listed = client.get("/api/v1/runs", headers=alice.headers).json()["data"]
    assert [(r["id"], r["nodes"], r["gpus_per_node"]) for r in listed] == [(run["id"], 1, 1)]


def test_one_device_is_never_refused_even_with_no_agent(client: TestClient, redis_client: redis.Redis,
                                                        alice: Member) -> None:
    run = submit(client, alice, resources={"nodes": 1, "gpus_per_node": 1})  # legacy workers serve it
    assert (run["nodes"], run["gpus_per_node"]) == (1, 1)
    assert len(queue_messages(redis_client, "testq")) == 1


@pytest.mark.parametrize("resources, field", [
    ({"nodes": 0}, "nodes"), ({"nodes": 257}, "nodes"), ({"gpus_per_node": 0}, "gpus_per_node"),
    ({"gpus_per_node": 65}, "gpus_per_node"), ({"gpus_per_node": "four"}, "gpus_per_node"),
    ({"gpus_per_node": 2.5}, "gpus_per_node"), ({"gpus": 2}, "gpus")])
def test_a_request_out_of_range_is_422_at_its_field(client: TestClient, redis_client: redis.Redis, alice: Member,
                                                   resources: dict[str, Any], field: str) -> None:
    error = the_error(post(client, alice, resources=resources))
    assert error["loc"] == ["body", "resources", field]
    assert queue_messages(redis_client, "testq") == []


@pytest.mark.parametrize("kind", ["knn", "linear", "finetune"])
def test_an_evaluation_runs_on_one_device(client: TestClient, redis_client: redis.Redis, alice: Member,
                                         kind: str) -> None:
    agent_beat(redis_client, "a", [0, 1, 2, 3])
    parent = submit(client, alice)
    for body in ({"kind": kind, "preset": None, "run_id": parent["id"]}, {"kind": kind, "preset": None}):
        error = the_error(post(client, alice, resources={"nodes": 1, "gpus_per_node": 2}, **body))
        assert error["loc"] == ["body", "resources"]
        assert f"an evaluation ({kind}) runs on one device (1x1), not 1x2" in error["msg"]


def test_the_global_batch_must_split_over_the_devices(client: TestClient, redis_client: redis.Redis,
                                                      alice: Member) -> None:
    agent_beat(redis_client, "a", list(range(8)))
    agent_beat(redis_client, "b", list(range(8)))
    # fmnist_tiny's batch is 64; the overrides win over the preset
    error = the_error(post(client, alice, resources={"nodes": 1, "gpus_per_node": 3}))
    assert error["loc"] == ["body", "resources"]
    assert "optim.batch_size 64" in error["msg"] and "3 devices (1x3)" in error["msg"]
    assert "each would need 21.33 images" in error["msg"] and "63 (21 per device) or 66 (22 per device)" in error["msg"]
    error = the_error(post(client, alice, resources={"nodes": 2, "gpus_per_node": 3}))
    assert "6 devices (2x3)" in error["msg"] and "10.67 images" in error["msg"]
    assert "60 (10 per device) or 66 (11 per device)" in error["msg"]
    assert queue_messages(redis_client, "testq") == []


def test_a_batch_that_splits_is_accepted_after_the_overrides(client: TestClient, redis_client: redis.Redis,
                                                              alice: Member) -> None:
    agent_beat(redis_client, "a", list(range(8)))
    agent_beat(redis_client, "b", list(range(8)))
    error = the_error(post(client, alice, resources={"nodes": 2, "gpus_per_node": 4},
                           overrides={"optim.batch_size": 60}))
    assert "optim.batch_size 60" in error["msg"] and "7.5 images" in error["msg"]
    run = submit(client, alice, resources={"nodes": 2, "gpus_per_node": 4}, overrides={"optim.batch_size": 96})
    assert run["spec"]["optim"]["batch_size"] == 96 and (run["nodes"], run["gpus_per_node"]) == (2, 4)


def test_a_request_no_machine_can_ever_satisfy_says_what_exists(client: TestClient, redis_client: redis.Redis,
                                                                 alice: Member) -> None:
    error = the_error(post(client, alice, resources={"nodes": 1, "gpus_per_node": 2}))
    assert error["loc"] == ["body", "resources"]
    assert "no agent is registered on queue 'testq'" in error["msg"]
    agent_beat(redis_client, "a", [0, 1, 2, 3])
    agent_beat(redis_client, "b", [0, 1])
    agent_beat(redis_client, "elsewhere", list(range(16)), queue="otherq")  # another queue's machine does not count
    error = the_error(post(client, alice, resources={"nodes": 1, "gpus_per_node": 8}))
    assert error["loc"] == ["body", "resources"]
    assert "asks for 8 free GPUs on one machine" in error["msg"]
    assert "2 machines on queue 'testq': a (4 GPUs), b (2 GPUs)" in error["msg"]
    error = the_error(post(client, alice, resources={"nodes": 2, "gpus_per_node": 4}))
    assert "asks for 2 machines with 4 free GPUs" in error["msg"]
    assert queue_messages(redis_client, "testq") == [] and client.get(
        "/api/v1/runs", headers=alice.headers).json()["count"] == 0


def test_machines_on_different_storage_cannot_share_a_run(client: TestClient, redis_client: redis.Redis,
                                                          alice: Member) -> None:
    agent_beat(redis_client, "a", [0, 1], storage="/mnt/a")
    agent_beat(redis_client, "b", [0, 1], storage="/mnt/b")
    error = the_error(post(client, alice, resources={"nodes": 2, "gpus_per_node": 2}))
    assert "different storage roots (/mnt/a, /mnt/b)" in error["msg"]


def test_a_stopped_agent_and_a_legacy_worker_count_for_nothing(client: TestClient, redis_client: redis.Redis,
                                                               alice: Member) -> None:
    agent_beat(redis_client, "gone", [0, 1, 2, 3], state="stopped")
    legacy = {"worker_id": "old", "host": "old.example", "queue": "testq", "state": "idle"}  # no "agent"
    redis_client.hset(protocol.worker_key("old"), "hb", json.dumps(legacy))
    error = the_error(post(client, alice, resources={"nodes": 1, "gpus_per_node": 2}))
    assert "no agent is registered on queue 'testq'" in error["msg"]


def test_a_satisfiable_request_is_stored_with_its_resources(client: TestClient, engine: Engine,
                                                            redis_client: redis.Redis, alice: Member) -> None:
    # busy devices do not make a request impossible: it waits for them (the scheduler says why)
    agent_beat(redis_client, "a", [0, 1, 2, 3], held={0: "other.1", 1: "other.1", 2: "other.1"})
    agent_beat(redis_client, "b", [0, 1, 2, 3, 4, 5, 6, 7])
    one = submit(client, alice, resources={"nodes": 1, "gpus_per_node": 8})
    two = submit(client, alice, resources={"nodes": 2, "gpus_per_node": 4})
    assert (one["nodes"], one["gpus_per_node"], two["nodes"], two["gpus_per_node"]) == (1, 8, 2, 4)
    with Session(engine) as s:
        rows = {r: s.get(Run, r) for r in (one["id"], two["id"])}
        assert all(row is not None for row in rows.values())
        assert [(row.nodes, row.gpus_per_node) for row in rows.values() if row] == [(1, 8), (2, 4)]
        row = rows[two["id"]]
        assert row is not None
        row.wait_reason = "waiting for 2 machines with 4 free GPUs (free now: a: 1, b: 8)"
        row.placement = [{"worker_id": "b", "host": "b.example", "devices": [0, 1, 2, 3]},
                         {"worker_id": "a", "host": "a.example", "devices": [3]}]
        s.add(row)
        s.commit()
    shown = client.get(f"/api/v1/runs/{two['id']}", headers=alice.headers).json()
    assert shown["wait_reason"] == "waiting for 2 machines with 4 free GPUs (free now: a: 1, b: 8)"
    assert shown["placement"] == [{"worker_id": "b", "host": "b.example", "devices": [0, 1, 2, 3]},
                                  {"worker_id": "a", "host": "a.example", "devices": [3]}]


def test_an_agents_devices_show_who_holds_them_to_that_team_only(client: TestClient, redis_client: redis.Redis,
                                                                 ingestor: Ingestor, alice: Member,
                                                                 bob: Member) -> None:
    mine, theirs = submit(client, alice)["id"], submit(client, bob)["id"]
    slots = [{"device": 0, "run_id": mine, "attempt": 1}, {"device": 1, "run_id": mine, "attempt": 1},
             {"device": 2, "run_id": theirs, "attempt": 2}, {"device": 3, "run_id": None, "attempt": None}]
    push(redis_client, [ev(protocol.worker_run_id("a"), 1, "heartbeat", worker_id="a", host="box", queue="testq",
                           state="busy", runs=[], agent={"devices": [0, 1, 2, 3], "device_kind": "gpu",
                                                         "storage": "/shared", "node_queue": gang.node_queue("a"),
                                                         "slots": slots}),
                        ev(protocol.worker_run_id("old"), 1, "heartbeat", worker_id="old", host="box2",
                           queue="testq", state="idle", runs=[])])
    drain(ingestor)
    by_alice = {w["id"]: w for w in client.get("/api/v1/workers", headers=alice.headers).json()["data"]}
    assert by_alice["old"]["agent"] is None  # a one-GPU worker
    agent = by_alice["a"]["agent"]
    assert (agent["devices"], agent["device_kind"], agent["storage"]) == ([0, 1, 2, 3], "gpu", "/shared")
    assert [(s["device"], s["held"], s["run_id"], s["attempt"]) for s in agent["slots"]] == [
        (0, True, mine, 1), (1, True, mine, 1), (2, True, None, None), (3, False, None, None)]
    by_bob = client.get("/api/v1/workers", headers=bob.headers).json()["data"]
    [bobs] = [w for w in by_bob if w["id"] == "a"]
    assert [(s["device"], s["held"], s["run_id"]) for s in bobs["agent"]["slots"]] == [
        (0, True, None), (1, True, None), (2, True, theirs), (3, False, None)]
    assert mine not in json.dumps(by_bob) and theirs not in json.dumps(by_alice)
    history = client.get("/api/v1/workers/a/history", headers=bob.headers).json()
    assert history["data"] and mine not in json.dumps(history)
