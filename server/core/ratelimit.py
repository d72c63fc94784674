"""Run submissions per user: a token bucket in Redis (shared by every server process), `rate` tokens a
minute and bursts of up to `rate`. One Lua script reads, refills and takes a token atomically, on Redis's own
clock (TIME), so that server clocks never disagree."""

from __future__ import annotations

import math

import redis

from server.core.errors import TooManyRequests
from server.deps import CallerDep, RedisDep, SettingsDep

# KEYS[1] = the bucket; ARGV = capacity, tokens per second -> {allowed (0/1), milliseconds until a token}
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
local wait = 0
if allowed == 0 then wait = math.ceil((1 - tokens) / rate * 1000) end
return {allowed, wait}
"""


def take(client: redis.Redis, key: str, per_minute: int) -> float:
    """Take one token from the bucket `key`; -> 0 when allowed, else the seconds until one is there."""
    allowed, wait_ms = client.eval(_TAKE, 1, key, per_minute, per_minute / 60.0)
    return 0.0 if int(allowed) else int(wait_ms) / 1000


def submission_quota(caller: CallerDep, client: RedisDep, settings: SettingsDep) -> None:
    """Route dependency of every route that submits runs: 429 with Retry-After when the calling user has used
    up `submit_per_minute` (the caller is resolved once per request: FastAPI caches dependencies)."""
    per_minute = settings.submit_per_minute
    wait = take(client, f"mocolab:ratelimit:submit:{caller.user.id}", per_minute)
    if wait:
        raise TooManyRequests(f"too many run submissions: at most {per_minute} a minute; retry in "
                              f"{math.ceil(wait)} s", retry_after=math.ceil(wait))
