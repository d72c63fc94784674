"""Fixtures for the worker tests: a Redis client on the session's real Redis, per-test settings, events read
back from the stream, and a private redis-server that a test may stop and restart (outages)."""

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.embedded_redis import EmbeddedRedis
from worker import Settings, protocol
from worker._redis import Redis, connect

from worker_helpers import stream_events

EventsReader = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def r(redis_url: str) -> Iterator[Redis]:
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, storage=tmp_path / "storage", queue=f"test-{uuid.uuid4().hex[:8]}",
                    worker_id=f"test-{uuid.uuid4().hex[:8]}", spool_dir=tmp_path / "spool")


@pytest.fixture
def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def events(r: Redis) -> EventsReader:
    def read(run_id: str | None = None, stream: str = protocol.EVENTS_STREAM) -> list[dict[str, Any]]:
        return stream_events(r, run_id, stream)

    return read


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own (with its append-only file), to stop and start on the same port."""
    server = EmbeddedRedis(tmp_path / "own-redis").start()
    yield server
    server.stop()
