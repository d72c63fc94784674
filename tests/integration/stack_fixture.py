"""The embedded stack as `mocolab up` runs it, for the integration tests (imported by them; a plain module,
not a conftest, because several conftest modules share that name)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mocolab.stack import Stack
from server.embedded_redis import free_port


@contextmanager
def running_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None = None,
                  **env: str) -> Iterator[Stack]:
    """An embedded redis-server, the server (watchdog every second) and one worker; SQLite unless
    `database_url`; `env` adds settings (e.g. LOST_AFTER_S)."""
    if database_url is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("WATCHDOG_EVERY_S", "1")
    monkeypatch.setenv("MOCOLAB_CONFIG", str(tmp_path / "client.json"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Stack(tmp_path / "state", "127.0.0.1", free_port())
    s.start()
    try:
        yield s
    finally:
        s.stop()


def wait_for(fn: Any, what: str, timeout: float = 240.0, every: float = 0.5) -> Any:
    """fn()'s first truthy value, polled every `every` s; fails saying `what` it waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
