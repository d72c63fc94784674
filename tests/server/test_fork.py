"""Fork: a new pretraining run from a checkpoint of another, with changed settings, in the parent's team and
project; the checkpoint is resolved by the server (a client never sends a path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from server.core.config import Settings
from server.events.ingest import Ingestor

import server_factories as factories
from server_factories import Member, drain, ev, fork, push, queue_messages, submit


def with_checkpoints(client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
                     member: Member, steps: tuple[int, ...] = (16, 32), **body: Any) -> dict[str, Any]:
    return factories.with_checkpoints(client, redis_client, ingestor, settings.storage_root, member, steps, **body)


class TestFork:
    def test_fork_starts_from_the_latest_checkpoint_with_changed_settings(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            alice: Member) -> None:
        parent = with_checkpoints(client, redis_client, ingestor, settings, alice, name="base", project="p1",
                                  overrides={"train.max_steps": 40})
        response = fork(client, alice, parent["id"], overrides={"optim.base_lr": 1e-4}, tags=["lr-down"])
        assert response.status_code == 201, response.text
        child = response.json()
        assert child["kind"] == "pretrain" and child["status"] == "queued" and child["id"] != parent["id"]
        assert child["parent_run_id"] == parent["id"] and child["parent_step"] == 32
        assert child["spec"]["fork_from"] == f"runs/{parent['id']}/checkpoints/step_0000032.pt"
        assert child["spec"]["optim"]["base_lr"] == 1e-4  # the change
        assert child["spec"]["train"]["max_steps"] == 40  # the parent's settings, kept
        assert parent["spec"]["optim"]["base_lr"] != 1e-4
        assert child["project"] == "p1" and child["team"] == alice.team and child["tags"] == ["lr-down"]
        assert child["name"] == "fork of base @32" and child["queue"] == parent["queue"]
        assert child["checkpoint"] is None  # an evaluation's column; a fork's path is spec.fork_from
        sent = queue_messages(redis_client, "testq")[0]
        assert sent["id"] == f"{child['id']}.1" and sent["args"][2]["fork_from"] == child["spec"]["fork_from"]
        listed = client.get("/api/v1/runs", params={"parent_run_id": parent["id"]}, headers=alice.headers).json()
        assert [r["parent_step"] for r in listed["data"]] == [32]

    def test_fork_at_a_step_with_a_spec_tree_and_of_a_fork(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            alice: Member) -> None:
        parent = with_checkpoints(client, redis_client, ingestor, settings, alice)
        child = fork(client, alice, parent["id"], checkpoint_step=16, spec={"monitor": {"policy": "rollback"}},
                     name="mine").json()
        assert child["parent_step"] == 16 and child["name"] == "mine"
        assert child["spec"]["fork_from"].endswith("step_0000016.pt")
        assert child["spec"]["monitor"]["policy"] == "rollback"
        ckpts = settings.storage_root / "runs" / child["id"] / "checkpoints"
        push(redis_client, [ev(child["id"], 0, "checkpoint", step=24, path=str(ckpts / "step_0000024.pt"))])
        drain(ingestor)
        grandchild = fork(client, alice, child["id"]).json()  # its own checkpoint, not its parent's
        assert grandchild["spec"]["fork_from"] == f"runs/{child['id']}/checkpoints/step_0000024.pt"
        assert grandchild["spec"]["monitor"]["policy"] == "rollback" and grandchild["parent_step"] == 24

    def test_another_teams_run_is_404_and_nothing_is_queued(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            alice: Member, bob: Member) -> None:
        parent = with_checkpoints(client, redis_client, ingestor, settings, alice)
        redis_client.delete("testq")
        response = fork(client, bob, parent["id"])
        assert response.status_code == 404
        assert fork(client, bob, "nosuchrun").status_code == 404
        assert queue_messages(redis_client, "testq") == []
        for path in ("lineage", "branches/1/metrics"):
            assert client.get(f"/api/v1/runs/{parent['id']}/{path}", headers=bob.headers).status_code == 404

    @pytest.mark.parametrize(("body", "loc"), [
        ({"overrides": {"optim.nope": 1}}, ["body", "spec", "optim", "nope"]),
        ({"overrides": {"optim.base_lr": -1}}, ["body", "spec", "optim", "base_lr"]),
        ({"spec": {"train": {"max_steps": "many"}}}, ["body", "spec", "train", "max_steps"]),
        ({"overrides": {"fork_from": "runs/x/checkpoints/step_0000016.pt"}}, ["body", "overrides", "fork_from"]),
        ({"spec": {"fork_from": "/etc/passwd"}}, ["body", "spec", "fork_from"]),
        ({"overrides": {"checkpoint": "runs/x/c.pt"}}, ["body", "overrides", "checkpoint"]),
        ({"checkpoint_step": -1}, ["body", "checkpoint_step"]),
        ({"resources": {"nodes": 1, "gpus_per_node": 3}}, ["body", "resources"]),
        ({"surprise": 1}, ["body", "surprise"]),
    ])
    def test_bad_changes_are_422_at_their_field(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            alice: Member, body: dict[str, Any], loc: list[str]) -> None:
        parent = with_checkpoints(client, redis_client, ingestor, settings, alice)
        redis_client.delete("testq")
        response = fork(client, alice, parent["id"], **body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc
        assert queue_messages(redis_client, "testq") == []

    def test_no_checkpoint_is_409_saying_so(self, client: TestClient, redis_client: redis.Redis,
                                            ingestor: Ingestor, settings: Settings, alice: Member) -> None:
        bare = submit(client, alice)
        response = fork(client, alice, bare["id"])
        assert response.status_code == 409 and response.json()["detail"] == f"run {bare['id']} has no checkpoint yet"
        parent = with_checkpoints(client, redis_client, ingestor, settings, alice)
        response = fork(client, alice, parent["id"], checkpoint_step=20)
        assert response.status_code == 409
        assert response.json()["detail"] == f"run {parent['id']} has no checkpoint at step 20"

    def test_a_checkpoint_whose_file_is_gone_is_409(self, client: TestClient, redis_client: redis.Redis,
                                                   ingestor: Ingestor, settings: Settings, alice: Member) -> None:
        """Where the server sees the storage (one machine), a checkpoint the engine pruned is not offered."""
        parent = with_checkpoints(client, redis_client, ingestor, settings, alice)
        ckpts: Path = settings.storage_root / "runs" / parent["id"] / "checkpoints"
        ckpts.mkdir(parents=True)
        (ckpts / "step_0000032.pt").write_bytes(b"x")
        assert fork(client, alice, parent["id"]).status_code == 201
        response = fork(client, alice, parent["id"], checkpoint_step=16)
        assert response.status_code == 409 and "no longer kept" in response.json()["detail"]

    def test_only_pretraining_runs_fork(self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor,
                                        settings: Settings, alice: Member) -> None:
        parent = with_checkpoints(client, redis_client, ingestor, settings, alice)
        knn = client.post(f"/api/v1/runs/{parent['id']}/evaluate", json={"kind": "knn"}, headers=alice.headers).json()
        assert knn["parent_step"] == 32  # an evaluation's parent_step: the step of the checkpoint it reads
        response = fork(client, alice, knn["id"])
        assert response.status_code == 409 and "only pretraining runs are forked" in response.json()["detail"]

    def test_a_client_fork_from_is_refused_everywhere_a_spec_comes_in(self, client: TestClient,
                                                                       alice: Member) -> None:
        path = "runs/someone/checkpoints/step_0000016.pt"
        for body, loc in (({"spec": {"fork_from": path}}, ["body", "spec", "fork_from"]),
                          ({"overrides": {"fork_from": path}}, ["body", "overrides", "fork_from"])):
            response = client.post("/api/v1/runs", json={"preset": "fmnist_tiny", **body}, headers=alice.headers)
            assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc
        study = client.post("/api/v1/studies", headers=alice.headers, json={
            "name": "s", "preset": "fmnist_tiny", "axes": [{"path": "fork_from", "values": [path]}]})
        assert study.status_code == 422 and study.json()["detail"][0]["loc"][-1] == "fork_from"
        study = client.post("/api/v1/studies", headers=alice.headers, json={
            "name": "s", "preset": "fmnist_tiny", "overrides": {"fork_from": path},
            "axes": [{"path": "optim.base_lr", "values": [1e-4, 2e-4]}]})
        assert study.status_code == 422 and study.json()["detail"][0]["loc"][-1] == "fork_from"
