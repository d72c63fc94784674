"""Agents, their GPU slots and the gangs of a multi-GPU run: the Redis contract between the server's scheduler
and the agents (`mocolab worker --gpus ...`). Pure redis-py, no Celery and no torch: the server imports it.

Agents. An agent is a worker that owns a set of devices (GPU indices, or CPU "slots" on a machine without
GPUs) and runs any mix of runs on them. It says so in its heartbeat (``protocol.worker_key``, field ``hb``)
under the key ``agent``::

    "agent": {"devices": [0, 1, 2, 3], "device_kind": "gpu" | "cpu", "storage": "/abs/storage/root",
              "node_queue": "mocolab.agent.<worker_id>",
              "slots": [{"device": 0, "run_id": "ab12" | null, "attempt": 2 | null}, ...]}

Slots. ``slots_key(agent_id)`` is a hash: field = device index, value = the gang token
``<run_id>.<attempt>.<nonce>`` holding it; a missing field is a free device. It is the one authority on who holds a
device: the scheduler reserves with RESERVE (every device of every machine of the gang, or none), and each
agent gives its own devices back with RELEASE (only those still held by that token). An agent clears its hash
when it starts (a device held by its previous life is free again).

Gangs. ``gang_key(token)`` is a hash the scheduler creates with the reservation:

    run_id, attempt, nodes, gpus_per_node, members (JSON list of agent ids, node order),
    devices (JSON {agent: [devices]}),
    created (unix s), queue, rdzv_port (written by member 0 once it picked a free port),
    joined:<agent> (unix s, when that member's node task took its devices),
    exit:<agent> (torchrun's exit code on that member), error:<agent> (JSON: rank, host, message),
    abort (a reason: every member stops its processes and gives its devices back)

A gang forms when every member has joined; the scheduler aborts one that has not formed within its timeout
(the devices go back, the run goes back to the queue with the reason). Each member's node task reaches the
others through torchrun's c10d rendezvous at ``<host of member 0>:<rdzv_port>`` with id ``token``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from . import protocol

GANG_TTL_S = 30 * 24 * 3600  # a gang's hash outlives any run; deleted when the run's attempt ends
FORM_TIMEOUT_S = 60.0  # default time a reserved gang has to form before its devices go back
ACTIVE_KEY = f"{protocol.PREFIX}:gangs"  # a set: the tokens of gangs the scheduler still watches

_RESERVE = """
local token = ARGV[1]
local wanted = cjson.decode(ARGV[2])
for i, key in ipairs(KEYS) do
  for _, dev in ipairs(wanted[i]) do
    if redis.call('HEXISTS', key, tostring(dev)) == 1 then return 0 end
  end
end
for i, key in ipairs(KEYS) do
  for _, dev in ipairs(wanted[i]) do redis.call('HSET', key, tostring(dev), token) end
end
return 1
"""
_RELEASE = """
local n = 0
for _, dev in ipairs(cjson.decode(ARGV[2])) do
  if redis.call('HGET', KEYS[1], tostring(dev)) == ARGV[1] then
    redis.call('HDEL', KEYS[1], tostring(dev)); n = n + 1
  end
end
return n
"""

_ABORT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSETNX', KEYS[1], 'abort', ARGV[1]) end
return 0
"""


def token(run_id: str, attempt: int, nonce: str | None = None) -> str:
    """A gang's name: the run, its attempt and a nonce, so that a run placed again within one attempt (its
    machines shut down and handed it back) never shares a name, nor a device release, with its last gang."""
    return f"{run_id}.{attempt}.{nonce or secrets.token_hex(3)}"


def parse_token(value: str) -> tuple[str, int] | None:
    """-> (run id, attempt) of a gang token, or None."""
    parts = value.rsplit(".", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def slots_key(agent_id: str) -> str:
    return f"{protocol.PREFIX}:slots:{agent_id}"


def gang_key(gang_token: str) -> str:
    return f"{protocol.PREFIX}:gang:{gang_token}"


def node_queue(agent_id: str) -> str:
    """The Celery queue only this agent consumes: its node tasks."""
    return f"{protocol.PREFIX}.agent.{agent_id}"


@dataclass
class Agent:
    """A live agent as the scheduler sees it: its devices, and which of them are free right now."""

    worker_id: str
    host: str
    queue: str
    device_kind: str
    devices: list[int]
    storage: str
    held: dict[int, str] = field(default_factory=dict)  # device -> gang token

    @property
    def free(self) -> list[int]:
        return [d for d in self.devices if d not in self.held]

    @classmethod
    def from_heartbeat(cls, hb: Mapping[str, Any]) -> Agent | None:
        info = hb.get("agent")
        if not isinstance(info, Mapping):
            return None
        try:
            devices = sorted({int(d) for d in info.get("devices") or []})
        except (TypeError, ValueError):
            return None
        return cls(worker_id=str(hb.get("worker_id") or ""), host=str(hb.get("host") or ""),
                   queue=str(hb.get("queue") or protocol.DEFAULT_QUEUE),
                   device_kind=str(info.get("device_kind") or "gpu"), devices=devices,
                   storage=str(info.get("storage") or ""))


def live_agents(r: redis.Redis, with_slots: bool = True) -> list[Agent]:
    """Every agent whose heartbeat key is alive, with (with_slots) the devices each one's slot hash holds."""
    agents: list[Agent] = []
    keys = list(r.scan_iter(match=protocol.worker_key("*"), count=500))
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "hb")
    for raw in pipe.execute() if keys else []:  # one round trip for every heartbeat
        if raw is None:
            continue
        try:
            hb = json.loads(raw)
        except (TypeError, ValueError):
            continue
        agent = Agent.from_heartbeat(hb) if isinstance(hb, dict) else None
        if agent is None or not agent.worker_id or hb.get("state") == "stopped":
            continue
        agents.append(agent)
    if with_slots and agents:
        pipe = r.pipeline(transaction=False)
        for agent in agents:
            pipe.hgetall(slots_key(agent.worker_id))
        for agent, held in zip(agents, pipe.execute(), strict=True):
            agent.held = {int(_text(k)): _text(v) for k, v in (held or {}).items() if _text(k).isdigit()}
    return sorted(agents, key=lambda a: a.worker_id)


def alive(r: redis.Redis, agent_ids: Iterable[str]) -> dict[str, bool]:
    ids = list(agent_ids)
    pipe = r.pipeline(transaction=False)
    for agent_id in ids:
        pipe.exists(protocol.worker_key(agent_id))
    return {agent_id: bool(n) for agent_id, n in zip(ids, pipe.execute(), strict=True)}


def reserve(r: redis.Redis, gang_token: str, devices: Mapping[str, list[int]]) -> bool:
    """Hold every listed device of every agent for `gang_token`, or (one of them taken) none: -> held."""
    agents = list(devices)
    script = r.register_script(_RESERVE)
    wanted = json.dumps([devices[a] for a in agents])
    return bool(script(keys=[slots_key(a) for a in agents], args=[gang_token, wanted]))


def release(r: redis.Redis, agent_id: str, gang_token: str, devices: Iterable[int]) -> int:
    """Give back the devices of `agent_id` still held by `gang_token`; -> how many."""
    script = r.register_script(_RELEASE)
    return int(script(keys=[slots_key(agent_id)], args=[gang_token, json.dumps(list(devices))]))


def release_token(r: redis.Redis, gang_token: str, devices: Mapping[str, list[int]]) -> int:
    return sum(release(r, agent, gang_token, devs) for agent, devs in devices.items())


def create_gang(r: redis.Redis, gang_token: str, *, members: list[str], devices: Mapping[str, list[int]],
                gpus_per_node: int, queue: str) -> None:
    key = gang_key(gang_token)
    pipe = r.pipeline(transaction=True)
    pipe.delete(key)
    run = parse_token(gang_token)
    pipe.hset(key, mapping={"run_id": run[0] if run else "", "attempt": run[1] if run else 0,
                            "nodes": len(members), "gpus_per_node": gpus_per_node, "members": json.dumps(members),
                            "devices": json.dumps(dict(devices)), "created": time.time(), "queue": queue})
    pipe.expire(key, GANG_TTL_S)
    pipe.execute()


@dataclass
class Gang:
    token: str
    members: list[str]
    devices: dict[str, list[int]]
    created: float
    joined: dict[str, float]
    exits: dict[str, int]
    errors: dict[str, dict[str, Any]]
    abort: str | None
    rdzv_port: int | None

    @property
    def formed(self) -> bool:
        return all(m in self.joined for m in self.members)

    @property
    def finished(self) -> bool:
        """Every member's node task has ended (its processes are gone)."""
        return all(m in self.exits for m in self.members)


def read_gang(r: redis.Redis, gang_token: str) -> Gang | None:
    raw = {_text(k): _text(v) for k, v in (r.hgetall(gang_key(gang_token)) or {}).items()}
    if "members" not in raw:
        return None

    def by_member(prefix: str) -> dict[str, str]:
        return {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}

    errors: dict[str, dict[str, Any]] = {}
    for member, text in by_member("error:").items():
        try:
            errors[member] = json.loads(text)
        except ValueError:
            errors[member] = {"message": text}
    port = raw.get("rdzv_port")
    return Gang(token=gang_token, members=json.loads(raw["members"]), devices=json.loads(raw.get("devices", "{}")),
                created=float(raw.get("created", 0)),
                joined={k: float(v) for k, v in by_member("joined:").items()},
                exits={k: int(v) for k, v in by_member("exit:").items() if v.lstrip("-").isdigit()},
                errors=errors, abort=raw.get("abort"), rdzv_port=int(port) if port and port.isdigit() else None)


def abort(r: redis.Redis, gang_token: str, reason: str) -> None:
    """Ask every member to stop (kept if already set: the first reason wins)."""
    # One script, not EXISTS then HSETNX: a gang deleted in between would come back as a hash without a TTL.
    r.register_script(_ABORT)(keys=[gang_key(gang_token)], args=[reason])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
