"""Lineage: a run's parent and forks, and its rollback branches, whose abandoned curve the ingest keeps before the
replayed steps overwrite it in the run's own metrics."""

from __future__ import annotations

from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.core.config import Settings
from server.events.ingest import Ingestor
from server.models import BranchMetric, Checkpoint

from server_factories import Member, drain, ev, fork, metrics_ev, push, submit, with_checkpoints


def rollback_ev(run_id: str, seq: int, branch: int, from_step: int, to_step: int, **extra: Any) -> dict[str, Any]:
    return ev(run_id, seq, "rollback", branch=branch, from_step=from_step, to_step=to_step, alert_kind="grad_spike",
              alert_step=from_step - 1, lr_scale=0.5, skipped=[from_step - 2, from_step - 1],
              checkpoint=f"/s/runs/{run_id}/checkpoints/step_{to_step:07d}.pt", **extra)


def curve(client: TestClient, member: Member, path: str, key: str = "loss", **params: Any) -> dict[int, Any]:
    response = client.get(f"/api/v1/runs/{path}", params={"keys": key, **params}, headers=member.headers)
    assert response.status_code == 200, response.text
    series = response.json()["series"][0]
    return dict(zip(series["step"], series["value"], strict=True))


class TestBranches:
    def test_one_batch_rollback_keeps_the_abandoned_curve_and_the_replay_replaces_the_main_one(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member) -> None:
        """The steps before the rollback, the rollback and the replay arrive in ONE ingest batch: the copy happens
        in seq order, before the replay's upserts overwrite the same (run, key, step) rows."""
        run = submit(client, alice)["id"]
        events = [metrics_ev(run, s, s, loss=float(s)) for s in range(10)]  # steps 0..9, first try
        events.append(ev(run, 10, "checkpoint", step=4, path=f"/s/runs/{run}/checkpoints/step_0000004.pt"))
        events.append(ev(run, 11, "checkpoint", step=8, path=f"/s/runs/{run}/checkpoints/step_0000008.pt"))
        events.append(rollback_ev(run, 12, 1, from_step=10, to_step=4))
        events += [metrics_ev(run, 13 + i, s, loss=100.0 + s) for i, s in enumerate(range(4, 12))]  # the replay
        push(redis_client, events)
        assert drain(ingestor).entries == 1
        main = curve(client, alice, f"{run}/metrics")
        assert main == {s: float(s) if s < 4 else 100.0 + s for s in range(12)}
        abandoned = curve(client, alice, f"{run}/branches/1/metrics")
        assert abandoned == {s: float(s) for s in range(4, 10)}
        lineage = client.get(f"/api/v1/runs/{run}/lineage", headers=alice.headers).json()
        assert lineage["branches"] == [{"branch": 1, "from_step": 10, "to_step": 4, "alert_kind": "grad_spike",
                                        "alert_step": 9, "lr_scale": 0.5, "skipped": [8, 9],
                                        "time": lineage["branches"][0]["time"]}]
        # the abandoned checkpoint (step 8) is gone with its file; the one it went back to stays
        checkpoints = client.get(f"/api/v1/runs/{run}/checkpoints", headers=alice.headers).json()
        assert [c["step"] for c in checkpoints] == [4]

    def test_the_rollback_in_a_later_batch_copies_what_is_stored(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, engine: Engine,
            alice: Member) -> None:
        run = submit(client, alice)["id"]
        push(redis_client, [metrics_ev(run, s, s, loss=float(s), grad_norm="nan" if s == 7 else 1.0)
                            for s in range(8)])
        drain(ingestor)
        push(redis_client, [metrics_ev(run, 8, 8, loss=8.0, grad_norm=1.0), rollback_ev(run, 9, 1, 9, 5),
                            metrics_ev(run, 10, 5, loss=55.0, grad_norm=0.5)])
        drain(ingestor)
        assert curve(client, alice, f"{run}/branches/1/metrics") == {5: 5.0, 6: 6.0, 7: 7.0, 8: 8.0}
        assert curve(client, alice, f"{run}/branches/1/metrics", "grad_norm") == {5: 1.0, 6: 1.0, 7: "nan", 8: 1.0}
        assert curve(client, alice, f"{run}/metrics")[5] == 55.0
        # a second rollback: its own branch; the first keeps its curve
        push(redis_client, [metrics_ev(run, 11, 6, loss=66.0, grad_norm=0.5), rollback_ev(run, 12, 2, 7, 5),
                            metrics_ev(run, 13, 5, loss=555.0, grad_norm=0.5)])
        drain(ingestor)
        assert curve(client, alice, f"{run}/branches/2/metrics") == {5: 55.0, 6: 66.0, 7: 7.0}
        assert curve(client, alice, f"{run}/branches/1/metrics") == {5: 5.0, 6: 6.0, 7: 7.0, 8: 8.0}
        lineage = client.get(f"/api/v1/runs/{run}/lineage", headers=alice.headers).json()
        assert [b["branch"] for b in lineage["branches"]] == [1, 2]
        with Session(engine) as s:  # (steps x keys) of each branch
            assert len(s.exec(select(BranchMetric).where(BranchMetric.run_id == run)).all()) == 4 * 2 + 3 * 2

    def test_branch_metrics_downsample_and_filter_like_the_runs(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member) -> None:
        run = submit(client, alice)["id"]
        push(redis_client, [metrics_ev(run, s, s, loss=float(s % 7)) for s in range(300)]
             + [rollback_ev(run, 300, 1, 300, 0)])
        drain(ingestor)
        path = f"/api/v1/runs/{run}/branches/1/metrics"
        body = client.get(path, params={"buckets": 3}, headers=alice.headers).json()
        (loss,) = body["series"]
        assert body["bucket_width"] == 100 and loss["count"] == [100, 100, 100]
        assert loss["min"] == [0.0, 0.0, 0.0] and loss["max"] == [6.0, 6.0, 6.0] and loss["step"] == [99, 199, 299]
        assert curve(client, alice, f"{run}/branches/1/metrics", start=10, end=12) == {10: 3.0, 11: 4.0, 12: 5.0}
        assert client.get(f"/api/v1/runs/{run}/branches/2/metrics", headers=alice.headers).status_code == 404
        assert client.get(f"/api/v1/runs/{run}/branches/0/metrics", headers=alice.headers).status_code == 422

    def test_a_rollback_event_without_usable_steps_is_stored_and_skipped(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member) -> None:
        run = submit(client, alice)["id"]
        push(redis_client, [metrics_ev(run, 0, 0, loss=1.0),
                            ev(run, 1, "rollback", branch="one", from_step=3, to_step=1),
                            ev(run, 2, "rollback", branch=1, from_step=1, to_step=3),
                            ev(run, 3, "rollback", branch=1, from_step=None, to_step=0),
                            metrics_ev(run, 4, 1, loss=2.0)])
        result = drain(ingestor)
        assert result.entries == 1
        assert client.get(f"/api/v1/runs/{run}/lineage", headers=alice.headers).json()["branches"] == []
        assert curve(client, alice, f"{run}/metrics") == {0: 1.0, 1: 2.0}
        events = client.get(f"/api/v1/runs/{run}/events", params={"types": "rollback"}, headers=alice.headers)
        assert len(events.json()["data"]) == 3  # the events themselves are kept, as every event is


class TestLineage:
    def test_lineage_names_the_parent_the_forks_and_the_branches(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, settings: Settings,
            alice: Member, engine: Engine) -> None:
        parent = with_checkpoints(client, redis_client, ingestor, settings.storage_root, alice, name="base")
        first = fork(client, alice, parent["id"], checkpoint_step=16, name="lower lr").json()
        second = fork(client, alice, parent["id"]).json()
        client.post(f"/api/v1/runs/{parent['id']}/evaluate", json={"kind": "knn"}, headers=alice.headers)
        push(redis_client, [metrics_ev(parent["id"], 2, 33, loss=1.0), rollback_ev(parent["id"], 3, 1, 34, 32)])
        drain(ingestor)
        lineage = client.get(f"/api/v1/runs/{parent['id']}/lineage", headers=alice.headers).json()
        assert lineage["parent"] is None
        assert lineage["forks"] == [{"id": first["id"], "name": "lower lr", "status": "queued", "step": 16},
                                    {"id": second["id"], "name": "fork of base @32", "status": "queued", "step": 32}]
        assert [(b["branch"], b["from_step"], b["to_step"]) for b in lineage["branches"]] == [(1, 34, 32)]
        child = client.get(f"/api/v1/runs/{first['id']}/lineage", headers=alice.headers).json()
        assert child == {"parent": {"id": parent["id"], "name": "base", "step": 16}, "forks": [], "branches": []}
        with Session(engine) as s:  # the rollback dropped the checkpoints after its target, not before
            assert [c.step for c in s.exec(select(Checkpoint).where(Checkpoint.run_id == parent["id"]))] == [16, 32]


def test_0009_adds_lineage_to_a_database_in_use_and_goes_back(db_url: str) -> None:
    """From 0008 with a run in it: the run keeps its row (parent_step and the stall columns empty), the branch
    tables come, and the downgrade leaves nothing behind."""
    import sqlalchemy as sa
    from alembic import command
    from sqlalchemy import inspect

    from server.core.db import alembic_config, make_engine, migrate

    engine = make_engine(db_url)
    try:
        migrate(engine, "0008_notifications")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO teams (id, name, created_at) VALUES (1, 't', CURRENT_TIMESTAMP)"))
            conn.execute(sa.text("INSERT INTO users (id, name, is_admin, created_at) "
                                 "VALUES (1, 'u', false, CURRENT_TIMESTAMP)"))
            conn.execute(sa.text("INSERT INTO projects (id, team_id, name, created_at) "
                                 "VALUES (1, 1, 'p', CURRENT_TIMESTAMP)"))
            conn.execute(sa.text(
                "INSERT INTO runs (id, kind, spec, status, team_id, project_id, owner_id, notes, queue, attempt, "
                "created_at, queued_at, cancel_requested, last_seq, alert_count, overrides, study_values, "
                "followups, followups_pending, nodes, gpus_per_node) VALUES ('r1', 'pretrain', '{}', 'running', 1, "
                "1, 1, '', 'gpu', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, false, 5, 0, '{}', '{}', '[]', false, "
                "1, 1)"))
        migrate(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("runs")}
        assert {"parent_step", "step_at", "step_clock", "clock_step", "step_time_s", "stalled_at"} <= columns
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT parent_step, step_at FROM runs WHERE id = 'r1'")).one() == (None, None)
        assert {"run_branches", "branch_metrics"} <= set(inspect(engine).get_table_names())
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008_notifications")
        assert not {"run_branches", "branch_metrics"} & set(inspect(engine).get_table_names())
        assert "parent_step" not in {c["name"] for c in inspect(engine).get_columns("runs")}
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT last_seq FROM runs WHERE id = 'r1'")).scalar() == 5
    finally:
        engine.dispose()
