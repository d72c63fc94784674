"""Redis clients for the worker: short timeouts and no silent retries, so an outage surfaces at once and each
caller decides what to do about it (the sink spools, the heartbeat skips a beat, the cancel watch waits)."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

Redis = redis.Redis


def connect(url: str, timeout: float = 5.0, connect_timeout: float = 2.0, decode: bool = True) -> Redis:
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout,
                              "retry": Retry(NoBackoff(), 0), "decode_responses": decode}
    return redis.Redis.from_url(url, **kwargs)
