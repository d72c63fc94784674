"""The server's background loops (ingest, watchdog), supervised: a pass that raises is logged, counted and
retried after a back-off that doubles up to `max_backoff_s`, so the loop never dies of one error, and its
`LoopState` tells `/api/v1/health` which loop is failing and why until a pass succeeds again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from sqlalchemy.exc import InterfaceError, OperationalError

log = logging.getLogger("mocolab.loops")
# Outages the loops wait out: logged in one line; anything else is logged with its traceback.
OUTAGES = (redis.ConnectionError, redis.TimeoutError, OperationalError, InterfaceError)


@dataclass
class LoopState:
    name: str
    running: bool = False
    failures: int = 0  # consecutive failed passes; 0 = the last pass succeeded
    restarts: int = 0  # failed passes since start
    last_error: str | None = None
    last_error_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        return self.running and self.failures == 0


async def supervise(state: LoopState, step: Callable[[], Awaitable[None]], stop: asyncio.Event, *,
                    every_s: float = 0.0, backoff_s: float = 0.2, max_backoff_s: float = 5.0) -> None:
    """Call `step` until `stop` is set, `every_s` apart (0: at once; `step` blocks on its own input)."""
    state.running = True
    wait = backoff_s
    try:
        while not stop.is_set():
            try:
                await step()
            except Exception as exc:  # one bad pass must not end the loop: count it, wait, go again
                _failed(state, exc, wait)
                await _sleep(stop, wait)
                wait = min(wait * 2, max_backoff_s)
                continue
            if state.failures:
                log.info("%s loop recovered after %d failed passes", state.name, state.failures)
            state.failures, wait = 0, backoff_s
            if every_s:
                await _sleep(stop, every_s)
    finally:
        state.running = False


def _failed(state: LoopState, exc: Exception, wait: float) -> None:
    state.failures += 1
    state.restarts += 1
    state.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    state.last_error_at = datetime.now(UTC)
    if isinstance(exc, OUTAGES):
        log.warning("%s loop paused (%s); retrying in %.1f s", state.name, state.last_error, wait)
    else:
        log.exception("%s loop pass failed; restarting in %.1f s", state.name, wait)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
