"""Migrations build the whole schema on an empty database, match the models, and are safe to run again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

import server.models  # noqa: F401
from server.core.db import alembic_config, make_engine, migrate


def test_upgrade_head_on_an_empty_database(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
        migrate(engine)
        migrate(engine)  # a restart migrates again: nothing to do
        tables = set(inspect(engine).get_table_names())
        assert set(SQLModel.metadata.tables) <= tables and "alembic_version" in tables
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []  # the models need no new revision
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            assert context.get_current_revision() == head
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_0007_adds_datasets_to_a_database_in_use_and_goes_back(db_url: str) -> None:
    """From 0006 with a team and a run in it: the datasets table comes with its per-team unique name, its
    references to the scan's run, and leaves nothing behind on downgrade."""
    import sqlalchemy as sa
    from alembic import command

    engine = make_engine(db_url)
    try:
        migrate(engine, "0006")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO teams (id, name, created_at) VALUES (1, 't', CURRENT_TIMESTAMP)"))
        migrate(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("datasets")}
        assert {"team_id", "name", "kind", "root", "status", "info", "samples_jpeg", "packed_root", "prepare_status",
                "scan_run_id", "prepare_run_id", "builtin"} <= columns
        row = ("INSERT INTO datasets (team_id, name, kind, status, prepare_status, created_at, updated_at, builtin) "
               "VALUES (1, 'x', 'npz', 'ready', 'none', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, false)")
        with engine.begin() as conn:
            conn.execute(sa.text(row))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # a second 'x' in team 1
            conn.execute(sa.text(row))
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0006")
        assert "datasets" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_0008_adds_the_notification_tables_and_goes_back(db_url: str) -> None:
    """The channels' per-team unique name and the outbox's unique dedup key come with 0008; downgrade removes
    the three tables and nothing else."""
    import sqlalchemy as sa
    from alembic import command

    engine = make_engine(db_url)
    try:
        migrate(engine, "0007")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO teams (id, name, created_at) VALUES (1, 't', CURRENT_TIMESTAMP)"))
        migrate(engine)
        assert {"notify_channels", "notify_deliveries", "notify_attempts"} <= set(inspect(engine).get_table_names())
        channel = ("INSERT INTO notify_channels (team_id, name, kind, enabled, target_hint, emails, rules, cooldown_s, "
                   "created_at, updated_at) VALUES (1, 'c', 'webhook', true, '', '[]', '{}', 0, CURRENT_TIMESTAMP, "
                   "CURRENT_TIMESTAMP)")
        delivery = ("INSERT INTO notify_deliveries (channel_id, dedup_key, incident, kind, status, attempts, "
                    "suppressed, next_attempt_at, created_at, payload) VALUES (1, 'k', 'i', 'alert', 'pending', 0, 0, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '{}')")
        with engine.begin() as conn:
            conn.execute(sa.text(channel))
            conn.execute(sa.text(delivery))
        for again in (channel, delivery):
            with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                conn.execute(sa.text(again))
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007")
        tables = set(inspect(engine).get_table_names())
        assert not {"notify_channels", "notify_deliveries", "notify_attempts"} & tables and "datasets" in tables
    finally:
        engine.dispose()
