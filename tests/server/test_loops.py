"""The background loops are supervised: a pass that raises is retried with back-off, the loop lives on, and
/api/v1/health says which loop is failing and why until it recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from server.core.config import Settings
from server.core.loops import LoopState, supervise
from server.embedded_redis import EmbeddedRedis
from server.main import create_app


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def test_a_pass_that_raises_is_retried_and_the_state_says_so_until_one_succeeds() -> None:
    state = LoopState("demo")
    seen: list[tuple[int, bool]] = []
    stop = asyncio.Event()

    async def step() -> None:
        seen.append((state.failures, state.healthy))
        if len(seen) <= 2:
            raise ValueError(f"bad pass {len(seen)}")
        stop.set()

    asyncio.run(supervise(state, step, stop, backoff_s=0.01))
    # the loop was running but failing (not healthy) between the passes, and healthy again after the third
    assert seen == [(0, True), (1, False), (2, False)]
    assert (state.failures, state.restarts, state.last_error) == (0, 2, "ValueError: bad pass 2")
    assert not state.running  # stopped


def test_health_is_degraded_while_the_ingest_cannot_read_and_ok_once_it_can(tmp_path: Path, db_url: str) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis")  # not started yet: every read of the ingest fails
    settings = Settings(state_dir=tmp_path / "state", database_url=db_url, redis_url=redis_server.url,
                        host="127.0.0.1", background=True, web_dist=tmp_path / "no-ui", ingest_block_ms=20,
                        watchdog_every_s=0.05)
    with TestClient(create_app(settings)) as client:
        def degraded() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get("/api/v1/health").json()
            return body if body["status"] == "degraded" and body["loops"]["ingest"]["failures"] >= 2 else None

        health = wait_for(degraded, "health to report the failing ingest")
        assert client.get("/api/v1/health").status_code == 200  # the server itself still answers
        ingest = health["loops"]["ingest"]
        assert ingest["running"] and "ConnectionError" in ingest["last_error"] and ingest["last_error_at"]
        assert health["loops"]["watchdog"]["failures"] == 0  # it had nothing to ask Redis
        redis_server.start()
        try:
            healthy = wait_for(lambda: (h := client.get("/api/v1/health").json())["status"] == "ok" and h,
                               "the ingest to recover")
            assert healthy["loops"]["ingest"]["failures"] == 0 and healthy["loops"]["ingest"]["running"]
        finally:
            redis_server.stop()
