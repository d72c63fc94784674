"""The per-run lock: at-least-once delivery means a run can be delivered twice; only the lock holder runs it.

SET NX PX takes it; the holder's heartbeat refreshes it; refresh and release are Lua compare-and-act, so a
worker whose lock expired (and was taken by another) can neither extend nor delete the new holder's lock.
"""

from __future__ import annotations

from . import protocol
from ._redis import Redis

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_STEAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) and 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RunLock:
    def __init__(self, redis: Redis, run_id: str, worker_id: str, ttl: float = protocol.LOCK_TTL_S) -> None:
        self.redis = redis
        self.run_id = run_id
        self.worker_id = worker_id
        self.key = protocol.lock_key(run_id)
        self.ttl_ms = int(ttl * 1000)
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)
        self._steal = redis.register_script(_STEAL)

    def acquire(self) -> bool:
        """Take the lock if nobody holds it."""
        return bool(self.redis.set(self.key, self.worker_id, nx=True, px=self.ttl_ms))

    def adopt(self) -> bool:
        """Take the lock whether free or held under our own worker id (left by a pool process that died)."""
        return self.refresh() or self.acquire()

    def holder_alive(self, holder: str) -> bool:
        """A live holder heart-beats (its worker key exists) or at least keeps its lock fresh: a run's own
        process refreshes it every LOCK_TTL_S / 3, so a lock left with under half its TTL was abandoned."""
        if self.redis.exists(protocol.worker_key(holder)):
            return True
        return int(self.redis.pttl(self.key)) > self.ttl_ms // 2

    def steal(self, holder: str) -> bool:
        """Take the lock from `holder` (known dead), only if it still holds it."""
        return bool(self._steal(keys=[self.key], args=[holder, self.worker_id, self.ttl_ms]))

    def refresh(self) -> bool:
        """Extend the lock by its TTL, only while it is still ours."""
        return bool(self._refresh(keys=[self.key], args=[self.worker_id, self.ttl_ms]))

    def release(self) -> bool:
        """Delete the lock, only if it is still ours."""
        return bool(self._release(keys=[self.key], args=[self.worker_id]))

    def holder(self) -> str | None:
        value = self.redis.get(self.key)
        if isinstance(value, bytes):
            return value.decode()
        return None if value is None else str(value)
