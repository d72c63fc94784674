"""Submitting, listing, editing and controlling runs through the REST API, with the Celery messages that
result (read back from the queue's Redis list)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from server.core.config import Settings
from server.events.ingest import Ingestor
from server.models import Run
from server.runs.dispatch import Dispatcher
from server.runs.watchdog import Watchdog
from worker import protocol

from server_factories import Member, drain, ev, push, queue_messages, submit


class TestSubmit:
    def test_submit_without_credentials_is_401(self, client: TestClient) -> None:
        assert client.post("/api/v1/runs", json={"preset": "fmnist_tiny"}).status_code == 401

    def test_submit_stores_a_queued_run_then_sends_its_task(self, client: TestClient, engine: Engine,
                                                            redis_client: redis.Redis, alice: Member) -> None:
        run = submit(client, alice, overrides={"optim.epochs": 1}, tags=["smoke", "tiny"], notes="first")
        assert run["status"] == "queued" and run["kind"] == "pretrain" and run["attempt"] == 1
        assert run["spec"]["optim"]["epochs"] == 1 and run["spec"]["model"]["arch"] == "vit_micro_p7"
        assert run["tags"] == ["smoke", "tiny"] and run["owner"] == "alice" and run["project"] == "default"
        assert run["preset"] == "fmnist_tiny" and run["overrides"] == {"optim.epochs": 1}  # for clone and edit
        [message] = queue_messages(redis_client, "testq")
        assert message["task"] == protocol.TASK_RUN and message["id"] == f"{run['id']}.1"
        assert message["args"] == [run["id"], "pretrain", run["spec"], 1]
        with Session(engine) as s:
            row = s.get(Run, run["id"])
            assert row is not None and row.dispatched_at is not None and row.task_id == f"{run['id']}.1"

    def test_a_bad_value_is_422_with_the_field_path(self, client: TestClient, redis_client: redis.Redis,
                                                    alice: Member) -> None:
        response = client.post("/api/v1/runs", headers=alice.headers,
                               json={"preset": "fmnist_tiny", "overrides": {"optim.base_lr": -1}, "queue": "testq"})
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "spec", "optim", "base_lr"]
        assert "greater than 0" in error["msg"]
        assert queue_messages(redis_client, "testq") == []  # nothing sent for a refused run
        assert client.get("/api/v1/runs", headers=alice.headers).json()["count"] == 0

    def test_an_unknown_key_is_422_naming_it(self, client: TestClient, alice: Member) -> None:
        response = client.post("/api/v1/runs", headers=alice.headers,
                               json={"preset": "fmnist_tiny", "overrides": {"optim.learning_rate": 1}})
        [error] = response.json()["detail"]
        assert response.status_code == 422 and error["loc"] == ["body", "spec", "optim", "learning_rate"]
        assert error["msg"].startswith("unknown key")

    def test_a_bad_value_in_a_full_spec_is_422(self, client: TestClient, alice: Member) -> None:
        response = client.post("/api/v1/runs", headers=alice.headers,
                               json={"spec": {"model": {"arch": "vit_mini_p7", "depth": 0}}})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "spec", "model", "depth"]

    def test_an_unknown_preset_is_422(self, client: TestClient, alice: Member) -> None:
        response = client.post("/api/v1/runs", headers=alice.headers, json={"preset": "nope"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "preset"]

    def test_a_dataset_outside_the_allowed_roots_is_422(self, client: TestClient, alice: Member) -> None:
        response = client.post("/api/v1/runs", headers=alice.headers,
                               json={"preset": "fmnist_tiny", "overrides": {"data.root": "/etc"}})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "spec", "data", "root"]

    def test_a_malformed_body_is_422_not_500(self, client: TestClient, alice: Member) -> None:
        for body in ({"kind": "dance"}, {"overrides": {"model": 5}}, {"overrides": {"": 1}},
                     {"spec": {"optim": "fast"}}, {"tags": ["a,b"]}, {"queue": "no spaces"}):
            response = client.post("/api/v1/runs", headers=alice.headers, json=body)
            assert response.status_code == 422, (body, response.text)

    def test_a_broker_outage_leaves_the_run_queued_and_the_watchdog_sends_it(
            self, app: FastAPI, client: TestClient, engine: Engine, redis_client: redis.Redis, settings: Settings,
            alice: Member) -> None:
        app.state.dispatcher = Dispatcher("redis://127.0.0.1:9/0")  # nothing listens there
        run = submit(client, alice)
        assert run["status"] == "queued" and queue_messages(redis_client, "testq") == []
        with Session(engine) as s:
            row = s.get(Run, run["id"])
            assert row is not None and row.dispatched_at is None
        result = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings).check()
        assert result.resent == [run["id"]]
        assert [m["id"] for m in queue_messages(redis_client, "testq")] == [f"{run['id']}.1"]
        assert Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings).check().resent == []



class TestBounds:
    """Issue 10: numbers the engine cannot run, non-finite JSON and megabyte names were stored as runs."""

    @pytest.mark.parametrize(("key", "literal"), [
        ("optim.epochs", str(10**30)), ("optim.batch_size", str(10**12)), ("model.embed_dim", str(2**40)),
        ("optim.base_lr", "Infinity"), ("optim.base_lr", "NaN"), ("optim.base_lr", "1e999"),
    ])
    @pytest.mark.parametrize("form", ["overrides", "spec"])
    def test_an_out_of_range_spec_number_is_422_naming_it_and_nothing_is_stored(
            self, client: TestClient, redis_client: redis.Redis, alice: Member, key: str, literal: str,
            form: str) -> None:
        section, field = key.split(".")
        inner = f'{{"{key}": {literal}}}' if form == "overrides" else f'{{"{section}": {{"{field}": {literal}}}}}'
        body = f'{{"preset": "fmnist_tiny", "queue": "testq", "{form}": {inner}}}'  # raw: JSON has no NaN literal
        response = client.post("/api/v1/runs", content=body,
                               headers={**alice.headers, "Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "spec", section, field]
        assert queue_messages(redis_client, "testq") == []
        assert client.get("/api/v1/runs", headers=alice.headers).json()["count"] == 0

    @pytest.mark.parametrize("body", [
        '{"preset": "fmnist_tiny", "name": NaN}', '{"preset": "fmnist_tiny", "notes": Infinity}',
        '{"preset": "fmnist_tiny", "tags": [-Infinity]}', '{"preset": "fmnist_tiny", "project": NaN}',
        '{"preset": NaN}', '{"kind": Infinity}', '{"spec": {"data": {"mean": [0.5, NaN, 0.5]}}}',
        '{"spec": {"augment": {"blur_sigma": [0.1, Infinity]}}}', '{"overrides": {"train.seed": NaN}}',
        '{"overrides": {"data.root": Infinity}}', '[NaN]', 'NaN',
    ])
    def test_non_finite_json_literals_are_422_not_500(self, client: TestClient, alice: Member, body: str) -> None:
        response = client.post("/api/v1/runs", content=body,
                               headers={**alice.headers, "Content-Type": "application/json"})
        assert response.status_code == 422, (body, response.text)
        assert client.get("/api/v1/runs", headers=alice.headers).json()["count"] == 0

    def test_non_finite_literals_in_a_patch_or_an_evaluation_are_422(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            alice: Member) -> None:
        run = submit(client, alice, name="kept", notes="kept")
        path = settings.storage_root / "runs" / run["id"] / "checkpoints" / "step_0000016.pt"
        push(redis_client, [ev(run["id"], 0, "checkpoint", step=16, path=str(path), healthy=True)])
        drain(ingestor)
        headers = {**alice.headers, "Content-Type": "application/json"}
        for url, body, loc in (
                (f"/api/v1/runs/{run['id']}", '{"notes": NaN}', ["body", "notes"]),
                (f"/api/v1/runs/{run['id']}", '{"tags": [Infinity]}', ["body", "tags", 0]),
                (f"/api/v1/runs/{run['id']}/evaluate", '{"kind": "knn", "checkpoint_step": NaN}',
                 ["body", "checkpoint_step"]),
                (f"/api/v1/runs/{run['id']}/evaluate", '{"kind": "knn", "overrides": {"k": Infinity}}',
                 ["body", "spec", "k"])):
            method = client.patch if url.endswith(run["id"]) else client.post
            response = method(url, content=body, headers=headers)
            assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc, (body, response.text)
        back = client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers).json()
        assert (back["name"], back["notes"], back["tags"]) == ("kept", "kept", [])
        assert client.get("/api/v1/runs", headers=alice.headers).json()["count"] == 1  # no evaluation run either

    @pytest.mark.parametrize(("field", "value", "loc"), [
        ("name", "n" * 201, ["body", "name"]),
        ("tags", ["t" * 65], ["body", "tags", 0]),
        ("tags", [f"t{i}" for i in range(33)], ["body", "tags"]),
        ("notes", "n" * 10_001, ["body", "notes"]),
    ])
    def test_name_tags_and_notes_are_capped(self, client: TestClient, alice: Member, field: str, value: Any,
                                            loc: list[Any]) -> None:
        response = client.post("/api/v1/runs", headers=alice.headers,
                               json={"preset": "fmnist_tiny", "queue": "testq", field: value})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc, response.text
        assert client.get("/api/v1/runs", headers=alice.headers).json()["count"] == 0
        run = submit(client, alice, name="kept", tags=["kept"], notes="kept")
        response = client.patch(f"/api/v1/runs/{run['id']}", headers=alice.headers, json={field: value})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc, response.text
        back = client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers).json()
        assert (back["name"], back["tags"], back["notes"]) == ("kept", ["kept"], "kept")

    def test_the_caps_hold_exactly_at_their_limits(self, client: TestClient, alice: Member) -> None:
        run = submit(client, alice, name="n" * 200, tags=[f"{i:064d}" for i in range(32)], notes="n" * 10_000)
        assert len(run["name"]) == 200 and len(run["tags"]) == 32 and len(run["notes"]) == 10_000

    def test_an_evaluation_of_a_run_with_the_longest_name_gets_a_name_within_the_cap(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            alice: Member) -> None:
        run = submit(client, alice, name="n" * 200)
        path = settings.storage_root / "runs" / run["id"] / "checkpoints" / "step_0000016.pt"
        push(redis_client, [ev(run["id"], 0, "checkpoint", step=16, path=str(path), healthy=True)])
        drain(ingestor)
        response = client.post(f"/api/v1/runs/{run['id']}/evaluate", headers=alice.headers, json={"kind": "finetune"})
        assert response.status_code == 201, response.text
        assert response.json()["name"] == ("finetune of " + "n" * 200)[:200]

    def test_the_spec_name_is_capped_like_the_run_name(self, client: TestClient, alice: Member) -> None:
        # the run takes the spec's name when the body has none: that was the way round the body's cap
        response = client.post("/api/v1/runs", headers=alice.headers,
                               json={"preset": "fmnist_tiny", "queue": "testq", "spec": {"name": "n" * 201}})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "spec", "name"]
        assert client.get("/api/v1/runs", headers=alice.headers).json()["count"] == 0


class TestListAndEdit:
    def test_filters_and_pagination(self, client: TestClient, alice: Member) -> None:
        a = submit(client, alice, name="baseline lr", tags=["lr"], project="ablations")
        b = submit(client, alice, name="frozen patch", tags=["patch"])
        c = submit(client, alice, name="other", notes="compare with baseline")
        h = alice.headers

        def ids(**params: Any) -> list[str]:
            response = client.get("/api/v1/runs", params=params, headers=h)
            assert response.status_code == 200
            return sorted(r["id"] for r in response.json()["data"])

        assert ids() == sorted([a["id"], b["id"], c["id"]])
        assert ids(tag="lr") == [a["id"]]
        assert ids(project="ablations") == [a["id"]]
        assert ids(q="BASELINE") == sorted([a["id"], c["id"]])  # name or notes, any case
        assert ids(q="ablat") == [a["id"]]  # project name
        assert ids(owner="alice", kind="pretrain", status="queued") == sorted([a["id"], b["id"], c["id"]])
        assert ids(status="running") == []
        assert ids(q="100%_") == []  # LIKE wildcards are literal
        page = client.get("/api/v1/runs", params={"limit": 2, "skip": 0}, headers=h).json()
        assert page["count"] == 3 and len(page["data"]) == 2
        assert [r["id"] for r in page["data"]] == [c["id"], b["id"]]  # newest first
        assert client.get("/api/v1/runs", params={"limit": 2, "skip": 2}, headers=h).json()["data"][0]["id"] == a["id"]

    def test_patch_tags_and_notes(self, client: TestClient, alice: Member) -> None:
        run = submit(client, alice, tags=["x"])
        response = client.patch(f"/api/v1/runs/{run['id']}", json={"tags": ["b", "a", "b"], "notes": "spiky"},
                                headers=alice.headers)
        assert response.status_code == 200
        assert response.json()["tags"] == ["a", "b"] and response.json()["notes"] == "spiky"
        assert client.get("/api/v1/runs", params={"tag": "x"}, headers=alice.headers).json()["count"] == 0

    def test_presets_and_schema(self, client: TestClient, alice: Member) -> None:
        presets = {p["name"]: p for p in client.get("/api/v1/presets", headers=alice.headers).json()}
        assert "fmnist_tiny" in presets and presets["fmnist_tiny"]["overrides"]["model"]["arch"] == "vit_micro_p7"
        schema = client.get("/api/v1/schema/pretrain", headers=alice.headers).json()
        assert "optim" in schema["properties"]
        assert client.get("/api/v1/schema/linear", headers=alice.headers).json()["properties"]["kind"]
        assert client.get("/api/v1/schema/bogus", headers=alice.headers).status_code == 422

    def test_an_unknown_run_is_404(self, client: TestClient, alice: Member) -> None:
        response = client.get("/api/v1/runs/nope", headers=alice.headers)
        assert response.status_code == 404 and response.json() == {"detail": "run nope not found"}


class TestControl:
    def test_cancel_a_queued_run_cancels_it_at_once(self, client: TestClient, redis_client: redis.Redis,
                                                     alice: Member) -> None:
        run = submit(client, alice)
        response = client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        assert redis_client.get(protocol.cancel_key(run["id"])) == b"1"
        assert client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers).status_code == 200

    def test_cancel_a_running_run_is_cooperative_then_revoked(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        run = submit(client, alice)
        push(redis_client, [ev(run["id"], 0, "status", state="running", step=0, total_steps=10)])
        drain(ingestor)
        response = client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers)
        assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
        assert redis_client.exists(protocol.cancel_key(run["id"]))
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url),
                            settings.model_copy(update={"cancel_grace_s": 0}))
        assert watchdog.check().revoked == [run["id"]]
        assert watchdog.check().revoked == []  # once
        push(redis_client, [ev(run["id"], 1, "status", state="cancelled", worker_id="w1", attempt=1)])
        drain(ingestor)
        assert client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers).json()["status"] == "cancelled"

    def test_cancel_a_finished_run_is_409(self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor,
                                          alice: Member) -> None:
        run = submit(client, alice)
        push(redis_client, [ev(run["id"], 0, "status", state="running"),
                            ev(run["id"], 1, "status", state="succeeded", worker_id="w", attempt=1)])
        drain(ingestor)
        response = client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers)
        assert response.status_code == 409 and response.json()["detail"] == f"run {run['id']} already succeeded"

    def test_resume_a_failed_run_sends_the_next_attempt(self, client: TestClient, redis_client: redis.Redis,
                                                        ingestor: Ingestor, alice: Member) -> None:
        run = submit(client, alice)
        assert client.post(f"/api/v1/runs/{run['id']}/resume", headers=alice.headers).status_code == 409
        push(redis_client, [ev(run["id"], 0, "status", state="running"),
                            ev(run["id"], 1, "status", state="failed", message="CUDA OOM", worker_id="w", attempt=1)])
        drain(ingestor)
        failed = client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers).json()
        assert failed["status"] == "failed" and failed["error"] == "CUDA OOM"
        resumed = client.post(f"/api/v1/runs/{run['id']}/resume", headers=alice.headers).json()
        assert resumed["status"] == "queued" and resumed["attempt"] == 2 and resumed["id"] == run["id"]
        assert [m["id"] for m in queue_messages(redis_client, "testq")] == [f"{run['id']}.2", f"{run['id']}.1"]
        # a late word from attempt 1 changes nothing
        push(redis_client, [ev(run["id"], 2, "status", state="failed", worker_id="w", attempt=1)])
        drain(ingestor)
        assert client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers).json()["status"] == "queued"

    def test_evaluate_uses_the_latest_checkpoint(self, client: TestClient, redis_client: redis.Redis,
                                                 ingestor: Ingestor, settings: Settings, alice: Member) -> None:
        run = submit(client, alice)
        url = f"/api/v1/runs/{run['id']}/evaluate"
        response = client.post(url, json={"kind": "knn"}, headers=alice.headers)
        assert response.status_code == 409 and response.json()["detail"] == f"run {run['id']} has no checkpoint yet"
        ckpts = settings.storage_root / "runs" / run["id"] / "checkpoints"
        push(redis_client, [ev(run["id"], 0, "checkpoint", step=16, path=str(ckpts / "step_0000016.pt"), healthy=True),
                            ev(run["id"], 1, "checkpoint", step=32, path=str(ckpts / "step_0000032.pt"), healthy=True)])
        drain(ingestor)
        response = client.post(url, json={"kind": "linear", "overrides": {"epochs": 5}}, headers=alice.headers)
        assert response.status_code == 201, response.text
        child = response.json()
        assert child["kind"] == "linear" and child["parent_run_id"] == run["id"]
        # relative to the storage root, which workers may mount elsewhere
        assert child["spec"]["checkpoint"] == f"runs/{run['id']}/checkpoints/step_0000032.pt"
        assert child["spec"]["epochs"] == 5
        assert child["checkpoint"] == child["spec"]["checkpoint"] and child["queue"] == "testq"
        at16 = client.post(url, json={"kind": "knn", "checkpoint_step": 16}, headers=alice.headers).json()
        assert at16["spec"]["checkpoint"].endswith("step_0000016.pt")
        messages = {m["id"]: m for m in queue_messages(redis_client, "testq")}
        assert messages[f"{child['id']}.1"]["args"][1] == "linear"
        bad = client.post(url, json={"kind": "linear", "overrides": {"epochs": 0}}, headers=alice.headers)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "spec", "epochs"]
        # a step no database column holds (schemathesis found it: SQLite raised OverflowError, a 500)
        huge = client.post(url, json={"kind": "knn", "checkpoint_step": 2**70}, headers=alice.headers)
        assert huge.status_code == 422 and huge.json()["detail"][0]["loc"] == ["body", "checkpoint_step"]
        children = client.get("/api/v1/runs", params={"parent_run_id": run["id"]}, headers=alice.headers).json()
        assert children["count"] == 2

    def test_a_checkpoint_path_is_422_even_inside_storage(self, client: TestClient, alice: Member) -> None:
        """A checkpoint is named by its run (run_id, checkpoint_step): see test_cross_team.py."""
        for path in ("/etc/passwd", "../../etc/passwd", "runs/x/c.pt"):
            response = client.post("/api/v1/runs", headers=alice.headers,
                                   json={"kind": "knn", "spec": {"checkpoint": path}})
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["body", "spec", "checkpoint"]

    def test_a_worker_shutting_down_puts_the_run_back_in_the_queue(self, client: TestClient,
                                                                   redis_client: redis.Redis, ingestor: Ingestor,
                                                                   alice: Member) -> None:
        run = submit(client, alice)
        push(redis_client, [ev(run["id"], 0, "status", state="running", worker_id="w", attempt=1, final=False),
                            ev(run["id"], 1, "status", state="queued", worker_id="w", attempt=1, final=True)])
        drain(ingestor)
        back = client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers).json()
        assert back["status"] == "queued" and back["attempt"] == 1
