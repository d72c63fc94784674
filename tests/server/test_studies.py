"""Studies in one request (a run per combination, validated before anything is queued), evaluations queued
when each run succeeds, the study's table with the paper's numbers, and the team's leaderboard."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from mocolab import cli
from server.core.config import Settings
from server.core.db import writer
from server.events.ingest import Ingestor
from server.models import Run
from server.runs.dispatch import Dispatcher
from server.runs.watchdog import Watchdog
from worker import protocol

from server_factories import LiveServer, Member, drain, ev, make_member, metrics_ev, push, queue_messages


def create(client: TestClient, member: Member, **body: Any) -> dict[str, Any]:
    body = {"name": "s", "preset": "fmnist_tiny", "queue": "studyq", **body}
    response = client.post("/api/v1/studies", json=body, headers=member.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def finish(redis_client: redis.Redis, ingestor: Ingestor, settings: Settings, run_id: str, *, knn: list[float],
           top1: float | None = None, protocol: str = "knn", alerts: int = 0) -> None:
    """What a worker would send for a pretraining run (or, with top1, an evaluation) that succeeds."""
    events = [ev(run_id, 0, "status", state="running", step=0, total_steps=len(knn))]
    seq = 1
    for step, value in enumerate(knn):
        events.append(metrics_ev(run_id, seq, step * 10, loss=5.0 - step, knn_top1=value))
        seq += 1
    for i in range(alerts):
        events.append(ev(run_id, seq, "alert", kind="grad_spike", step=i, severity="warning", message="spike"))
        seq += 1
    path = str(settings.storage_root / "runs" / run_id / "checkpoints" / "last.pt")
    events.append(ev(run_id, seq, "checkpoint", step=len(knn) * 10, path=path))
    if top1 is not None:
        seq += 1
        events.append(ev(run_id, seq, "eval_result", protocol=protocol, top1=top1, top5=min(100.0, top1 + 20)))
    events.append(ev(run_id, seq + 1, "status", state="succeeded", worker_id="w1", attempt=1))
    push(redis_client, events)
    drain(ingestor)


class TestCreate:
    def test_two_axes_make_every_combination_and_queue_them(self, client: TestClient, redis_client: redis.Redis,
                                                            alice: Member) -> None:
        study = create(client, alice, name="patch x lr", axes=[
            {"path": "model.stop_grad_patch_proj", "values": [False, True], "name": "patch projection"},
            {"path": "optim.base_lr", "values": [1e-4, {"label": "high", "value": 1e-2}]}],
            evaluations=["knn", "linear"])
        assert study["runs"] == 4 and study["evals_total"] == 8 and study["progress"] == {"queued": 4}
        assert [r["labels"] for r in study["rows"]] == [["no", "0.0001"], ["no", "high"], ["yes", "0.0001"],
                                                        ["yes", "high"]]
        assert study["axes"] == [{"name": "patch projection", "labels": ["no", "yes"]},
                                 {"name": "optim.base_lr", "labels": ["0.0001", "high"]}]
        sent = {m["args"][0]: m["args"] for m in queue_messages(redis_client, "studyq")}
        assert len(sent) == 4
        by_labels = {tuple(r["labels"]): r["run"]["id"] for r in study["rows"]}
        spec = client.get(f"/api/v1/runs/{by_labels[('yes', 'high')]}", headers=alice.headers).json()["spec"]
        assert spec["model"]["stop_grad_patch_proj"] is True and spec["optim"]["base_lr"] == 1e-2
        assert spec["model"]["arch"] == "vit_micro_p7"  # the preset is the base
        listed = client.get("/api/v1/studies", headers=alice.headers).json()
        assert [s["id"] for s in listed] == [study["id"]]

    def test_a_template_gives_the_papers_axes_and_numbers(self, client: TestClient, alice: Member) -> None:
        templates = {t["name"]: t for t in client.get("/api/v1/study-templates", headers=alice.headers).json()}
        assert templates["momentum"]["paper_numbers"] == {"0": 74.3, "0.9": 75.6, "0.99": 76.5, "0.999": 75.0}
        assert set(templates) >= {"frameworks", "position-embedding", "class-token", "bn-in-heads", "predictor",
                                  "batch-size", "learning-rate", "optimizer", "patch-projection"}
        study = create(client, alice, template="momentum")
        assert [r["labels"] for r in study["rows"]] == [["0"], ["0.9"], ["0.99"], ["0.999"]]
        assert [r["paper"] for r in study["rows"]] == [74.3, 75.6, 76.5, 75.0]
        assert study["paper"]["source"] == "Table 5" and study["title"] == "Momentum coefficient"
        # a template's axes with our own values (a CPU run does not want the paper's batch 4096)
        small = create(client, alice, template="patch-projection", axes=[
            {"name": "patch projection", "path": "model.stop_grad_patch_proj",
             "values": [{"label": "learned", "value": False}, {"label": "frozen", "value": True}]},
            {"name": "learning rate", "path": "optim.base_lr",
             "values": [{"label": "1.5e-4", "value": 1.5e-4}]}])
        assert [r["paper"] for r in small["rows"]] == [71.7, 73.4]
        lr = create(client, alice, template="learning-rate", axes=[{"path": "optim.base_lr", "values": [1e-3]}])
        spec = client.get(f"/api/v1/runs/{lr['rows'][0]['run']['id']}", headers=alice.headers).json()["spec"]
        assert spec["model"]["stop_grad_patch_proj"] is False  # the template's conditions hold with our values
        assert templates["learning-rate"]["base"] == {"model.stop_grad_patch_proj": False}

    def test_bad_input_is_422_with_the_path_and_queues_nothing(self, client: TestClient, redis_client: redis.Redis,
                                                               alice: Member) -> None:
        cases = [
            ({"axes": [{"path": "optim.base_lr", "values": [1e-4, -1.0]}]},
             ["body", "axes", "0", "values", "1", "optim", "base_lr"]),
            ({"axes": [{"path": "optim.no_such_field", "values": [1]}]},
             ["body", "axes", "0", "values", "0", "optim", "no_such_field"]),
            ({"overrides": {"optim.epochs": 0}, "axes": [{"path": "optim.base_lr", "values": [1e-4]}]},
             ["body", "overrides", "optim", "epochs"]),
            ({"template": "nope"}, ["body", "template"]),
            ({}, ["body", "axes"]),
            ({"axes": [{"values": [1, 2]}]}, ["body", "axes", "0", "values", "0"]),
            ({"axes": [{"path": "optim.base_lr", "values": [1e-4, 1e-4]}]}, ["body", "axes", "0", "values"]),
            ({"axes": [{"path": "optim.base_lr", "values": list(range(1, 10))},
                       {"path": "optim.batch_size", "values": list(range(2, 10))}]}, ["body", "axes"]),
            ({"evaluations": ["knn", "knn"], "axes": [{"path": "optim.base_lr", "values": [1e-4]}]},
             ["body", "evaluations"]),
            ({"eval_overrides": {"knn": {"k": 0}}, "axes": [{"path": "optim.base_lr", "values": [1e-4]}]},
             ["body", "eval_overrides", "knn", "k"]),
            ({"axes": [{"path": "not a path!", "values": [1]}]}, ["body", "axes", 0, "path"]),
            ({"axes": [{"path": "model.arch", "values": ["vit_micro_p7", "vit_zzz"]}]},
             ["body", "axes", "0", "values", "1", "model", "arch"]),
        ]
        for body, loc in cases:
            response = client.post("/api/v1/studies", json={"name": "bad", "preset": "fmnist_tiny", "queue": "badq",
                                                            **body}, headers=alice.headers)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["detail"][0]["loc"] == loc, (body, response.json())
        assert queue_messages(redis_client, "badq") == []
        assert client.get("/api/v1/studies", headers=alice.headers).json() == []


class TestProgress:
    def test_success_queues_the_evaluations_and_the_table_fills_in(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member, bob: Member) -> None:
        study = create(client, alice, name="m", axes=[{"path": "moco.momentum", "values": [0.9, 0.99]}],
                       evaluations=["knn", "linear"], eval_overrides={"linear": {"epochs": 3}})
        first, second = (r["run"]["id"] for r in study["rows"])
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings)
        assert watchdog.check().followups == []  # nothing has succeeded yet

        finish(redis_client, ingestor, settings, first, knn=[20.0, 45.0, 30.0, 50.0], alerts=2)
        created = watchdog.check().followups
        assert len(created) == 2 and watchdog.check().followups == []  # queued once only
        evals = {client.get(f"/api/v1/runs/{i}", headers=alice.headers).json()["kind"]: i for i in created}
        linear = client.get(f"/api/v1/runs/{evals['linear']}", headers=alice.headers).json()
        assert linear["parent_run_id"] == first and linear["spec"]["epochs"] == 3
        assert linear["spec"]["checkpoint"] == f"runs/{first}/checkpoints/last.pt"
        assert {m["args"][0] for m in queue_messages(redis_client, "studyq")} >= set(created)

        finish(redis_client, ingestor, settings, evals["knn"], knn=[], top1=61.5)
        table = client.get(f"/api/v1/studies/{study['id']}", headers=alice.headers).json()
        row = table["rows"][0]
        assert row["evals"]["knn"] == {"run_id": evals["knn"], "status": "succeeded", "top1": 61.5}
        assert row["evals"]["linear"]["status"] == "queued" and row["evals"]["linear"]["top1"] is None
        assert row["run"]["alert_count"] == 2 and row["run"]["best_knn_top1"] == 61.5  # the evaluation's, > 50
        assert row["knn_curve"] == [[0, 20.0], [10, 45.0], [20, 30.0], [30, 50.0]]
        assert table["progress"] == {"succeeded": 1, "queued": 1} and table["evals_done"] == 1
        md = client.get(f"/api/v1/studies/{study['id']}/table.md", headers=alice.headers).text
        assert "| 0.9 | 61.50 | queued |" in md and "best kNN" in md and "| 0.99 | - | - |" in md

        # another team sees none of it
        assert client.get(f"/api/v1/studies/{study['id']}", headers=bob.headers).status_code == 404
        assert client.get("/api/v1/studies", headers=bob.headers).json() == []
        assert client.get("/api/v1/leaderboard", headers=bob.headers).json() == {"data": []}

    def test_leaderboard_ranks_per_protocol_with_the_settings_and_exports(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        study = create(client, alice, name="lr", axes=[{"path": "optim.base_lr", "values": [1e-4, 3e-4, 1e-3]}],
                       evaluations=["knn"])
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings)
        results = {}
        for row, top1 in zip(study["rows"], (70.0, 75.5, 72.25), strict=True):
            finish(redis_client, ingestor, settings, row["run"]["id"], knn=[10.0])
            [knn] = watchdog.check().followups
            finish(redis_client, ingestor, settings, knn, knn=[], top1=top1)
            results[knn] = (row["labels"][0], top1)
        board = client.get("/api/v1/leaderboard", params={"protocol": "knn"}, headers=alice.headers).json()["data"]
        assert [r["top1"] for r in board] == [75.5, 72.25, 70.0] and [r["rank"] for r in board] == [1, 2, 3]
        best = board[0]
        assert best["config"]["optim.base_lr"] == 3e-4 and best["model"] == "vit_micro_p7" and best["top5"] == 95.5
        assert best["framework"] == "mocov3" and best["study_id"] == study["id"] and best["dataset"] == "fashion_mnist"
        assert "name" not in best["config"] and "optim.epochs" in best["config"]  # the preset's own changes
        assert client.get("/api/v1/leaderboard", params={"protocol": "linear"},
                          headers=alice.headers).json() == {"data": []}
        rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/leaderboard.csv", headers=alice.headers).text)))
        assert [r["top1"] for r in rows] == ["75.50", "72.25", "70.00"] and "optim.base_lr=0.0003" in rows[0]["config"]
        md = client.get("/api/v1/leaderboard.md", headers=alice.headers).text
        assert md.startswith("### knn on fashion_mnist") and md.count("\n| ") == 4
        bad = client.get("/api/v1/leaderboard", params={"protocol": "nope"}, headers=alice.headers)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "protocol"]


class TestCancel:
    def test_cancel_stops_every_run_not_ended_and_only_those(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        study = create(client, alice, name="c", axes=[{"path": "moco.momentum", "values": [0.9, 0.99, 0.999]}])
        done, running, queued = (r["run"]["id"] for r in study["rows"])
        finish(redis_client, ingestor, settings, done, knn=[10.0])
        [knn] = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings).check().followups
        push(redis_client, [ev(running, 0, "status", state="running", step=0, total_steps=10)])
        drain(ingestor)
        assert client.get(f"/api/v1/studies/{study['id']}", headers=alice.headers).json()["status"] == "active"

        response = client.post(f"/api/v1/studies/{study['id']}/cancel", headers=alice.headers)
        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
        runs = {i: client.get(f"/api/v1/runs/{i}", headers=alice.headers).json() for i in (done, running, queued, knn)}
        assert runs[done]["status"] == "succeeded" and not runs[done]["cancel_requested"]  # ended: left alone
        assert runs[queued]["status"] == "cancelled" and runs[knn]["status"] == "cancelled"  # not started: at once
        assert runs[running]["status"] == "running" and runs[running]["cancel_requested"]  # stops at its next step
        assert redis_client.get(protocol.cancel_key(running)) == b"1"
        assert cancelled["progress"] == {"succeeded": 1, "running": 1, "cancelled": 1}
        again = client.post(f"/api/v1/studies/{study['id']}/cancel", headers=alice.headers)
        assert again.status_code == 200 and again.json()["status"] == "cancelled"  # again: nothing more to do

    def test_another_teams_member_gets_404_and_nothing_is_cancelled(self, client: TestClient, alice: Member,
                                                                     bob: Member) -> None:
        study = create(client, alice, axes=[{"path": "moco.momentum", "values": [0.9]}])
        response = client.post(f"/api/v1/studies/{study['id']}/cancel", headers=bob.headers)
        assert response.status_code == 404 and response.json()["detail"] == f"study {study['id']} not found"
        assert client.post("/api/v1/studies/nope/cancel", headers=alice.headers).status_code == 404
        mine = client.get(f"/api/v1/studies/{study['id']}", headers=alice.headers).json()
        assert mine["status"] == "active" and mine["progress"] == {"queued": 1}

    def test_a_study_that_ended_by_itself_is_409(self, client: TestClient, redis_client: redis.Redis,
                                                  ingestor: Ingestor, settings: Settings, alice: Member) -> None:
        study = create(client, alice, axes=[{"path": "moco.momentum", "values": [0.9]}], evaluations=[])
        finish(redis_client, ingestor, settings, study["rows"][0]["run"]["id"], knn=[10.0])
        assert client.get(f"/api/v1/studies/{study['id']}", headers=alice.headers).json()["status"] == "ended"
        response = client.post(f"/api/v1/studies/{study['id']}/cancel", headers=alice.headers)
        assert response.status_code == 409 and response.json()["detail"] == f"study {study['id']} already ended"

    def test_a_pretraining_that_succeeds_after_the_cancel_gets_no_evaluations(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            settings: Settings, alice: Member) -> None:
        study = create(client, alice, axes=[{"path": "moco.momentum", "values": [0.9, 0.99]}],
                       evaluations=["knn", "linear"])
        first, second = (r["run"]["id"] for r in study["rows"])
        push(redis_client, [ev(first, 0, "status", state="running", step=0, total_steps=10)])
        drain(ingestor)
        assert client.post(f"/api/v1/studies/{study['id']}/cancel", headers=alice.headers).status_code == 200
        finish(redis_client, ingestor, settings, first, knn=[10.0])  # it reached its end before seeing the flag
        assert client.get(f"/api/v1/runs/{first}", headers=alice.headers).json()["status"] == "succeeded"
        watchdog = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings)
        assert watchdog.check().followups == []
        # even a run still flagged (a watchdog pass that read it before the cancel) gets none
        with Session(writer(engine)) as session:
            run = session.get(Run, first)
            assert run is not None
            run.followups_pending = True
            session.add(run)
            session.commit()
        assert watchdog.check().followups == []
        table = client.get(f"/api/v1/studies/{study['id']}", headers=alice.headers).json()
        assert [r["evals"] for r in table["rows"]] == [{}, {}] and table["evals_done"] == 0
        assert {m["args"][0] for m in queue_messages(redis_client, "studyq")} <= {first, second}

    def test_the_cli_cancels_a_study_and_says_why_it_cannot_in_one_line(
            self, live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> None:
        member = make_member(live.app.state.engine, "carol", "cli")
        for key, value in (("MOCOLAB_URL", live.url), ("MOCOLAB_TOKEN", member.token),
                           ("MOCOLAB_CONFIG", str(tmp_path / "none.json"))):
            monkeypatch.setenv(key, value)
        study = httpx.post(f"{live.url}/api/v1/studies", headers=member.headers, json={
            "name": "s", "preset": "fmnist_tiny", "queue": "cliq", "axes": [{"path": "moco.momentum",
                                                                            "values": [0.9, 0.99]}]},
                           timeout=60).json()  # the suite's load, not this request, once took httpx's 5 s
        assert cli.run(["study", "--cancel", study["id"]]) == 0
        assert capsys.readouterr().out == f"study {study['id']} cancelled: 2 cancelled\n"
        with pytest.raises(SystemExit) as stopped:
            cli.main(["study", "--cancel", "nope"])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "not found" in err and err.count("\n") == 1
