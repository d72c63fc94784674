"""Fixtures for the server: a real app on SQLite (and PostgreSQL when TEST_DATABASE_URL is set), a real
Redis, users in two teams with tokens, and helpers to feed the events stream as a worker would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine

from server.core.config import Settings
from server.events.ingest import Ingestor
from server.main import create_app
from server.projections import make_ingestor

from server_factories import LiveServer, Member, make_member, start_live


@pytest.fixture
def db_url(database_url: str) -> str:
    """The database_url, emptied: PostgreSQL's schema is dropped so every test migrates from nothing."""
    if database_url.startswith("postgresql"):
        engine = create_engine(database_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        engine.dispose()
    return database_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, db_url: str, redis_url: str, redis_client: redis.Redis) -> Settings:
    return Settings(state_dir=tmp_path / "state", database_url=db_url, redis_url=redis_url, host="127.0.0.1",
                    background=False, web_dist=tmp_path / "no-ui", ingest_consumer="test", ingest_block_ms=20,
                    ingest_claim_idle_ms=60_000, resend_after_s=0, cancel_grace_s=30, lost_after_s=60,
                    max_attempts=3, sse_lifetime_s=30)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:  # runs the lifespan: migrations
        yield c


@pytest.fixture
def engine(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


@pytest.fixture
def alice(engine: Engine) -> Member:
    return make_member(engine, "alice", "team-a")


@pytest.fixture
def bob(engine: Engine) -> Member:
    return make_member(engine, "bob", "team-b")


@pytest.fixture
def ingestor(engine: Engine, redis_client: redis.Redis) -> Ingestor:
    return make_ingestor(engine, redis_client, consumer="test", batch=100, block_ms=10, claim_idle_ms=60_000)


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveServer]:
    server = start_live(settings)
    yield server
    server.stop()
