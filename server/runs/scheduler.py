"""Where runs go: the scheduler's decisions, pure (no Redis, no database), so each rule is unit-tested.

A run asks for `nodes` machines with `gpus_per_node` devices each. The scheduler places queued runs in the
order they were queued onto the free devices of live agents serving the run's queue:

- one machine: the agent with the fewest free devices that still fit (best fit), so small runs pack onto
  partly used machines and whole machines stay free for big runs; the devices taken are the lowest free ones;
- several machines: `nodes` distinct agents, each with `gpus_per_node` free devices, all on the same storage
  root (checkpoints must be on storage every machine of the run sees), best fit again;
- a run that does not fit now waits with a reason that says what it waits for; runs behind it may still
  start where they fit (backfill), unless the first waiting run has waited longer than `starve_after_s`,
  in which case nothing smaller jumps ahead of it on the machines it could use (a run the live agents could
  not run even idle keeps nothing);
- a request that no live agent could ever satisfy, even idle, is refused at submission (`impossible`).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.gang import Agent


@dataclass(frozen=True)
class Request:
    run_id: str
    queue: str
    nodes: int = 1
    gpus_per_node: int = 1
    waited_s: float = 0.0

    @property
    def label(self) -> str:
        unit = "GPU" if self.gpus_per_node == 1 else "GPUs"
        if self.nodes == 1:
            return f"{self.gpus_per_node} free {unit} on one machine"
        return f"{self.nodes} machines with {self.gpus_per_node} free {unit}"


@dataclass
class Placement:
    run_id: str
    members: list[str]  # agent ids, node order (member 0 hosts the rendezvous)
    devices: dict[str, list[int]]
    hosts: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # run id -> why it waits


def _kind(agents: Sequence[Agent]) -> str:
    kinds = {a.device_kind for a in agents}
    return "GPU" if kinds == {"gpu"} or not kinds else ("CPU slot" if kinds == {"cpu"} else "device")


def describe(agents: Sequence[Agent], queue: str | None = None) -> str:
    """What exists, in words: '2 machines on queue gpu: a (8 GPUs), b (4 GPUs)'."""
    pool = [a for a in agents if queue is None or a.queue == queue]
    if not pool:
        where = f" on queue {queue!r}" if queue else ""
        return f"no agent is registered{where} (start one with `mocolab worker --gpus all`)"
    parts = ", ".join(f"{a.worker_id} ({len(a.devices)} {_kind([a])}{'s' if len(a.devices) != 1 else ''})"
                      for a in pool)
    machines = "machine" if len(pool) == 1 else "machines"
    return f"{len(pool)} {machines}{f' on queue {queue!r}' if queue else ''}: {parts}"


def impossible(request: Request, agents: Sequence[Agent]) -> str | None:
    """-> why no live agent could ever run `request` (even with every device free), or None if one could."""
    pool = [a for a in agents if a.queue == request.queue]
    by_storage: dict[str, int] = Counter()
    for agent in pool:
        if len(agent.devices) >= request.gpus_per_node:
            by_storage[agent.storage] += 1
    big_enough = sum(by_storage.values())
    if big_enough >= request.nodes and (request.nodes == 1 or max(by_storage.values()) >= request.nodes):
        return None
    if request.nodes > 1 and big_enough >= request.nodes:
        return (f"asks for {request.label}, but the machines that have them report different storage roots "
                f"({', '.join(sorted(by_storage))}); a multi-machine run needs one storage every machine sees")
    return f"asks for {request.label}; {describe(agents, request.queue)}"


def _fits(agent: Agent, request: Request) -> bool:
    return len(agent.free) >= request.gpus_per_node


def place(request: Request, agents: Sequence[Agent], blocked: set[str] | None = None) -> Placement | None:
    """Best-fit placement of `request` on the free devices of `agents` (none of `blocked`), or None."""
    pool = [a for a in agents if a.queue == request.queue and _fits(a, request) and a.worker_id not in (blocked or ())]
    groups: dict[str, list[Agent]] = {}
    for agent in pool:
        groups.setdefault(agent.storage if request.nodes > 1 else "", []).append(agent)
    best: list[Agent] | None = None
    for members in groups.values():
        if len(members) < request.nodes:
            continue
        chosen = sorted(members, key=lambda a: (len(a.free), a.worker_id))[:request.nodes]
        if best is None or sum(len(a.free) for a in chosen) < sum(len(a.free) for a in best):
            best = chosen
    if best is None:
        return None
    devices = {a.worker_id: a.free[:request.gpus_per_node] for a in best}
    return Placement(request.run_id, [a.worker_id for a in best], devices, {a.worker_id: a.host for a in best})


def _free_now(pool: Sequence[Agent], limit: int = 6) -> str:
    """'a: 3, b: 8' for the machines with the most free devices (at most `limit` named), or 'none'."""
    ranked = sorted(pool, key=lambda a: (-len(a.free), a.worker_id))
    shown = sorted(ranked[:limit], key=lambda a: a.worker_id)
    text = ", ".join(f"{a.worker_id}: {len(a.free)}" for a in shown) or "none"
    return text + (f" and {len(ranked) - limit} more" if len(ranked) > limit else "")


def plan(requests: Sequence[Request], agents: Sequence[Agent], starve_after_s: float = 600.0) -> Plan:
    """Place `requests` (in queue order) on copies of `agents`; what does not fit waits with its reason."""
    free = copy.deepcopy(list(agents))
    by_id = {a.worker_id: a for a in free}
    out = Plan()
    blocked: set[str] = set()  # machines kept for a starving run
    starving: str | None = None  # the first of them
    # Devices only get taken during a pass, so a shape (queue, machines, devices) that did not fit will not fit
    # later in the pass either: its reason is reused, not recomputed (1,000 queued runs of a few shapes).
    unfit: dict[tuple[str, int, int, int], str] = {}
    for request in requests:
        shape = (request.queue, request.nodes, request.gpus_per_node, len(blocked))
        placement = None if shape in unfit else place(request, free, blocked)
        if placement is None:
            if shape not in unfit:
                now = _free_now([a for a in free if a.queue == request.queue])
                unfit[shape] = f"waiting for {request.label} (free now: {now})"
            reason = unfit[shape]
            if starving is not None and place(request, free) is not None:  # it fits, but not where it may go
                reason += (f"; the machines it fits on are kept for run {starving}, which has waited "
                           f"{starve_after_s:g} s or more")
            out.waiting[request.run_id] = reason
            # Keep its candidate machines for it, unless no live agent could ever run it: it would block them
            # for ever (a 2-machine run whose second machine died).
            if request.waited_s >= starve_after_s and impossible(request, agents) is None:
                blocked.update(a.worker_id for a in free if a.queue == request.queue
                               and len(a.devices) >= request.gpus_per_node)
                if starving is None:
                    starving = request.run_id
            continue
        for agent_id, devs in placement.devices.items():
            for d in devs:
                by_id[agent_id].held[d] = f"{request.run_id}.planned"
        out.placements.append(placement)
    return out
