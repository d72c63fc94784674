"""RunLock on a real Redis: one holder at a time, refresh and release only by the holder, expiry."""

import time

from worker import RunLock, protocol
from worker._redis import Redis

from worker_helpers import wait_for


def test_second_acquire_fails_while_held(r: Redis, run_id: str) -> None:
    first, second = RunLock(r, run_id, "w1"), RunLock(r, run_id, "w2")
    assert first.acquire()
    assert not second.acquire()
    assert first.holder() == second.holder() == "w1"
    assert 0 < r.pttl(protocol.lock_key(run_id)) <= protocol.LOCK_TTL_S * 1000
    assert first.release()


def test_refresh_and_release_only_by_the_holder(r: Redis, run_id: str) -> None:
    mine, theirs = RunLock(r, run_id, "w1", ttl=5), RunLock(r, run_id, "w2", ttl=60)
    assert mine.acquire()
    assert not theirs.refresh()
    assert not theirs.release()
    assert mine.holder() == "w1" and r.pttl(mine.key) <= 5000
    assert theirs.holder() == "w1"
    r.pexpire(mine.key, 1000)
    assert mine.refresh() and r.pttl(mine.key) > 1000
    assert mine.release()
    assert mine.holder() is None
    assert not mine.release()  # nothing left to release
    assert theirs.acquire()


def test_lock_expires_without_refresh(r: Redis, run_id: str) -> None:
    stale, fresh = RunLock(r, run_id, "dead-worker", ttl=0.2), RunLock(r, run_id, "w2")
    assert stale.acquire()
    assert not fresh.acquire()
    assert wait_for(fresh.acquire, timeout=5)
    time.sleep(0.3)
    assert not stale.refresh()  # the expired holder cannot extend the new holder's lock
    assert not stale.release()
    assert fresh.holder() == "w2"


def test_adopt_takes_a_free_lock_or_our_own_but_not_anothers(r: Redis, run_id: str) -> None:
    other = RunLock(r, run_id, "w-other")
    assert other.acquire()
    assert not RunLock(r, run_id, "me").adopt()
    other.release()
    assert RunLock(r, run_id, "me").adopt()  # free
    assert RunLock(r, run_id, "me").adopt()  # held under our own name
    assert other.holder() == "me"


def test_a_holder_is_alive_while_it_beats_or_keeps_its_lock_fresh(r: Redis, run_id: str) -> None:
    lock, thief = RunLock(r, run_id, "holder"), RunLock(r, run_id, "thief")
    assert lock.acquire()
    assert thief.holder_alive("holder")  # freshly refreshed
    r.pexpire(lock.key, 5_000)
    assert not thief.holder_alive("holder")  # neither a heartbeat nor a recent refresh
    r.hset(protocol.worker_key("holder"), "hb", "{}")
    assert thief.holder_alive("holder")
    r.delete(protocol.worker_key("holder"))
    assert not thief.steal("someone-else")  # compare-and-set: only from the holder named
    assert thief.steal("holder") and thief.holder() == "thief"
    assert r.pttl(thief.key) > 5_000
