"""The gang contract on a real Redis: RESERVE takes every device of every machine or none (two gangs racing for
the same machines never both hold a part: no deadlock), RELEASE gives back only what a token still holds, live
agents read from heartbeats and slot hashes, and the gang hash (members, joins, exits, errors, abort)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from worker import gang, protocol
from worker._redis import Redis, connect

from worker_helpers import wait_for

NewId = Callable[[], str]


@pytest.fixture
def new_id(r: Redis) -> Iterator[NewId]:
    """Unique agent ids (the session's Redis is shared); their heartbeat and slot keys are deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"agent-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    for agent_id in made:
        r.delete(protocol.worker_key(agent_id), gang.slots_key(agent_id))


@pytest.fixture
def new_token(r: Redis) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(gang.token(f"run-{uuid.uuid4().hex[:10]}", 1))
        return made[-1]

    yield make
    for t in made:
        r.delete(gang.gang_key(t))


def slots(r: Redis, agent_id: str) -> dict[int, str]:
    return {int(k): v if isinstance(v, str) else v.decode() for k, v in r.hgetall(gang.slots_key(agent_id)).items()}


def beat(r: Redis, worker_id: str, agent: dict[str, Any] | None = None, **fields: Any) -> None:
    """A heartbeat as the worker writes it: JSON in field 'hb' of its worker hash, with a TTL."""
    hb: dict[str, Any] = {"worker_id": worker_id, "host": f"{worker_id}.lan", "queue": "gpu", "state": "idle",
                          **fields}
    if agent is not None:
        hb["agent"] = agent
    write_hb(r, worker_id, json.dumps(hb))


def write_hb(r: Redis, worker_id: str, raw: str) -> None:
    key = protocol.worker_key(worker_id)
    r.hset(key, "hb", raw)
    r.pexpire(key, int(protocol.HEARTBEAT_TTL_S * 1000))


def agent_info(devices: list[Any], kind: str = "gpu", storage: str = "/storage") -> dict[str, Any]:
    return {"devices": devices, "device_kind": kind, "storage": storage, "node_queue": "n",
            "slots": [{"device": d, "run_id": None, "attempt": None} for d in devices]}


def test_token_round_trip() -> None:
    assert gang.token("ab.12", 3, "f00") == "ab.12.3.f00"
    assert gang.parse_token("ab.12.3.f00") == ("ab.12", 3)
    assert gang.parse_token(gang.token("ab.12", 3)) == ("ab.12", 3)
    assert gang.token("ab", 3) != gang.token("ab", 3)  # placed twice in one attempt: two names
    assert gang.parse_token("ab.3") is None and gang.parse_token("ab.x.f00") is None
    assert gang.parse_token(".3.f00") is None


# -- RESERVE / RELEASE ---------------------------------------------------------------------------------------------


def test_reserve_takes_every_device_or_none(r: Redis, new_id: NewId, new_token: Callable[[], str]) -> None:
    a, b = new_id(), new_id()
    first, second = new_token(), new_token()
    assert gang.reserve(r, first, {a: [0, 1], b: [2, 3]})
    assert slots(r, a) == {0: first, 1: first} and slots(r, b) == {2: first, 3: first}
    # the second gang overlaps one device (b:3): it gets nothing, not even the free a:2, b:4
    assert not gang.reserve(r, second, {a: [2], b: [4, 3]})
    assert slots(r, a) == {0: first, 1: first} and slots(r, b) == {2: first, 3: first}
    # once it overlaps nothing, it gets all of it
    assert gang.reserve(r, second, {a: [2], b: [4]})
    assert slots(r, a) == {0: first, 1: first, 2: second} and slots(r, b) == {2: first, 3: first, 4: second}


def test_two_gangs_racing_for_the_same_machines_exactly_one_wins(redis_url: str, r: Redis, new_id: NewId,
                                                                 new_token: Callable[[], str]) -> None:
    clients = [connect(redis_url), connect(redis_url)]
    try:
        for _ in range(50):
            a, b = new_id(), new_id()
            tokens = [new_token(), new_token()]
            # opposite orders: per-machine locks taken one by one would deadlock or leave each a half
            wants = [{a: [0, 1], b: [0, 1]}, {b: [1, 0], a: [1, 0]}]
            barrier = threading.Barrier(2)
            won: list[bool | None] = [None, None]

            def go(i: int, wants: list[dict[str, list[int]]] = wants, tokens: list[str] = tokens,
                   won: list[bool | None] = won, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                won[i] = gang.reserve(clients[i], tokens[i], wants[i])

            threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(won, key=bool) == [False, True]
            winner = tokens[won.index(True)]
            assert slots(r, a) == {0: winner, 1: winner} and slots(r, b) == {0: winner, 1: winner}
    finally:
        for c in clients:
            c.close()


def test_release_gives_back_only_devices_still_held_by_the_token(r: Redis, new_id: NewId,
                                                                 new_token: Callable[[], str]) -> None:
    a = new_id()
    old, new = new_token(), new_token()
    assert gang.reserve(r, old, {a: [0, 1, 2]})
    assert gang.release(r, a, old, [0]) == 1
    assert gang.reserve(r, new, {a: [0]})  # a later holder of device 0
    assert gang.release(r, a, new, [1, 2]) == 0  # not its devices
    assert gang.release(r, a, old, [0, 1, 2]) == 2  # 1 and 2; device 0 is the new holder's
    assert slots(r, a) == {0: new}
    assert gang.release(r, a, old, []) == 0 and gang.release(r, new_id(), old, [0]) == 0
    assert slots(r, a) == {0: new}


def test_release_token_frees_every_machine_of_the_gang(r: Redis, new_id: NewId,
                                                       new_token: Callable[[], str]) -> None:
    a, b = new_id(), new_id()
    mine, other = new_token(), new_token()
    devices = {a: [0, 1], b: [2]}
    assert gang.reserve(r, mine, devices)
    assert gang.reserve(r, other, {b: [3]})
    assert gang.release_token(r, mine, devices) == 3
    assert slots(r, a) == {} and slots(r, b) == {3: other}
    assert gang.release_token(r, mine, devices) == 0
    assert gang.reserve(r, new_token(), devices)  # free again


# -- live agents ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decode", [True, False], ids=["str", "bytes"])
def test_live_agents_from_heartbeats_and_slot_hashes(redis_url: str, r: Redis, new_id: NewId,
                                                     new_token: Callable[[], str], decode: bool) -> None:
    ours = [new_id() for _ in range(9)]
    gpu, cpu, legacy, stopped, garbage, listed, bad_devices, no_id, no_hb = ours
    beat(r, gpu, agent_info([3, 1, 2, 1], storage="/shared"), queue="q-gpu")
    write_hb(r, cpu, json.dumps({"worker_id": cpu, "host": "h", "agent": agent_info([0, 1], kind="cpu")}))  # no queue
    beat(r, legacy, None, gpus=[{"index": 0}])  # `mocolab worker --gpu N`: not an agent
    beat(r, stopped, agent_info([0]), state="stopped")
    write_hb(r, garbage, "{not json")
    write_hb(r, listed, json.dumps([1, 2]))
    beat(r, bad_devices, agent_info(["x"]))
    write_hb(r, no_id, json.dumps({"host": "h", "agent": agent_info([0])}))
    r.hset(protocol.worker_key(no_hb), "other", "1")
    t = new_token()
    assert gang.reserve(r, t, {gpu: [2]})

    client = connect(redis_url, decode=decode)
    try:
        found = {a.worker_id: a for a in gang.live_agents(client) if a.worker_id in ours}
        bare = {a.worker_id: a for a in gang.live_agents(client, with_slots=False)}
    finally:
        client.close()
    assert set(found) == {gpu, cpu}
    g, c = found[gpu], found[cpu]
    assert (g.host, g.queue, g.device_kind, g.storage) == (f"{gpu}.lan", "q-gpu", "gpu", "/shared")
    assert g.devices == [1, 2, 3]  # sorted, once each
    assert g.held == {2: t} and g.free == [1, 3]
    assert (c.queue, c.device_kind, c.devices, c.held, c.free) == (protocol.DEFAULT_QUEUE, "cpu", [0, 1], {}, [0, 1])
    assert bare[gpu].held == {} and bare[gpu].free == [1, 2, 3]


def test_an_agent_whose_heartbeat_expired_is_not_live(r: Redis, new_id: NewId) -> None:
    a = new_id()
    beat(r, a, agent_info([0]))
    assert a in {x.worker_id for x in gang.live_agents(r)}
    r.pexpire(protocol.worker_key(a), 1)
    assert wait_for(lambda: a not in {x.worker_id for x in gang.live_agents(r)})
    assert gang.alive(r, [a]) == {a: False}


def test_alive(r: Redis, new_id: NewId) -> None:
    up, legacy, gone = new_id(), new_id(), new_id()
    beat(r, up, agent_info([0]))
    beat(r, legacy)
    assert gang.alive(r, [up, gone, legacy]) == {up: True, gone: False, legacy: True}
    assert gang.alive(r, []) == {}


# -- the gang hash -------------------------------------------------------------------------------------------------


def test_create_and_read_gang_round_trip(r: Redis, new_id: NewId, new_token: Callable[[], str]) -> None:
    a, b = new_id(), new_id()
    t = new_token()
    assert gang.read_gang(r, t) is None
    before = time.time()
    gang.create_gang(r, t, members=[a, b], devices={a: [0, 1], b: [2, 3]}, gpus_per_node=2, queue="q")
    key = gang.gang_key(t)
    assert 0 < r.ttl(key) <= gang.GANG_TTL_S
    raw = r.hgetall(key)
    assert (raw["nodes"], raw["gpus_per_node"], raw["queue"]) == ("2", "2", "q")
    g = gang.read_gang(r, t)
    assert g is not None
    assert (g.token, g.members, g.devices) == (t, [a, b], {a: [0, 1], b: [2, 3]})
    assert before <= g.created <= time.time()
    assert (g.joined, g.exits, g.errors, g.abort, g.rdzv_port) == ({}, {}, {}, None, None)
    assert not g.formed and not g.finished

    r.hset(key, mapping={f"joined:{a}": 1700000000.5, "rdzv_port": "29500"})
    g = gang.read_gang(r, t)
    assert g is not None and g.joined == {a: 1700000000.5} and g.rdzv_port == 29500 and not g.formed
    r.hset(key, f"joined:{b}", 1700000001)
    g = gang.read_gang(r, t)
    assert g is not None and g.formed and not g.finished

    r.hset(key, mapping={f"exit:{a}": 0, f"error:{a}": json.dumps({"rank": 1, "host": "h", "message": "oom"}),
                         f"error:{b}": "not json"})
    g = gang.read_gang(r, t)
    assert g is not None and g.exits == {a: 0} and not g.finished
    assert g.errors == {a: {"rank": 1, "host": "h", "message": "oom"}, b: {"message": "not json"}}
    r.hset(key, f"exit:{b}", -9)
    g = gang.read_gang(r, t)
    assert g is not None and g.exits == {a: 0, b: -9} and g.finished

    # created again (the same token re-reserved): nothing of the old life survives
    gang.create_gang(r, t, members=[b], devices={b: [0]}, gpus_per_node=1, queue="q")
    g = gang.read_gang(r, t)
    assert g is not None and (g.members, g.joined, g.exits, g.errors) == ([b], {}, {}, {})


def test_abort_keeps_the_first_reason(r: Redis, new_id: NewId, new_token: Callable[[], str]) -> None:
    a = new_id()
    t = new_token()
    gang.abort(r, t, "no gang yet")
    assert not r.exists(gang.gang_key(t))  # aborting a gang that does not exist creates nothing
    gang.create_gang(r, t, members=[a], devices={a: [0]}, gpus_per_node=1, queue="q")
    gang.abort(r, t, "gang did not form within 60 s")
    gang.abort(r, t, "cancelled")
    g = gang.read_gang(r, t)
    assert g is not None and g.abort == "gang did not form within 60 s"
