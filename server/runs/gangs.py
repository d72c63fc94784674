"""The scheduler loop: places queued runs on agents' devices and watches the gangs it formed.

Each pass (every `schedule_every_s`, on one server at a time: a leader lease in Redis):

1. watch every gang it formed (the set `gang.ACTIVE_KEY`):
   - not formed within `gang_form_timeout_s`: abort it (its members stop waiting and give their devices back);
     the run stays queued, unplaced, with the reason recorded; its next placement is a new gang;
   - a member's heartbeat gone while the run runs: abort it (the other machines stop their processes) and
     mark the run lost, then re-queue it as the next attempt (same id; it resumes from its last checkpoint);
   - every member's processes ended and no final status came (a rank crashed, a peer was lost): the same,
     with the ranks' errors as the reason; a run out of attempts fails; a cancelled one ends cancelled;
   - the run ended (or went back to the queue: its machines shut down): once its processes are gone, the
     gang is forgotten and any device it still holds is given back;
2. place the queued runs that are the scheduler's (see `service.dispatch`) in queue order (`scheduler.plan`):
   reserve every device of every machine at once (`gang.reserve`: all or nothing, so two runs competing
   for the same machines never deadlock), record the gang, and send each machine its node task; a run that
   does not fit keeps a `wait_reason` saying what it waits for.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.core.config import Settings
from server.core.db import utcnow, writer
from server.core.loops import LoopState, supervise
from server.events.bus import EventBus
from server.models import Run
from server.runs import lifecycle
from server.runs.dispatch import Dispatcher
from server.runs.scheduler import Request, plan
from server.runs.service import publish_run
from worker import gang

log = logging.getLogger("mocolab.scheduler")

LEADER_KEY = "mocolab:scheduler:leader"
ENDED_GRACE_S = 30.0  # a run that ended keeps its gang this long before stragglers are stopped
SILENT_GRACE_S = 10.0  # after every member's processes ended, how long a final status may take to arrive


@dataclass
class SchedulerPass:
    placed: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    unformed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)


class GangScheduler:
    def __init__(self, engine: Engine, redis_client: redis.Redis, dispatcher: Dispatcher, settings: Settings,
                 bus: EventBus | None = None) -> None:
        self.engine = writer(engine)
        self.redis = redis_client
        self.dispatcher = dispatcher
        self.settings = settings
        self.bus = bus
        self.me = uuid.uuid4().hex
        self._seen: dict[str, float] = {}  # gang token -> when it was first seen ended / silent

    # ------------------------------------------------------------------ the pass
    def lead(self) -> bool:
        """Hold (or take) the leader lease: one scheduler at a time across server replicas."""
        ttl_ms = int(max(10.0, self.settings.schedule_every_s * 5) * 1000)
        if self.redis.set(LEADER_KEY, self.me, nx=True, px=ttl_ms):
            return True
        holder = self.redis.get(LEADER_KEY)
        holder = holder.decode() if isinstance(holder, bytes) else holder
        if holder == self.me:
            self.redis.pexpire(LEADER_KEY, ttl_ms)
            return True
        return False

    def tick(self, now: datetime | None = None) -> SchedulerPass:
        out = SchedulerPass()
        if not self.lead():
            return out
        now = now or utcnow()
        with Session(self.engine, expire_on_commit=False) as session:
            self._watch(session, now, out)
            self._place(session, now, out)
        return out

    # ------------------------------------------------------------------ watching gangs
    def _watch(self, session: Session, now: datetime, out: SchedulerPass) -> None:
        for raw in self.redis.smembers(gang.ACTIVE_KEY):
            token = raw.decode() if isinstance(raw, bytes) else str(raw)
            current = gang.read_gang(self.redis, token)
            parsed = gang.parse_token(token)
            run = session.get(Run, parsed[0]) if parsed else None
            if current is None or run is None or parsed is None:
                self._forget(token, current, out)
                continue
            mine = run.task_id == token and run.attempt == parsed[1]
            failed = [m for m, rc in current.exits.items() if rc != 0]
            if mine and run.status == "queued" and current.formed and current.finished and failed:
                first = self._seen.setdefault(token, time.monotonic())
                if time.monotonic() - first >= SILENT_GRACE_S:  # its final word may still be on its way
                    self._lose(session, run, f"lost: its processes on {', '.join(failed)} failed before it started "
                               f"({current.abort or 'no reason reported'})", now, out)
                    self._forget(token, current, out)
            elif not mine or run.status in lifecycle.TERMINAL or (run.status == "queued" and current.finished):
                self._ended(session, run, token, current, mine, out)
            elif run.status == "queued":
                self._forming(session, run, token, current, out)
            else:
                self._running(session, run, token, current, now, out)

    def _forming(self, session: Session, run: Run, token: str, current: gang.Gang, out: SchedulerPass) -> None:
        timeout = self.settings.gang_form_timeout_s
        if not current.abort and (current.formed or time.time() - current.created < timeout):
            return
        missing = [m for m in current.members if m not in current.joined]
        why = current.abort or f"did not form within {timeout:.0f} s: {', '.join(missing) or '?'} never joined"
        gang.abort(self.redis, token, why)
        if current.formed and not current.finished:
            return  # its processes were started: wait until they are gone (the watch ends it then)
        gang.release_token(self.redis, token, current.devices)
        self._unplace(run, f"the last placement gave its devices back: {why}")
        self._commit(session, run)
        self._forget(token, current, out)
        out.unformed.append(run.id)
        log.warning("run %s: gang %s %s; back in the queue", run.id, token, why)

    def _running(self, session: Session, run: Run, token: str, current: gang.Gang, now: datetime,
                 out: SchedulerPass) -> None:
        # gone without its node task having ended: the machine (or its agent) died; an agent that stopped after
        # its processes ended (a warm stop) is not lost, and the run's final word decides
        dead = [m for m, ok in gang.alive(self.redis, current.members).items() if not ok and m not in current.exits]
        if dead:
            reason = f"lost: machine {', '.join(dead)} stopped heart-beating"
            gang.abort(self.redis, token, reason)
            for member in dead:  # its own node task will never give them back
                gang.release(self.redis, member, token, current.devices.get(member, []))
        elif current.finished:
            first = self._seen.setdefault(token, time.monotonic())
            if time.monotonic() - first < SILENT_GRACE_S:
                return  # the final status may still be on its way through the stream
            errors = sorted(current.errors.values(), key=lambda e: int(e.get("rank", 0)))
            what = "; ".join(f"rank {e.get('rank')} on {e.get('host')}: {e.get('message')}" for e in errors[:3])
            cause = what or current.abort or "no error reported"
            reason = f"lost: its processes ended without a final status ({cause})"
        else:
            return
        self._lose(session, run, reason, now, out)

    def _lose(self, session: Session, run: Run, reason: str, now: datetime, out: SchedulerPass) -> None:
        outcome = lifecycle.lose(run, "scheduler", reason, self.settings.max_attempts, at=now)
        if outcome != "cancelled":
            out.lost.append(run.id)
        if outcome == "requeued":
            log.warning("run %s %s; re-queued as attempt %d", run.id, reason, run.attempt)
            self._unplace(run, None)
            out.requeued.append(run.id)
        elif outcome == "failed":
            out.failed.append(run.id)
        self._commit(session, run)

    def _ended(self, session: Session, run: Run, token: str, current: gang.Gang, mine: bool,
               out: SchedulerPass) -> None:
        """The run is past this gang (ended, re-queued, or handed back): forget it once its processes are gone."""
        if not current.finished:
            first = self._seen.setdefault(token, time.monotonic())
            if not current.formed or time.monotonic() - first >= ENDED_GRACE_S:
                gang.abort(self.redis, token, f"run {run.id} is {run.status}")
            if current.formed:
                gone = {m for m, ok in gang.alive(self.redis, current.members).items() if not ok} | set(current.exits)
                if len(gone) < len(current.members):
                    return
        gang.release_token(self.redis, token, current.devices)
        if mine and run.status == "queued":  # handed back (its machines shut down): place it again
            self._unplace(run, "handed back by its machines: waiting to be placed again")
            self._commit(session, run)
        self._forget(token, current, out)

    def _forget(self, token: str, current: gang.Gang | None, out: SchedulerPass) -> None:
        if current is not None:
            gang.release_token(self.redis, token, current.devices)
        pipe = self.redis.pipeline()
        pipe.srem(gang.ACTIVE_KEY, token)
        pipe.expire(gang.gang_key(token), 3600)  # kept an hour for a look, then gone
        pipe.execute()
        self._seen.pop(token, None)
        out.forgotten.append(token)

    @staticmethod
    def _unplace(run: Run, reason: str | None) -> None:
        run.task_id, run.dispatched_at, run.placement = None, None, None
        run.wait_reason = reason
        if reason:
            run.message = reason
        if reason:
            run.message = reason
    # ------------------------------------------------------------------ placing runs
    def _place(self, session: Session, now: datetime, out: SchedulerPass) -> None:
        agents = gang.live_agents(self.redis)
        served = {a.queue for a in agents}
        query = (select(Run).where(Run.status == "queued", col(Run.dispatched_at).is_(None))
                 .order_by(col(Run.queued_at)).limit(self.settings.schedule_batch))
        runs = [r for r in session.exec(query).all()
                if r.nodes * r.gpus_per_node > 1 or r.queue in served]
        if not runs:
            return
        requests = [Request(r.id, r.queue, r.nodes, r.gpus_per_node,
                            waited_s=(now - r.queued_at).total_seconds()) for r in runs]
        decided = plan(requests, agents, starve_after_s=self.settings.starve_after_s)
        by_id = {r.id: r for r in runs}
        for placement in decided.placements:
            run = by_id[placement.run_id]
            token = gang.token(run.id, run.attempt)
            if not gang.reserve(self.redis, token, placement.devices):
                continue  # an agent's devices changed since it was read: next pass
            gang.create_gang(self.redis, token, members=placement.members, devices=placement.devices,
                             gpus_per_node=run.gpus_per_node, queue=run.queue)
            self.redis.sadd(gang.ACTIVE_KEY, token)
            message = {"gang": token, "members": placement.members, "hosts": placement.hosts,
                       "devices": placement.devices, "gpus_per_node": run.gpus_per_node,
                       "form_timeout_s": self.settings.gang_form_timeout_s}
            try:
                for index, member in enumerate(placement.members):
                    self.dispatcher.send_node(run.id, run.kind, run.spec, run.attempt, message,
                                              queue=gang.node_queue(member), task=f"{token}.{index}")
            except Exception as exc:  # the broker went away: undo, the next pass tries again
                log.warning("run %s: sending its node tasks failed (%s)", run.id, exc)
                gang.abort(self.redis, token, f"could not be sent: {exc}")
                continue
            run.task_id, run.dispatched_at, run.wait_reason = token, now, None
            run.placement = [{"worker_id": m, "host": placement.hosts.get(m, ""), "devices": placement.devices[m]}
                             for m in placement.members]
            self._commit(session, run)
            out.placed.append(run.id)
        for run_id, reason in decided.waiting.items():
            run = by_id[run_id]
            out.waiting[run_id] = reason
            if run.wait_reason != reason:
                run.wait_reason = reason
                self._commit(session, run)

    def _commit(self, session: Session, run: Run) -> None:
        session.add(run)
        session.commit()
        publish_run(session, self.bus, run)


async def run_scheduler(scheduler: GangScheduler, stop: asyncio.Event, every_s: float,
                        state: LoopState | None = None) -> None:
    """A pass every `every_s`, supervised like the other loops."""

    async def step() -> None:
        await asyncio.to_thread(scheduler.tick)

    await supervise(state or LoopState("scheduler"), step, stop, every_s=every_s)
