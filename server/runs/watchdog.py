"""The periodic checks that keep runs moving when something died.

- lost: a running run with no event or heartbeat for `lost_after_s` and no live lock in Redis is re-queued
  (same run id, attempt + 1, resumed by the worker from its latest checkpoint) up to `max_attempts`, then
  failed with the reason. A run whose cancel was requested is cancelled instead.
- revoke: a cooperative cancel that has not ended the run within `cancel_grace_s` is revoked (terminated).
- re-send: a queued run whose task never reached the broker (Redis was down) is sent again.
- follow-ups: a pretraining run that succeeded with evaluations to queue (a study's) gets them queued.
- datasets: a dataset whose scan or packing run ended without its result (cancelled, failed, lost too often) is
  marked failed with the run's error.
- stalls: a running pretraining run that is not lost (its heartbeats or its lock alive) but whose step has not
  moved for more than max(monitor.stall_factor x its usual step time, monitor.stall_min_s) raises a `stall`
  alert, once per episode; with monitor.stall_policy "restart" its stuck process is killed (a revoke with SIGKILL,
  or its gang aborted) and the run re-queued as its next attempt, which resumes from its latest checkpoint. The
  judging starts once the step moved in the current attempt (loading data and compiling are not judged).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from server.core.config import Settings
from server.core.db import utcnow, writer
from server.core.loops import LoopState, supervise
from server.datasets import service as datasets
from server.events.bus import EventBus
from server.models import Alert, Run
from server.notify import outbox
from server.runs import lifecycle, repository
from server.runs.dispatch import Dispatcher
from server.runs.service import dispatch, publish_run, queue_followups
from worker import gang, protocol

log = logging.getLogger("mocolab.watchdog")
# the run lock deleted only while the given worker holds it (worker/lock.py's release, which the server must not
# import: tests/test_layering.py)
_RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class WatchdogResult:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    followups: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # datasets whose status followed their run's
    stalled: list[str] = field(default_factory=list)  # runs that raised a stall alert in this pass
    restarted: list[str] = field(default_factory=list)  # stalled runs killed and re-queued (or failed: out of attempts)


class Watchdog:
    def __init__(self, engine: Engine, redis_client: redis.Redis, dispatcher: Dispatcher, settings: Settings,
                 bus: EventBus | None = None) -> None:
        self.engine = writer(engine)
        self.redis = redis_client
        self.dispatcher = dispatcher
        self.settings = settings
        self.bus = bus

    def check(self, now: datetime | None = None) -> WatchdogResult:
        now = now or utcnow()
        result = WatchdogResult()
        with Session(self.engine, expire_on_commit=False) as session:
            self._lost(session, now, result)
            self._stalls(session, now, result)
            self._revoke(session, now, result)
            self._resend(session, now, result)
            result.followups = queue_followups(session, settings=self.settings, dispatcher=self.dispatcher,
                                               bus=self.bus)
            self._datasets(session, result)
        return result

    def _datasets(self, session: Session, result: WatchdogResult) -> None:
        """Datasets whose scan or packing run ended outside the ingest (a cancel before it started, a run lost
        once too often) are marked failed (and back to scanning or preparing when their run was resumed)."""
        changed = datasets.reconcile(session, datasets.pending(session))
        if changed:
            session.commit()
            datasets.publish(session, self.bus, changed)
            result.datasets += [d.name for d in changed]

    def _lost(self, session: Session, now: datetime, result: WatchdogResult) -> None:
        cutoff = now - timedelta(seconds=self.settings.lost_after_s)
        for run in session.exec(select(Run).where(Run.status == "running")).all():
            if run.placement:  # placed on agents: the scheduler watches its machines (server/runs/gangs.py)
                continue
            seen = max(t for t in (run.last_heartbeat, run.started_at, run.dispatched_at, run.queued_at) if t)
            if seen >= cutoff or self.redis.exists(protocol.lock_key(run.id)):
                continue
            silent = int((now - seen).total_seconds())
            reason = f"lost: no heartbeat for {silent} s" + (f" from worker {run.worker_id}" if run.worker_id else "")
            outcome = lifecycle.lose(run, "watchdog", reason, self.settings.max_attempts, at=now)
            self._commit(session, run)
            if outcome == "requeued":
                log.warning("run %s %s; re-queued as attempt %d", run.id, reason, run.attempt)
                dispatch(session, self.dispatcher, run)
                result.requeued.append(run.id)
            elif outcome == "failed":
                log.error("run %s %s; failed after %d attempts", run.id, reason, run.attempt)
                result.failed.append(run.id)
            else:
                result.cancelled.append(run.id)

    def _revoke(self, session: Session, now: datetime, result: WatchdogResult) -> None:
        cutoff = now - timedelta(seconds=self.settings.cancel_grace_s)
        query = select(Run).where(Run.status == "running", col(Run.cancel_requested).is_(True),
                                  col(Run.revoked_at).is_(None), col(Run.cancel_requested_at) < cutoff)
        for run in session.exec(query).all():
            if run.placement and run.task_id:  # placed on agents: every machine stops its processes
                gang.abort(self.redis, run.task_id, f"cancel not honoured within {self.settings.cancel_grace_s:.0f} s")
            elif run.task_id:
                try:
                    self.dispatcher.revoke(run.task_id)
                except Exception as exc:
                    log.warning("run %s: revoke failed (%s); retrying next pass", run.id, exc)
                    continue
            log.warning("run %s did not stop within %.0f s of its cancel; revoked", run.id,
                        self.settings.cancel_grace_s)
            run.revoked_at = now
            self._commit(session, run, publish=False)
            result.revoked.append(run.id)

    def _resend(self, session: Session, now: datetime, result: WatchdogResult) -> None:
        cutoff = now - timedelta(seconds=self.settings.resend_after_s)
        query = select(Run).where(Run.status == "queued", col(Run.dispatched_at).is_(None), col(Run.queued_at) < cutoff)
        for run in session.exec(query.order_by(col(Run.queued_at)).limit(100)).all():
            if not dispatch(session, self.dispatcher, run):
                return  # the broker is still down; try again next pass
            result.resent.append(run.id)

    def _stalls(self, session: Session, now: datetime, result: WatchdogResult) -> None:
        query = select(Run).where(Run.status == "running", Run.kind == "pretrain", col(Run.step_at).is_not(None),
                                  col(Run.clock_step).is_not(None), col(Run.cancel_requested).is_(False))
        for run in session.exec(query).all():
            assert run.step_at is not None
            watch = StallWatch.of(run.spec)
            limit = max(watch.factor * (run.step_time_s or 0.0), watch.min_s)
            quiet = (now - run.step_at).total_seconds()
            if quiet <= limit or not self._alive(run, now):
                continue
            if run.stalled_at is None:
                self._alert(session, run, now, quiet, limit, watch)
                result.stalled.append(run.id)
            if watch.policy == "restart" and self._restart(session, run, now, quiet):
                result.restarted.append(run.id)

    def _alive(self, run: Run, now: datetime) -> bool:
        """Not lost: its heartbeats (or its own events) recent, or its lock held; on agents, every machine of it
        heart-beating. A run that is neither is the lost pass's (or the scheduler's), not a stall."""
        if run.placement:
            members = [str(p.get("worker_id")) for p in run.placement if isinstance(p, dict)]
            return bool(members) and all(gang.alive(self.redis, members).values())
        fresh = run.last_heartbeat is not None and \
            run.last_heartbeat >= now - timedelta(seconds=self.settings.lost_after_s)
        return fresh or bool(self.redis.exists(protocol.lock_key(run.id)))

    def _alert(self, session: Session, run: Run, now: datetime, quiet: float, limit: float, watch: StallWatch) -> None:
        """The `stall` alert, stored with the engine's (a negative seq: the engine's start at 0), counted, and
        published to the team stream as the ingest publishes the engine's."""
        lowest = session.exec(select(func.min(Alert.seq)).where(Alert.run_id == run.id)).one()
        seq = min(0, lowest if lowest is not None else 0) - 1
        latest = repository.checkpoint_at(session, run_id=run.id, step=None)
        usual = f"its usual step time {run.step_time_s:.3g} s" if run.step_time_s else "no step time measured yet"
        where = f"worker {run.worker_id}" if run.worker_id else "its worker"
        action = (f"monitor.stall_policy is restart: its process is killed and the run restarted from its latest "
                  f"checkpoint{f' (step {latest.step})' if latest else ''} as attempt {run.attempt + 1}"
                  if watch.policy == "restart" else
                  "look at the process on its worker (py-spy dump --pid ...: a collective or a data loader that "
                  "waits for ever); cancel and resume it to restart from its latest checkpoint, or set "
                  "monitor.stall_policy=restart to have such a run restarted by itself")
        message = (f"no new step for {quiet:.0f} s (limit {limit:.0f} s: {watch.factor:g} x {usual}, at least "
                   f"{watch.min_s:g} s) while {where} still heart-beats: a hung collective or a stuck data loader?")
        payload: dict[str, Any] = {
            "kind": "stall", "step": run.step, "metric": "step", "value": round(quiet, 3),
            "baseline": run.step_time_s, "threshold": round(limit, 3), "severity": "critical",
            "message": message,
            "remedy": action,
            "evidence": {"last_step": run.step, "quiet_s": round(quiet, 3), "step_time_s": run.step_time_s,
                         "stall_factor": watch.factor, "stall_min_s": watch.min_s, "policy": watch.policy,
                         "worker_id": run.worker_id, "attempt": run.attempt},
            "last_healthy_checkpoint": latest.path if latest else None,
        }
        session.add(Alert(run_id=run.id, seq=seq, time=now.timestamp(), step=run.step, kind="stall",
                          severity="critical", metric="step", message=message, remedy=action,
                          payload=payload))
        run.stalled_at = now
        run.alert_count += 1
        try:  # notify: stall; in the alert's transaction, in a savepoint: a notification problem never costs the alert
            with session.begin_nested():
                outbox.enqueue(session, run.team_id, run.project_id,
                               outbox.alert_notification(run, payload, occurrence=f"{run.id}:{seq}",
                                                         at=now.timestamp()))
        except Exception:
            log.exception("run %s: the stall notification could not be queued", run.id)
        self._commit(session, run)
        log.warning("run %s stalled: %s", run.id, message)
        if self.bus is not None:
            self.bus.publish_team("alert", run.team_id, {"run_id": run.id, "seq": seq, "time": now.timestamp(),
                                                         **payload})

    def _restart(self, session: Session, run: Run, now: datetime, quiet: float) -> bool:
        """Kill the stalled attempt's process and re-queue the run as its next attempt (or fail it when out of
        attempts), through the status machine as a lost run is; -> whether it was done (else: next pass)."""
        if run.placement and run.task_id:  # on agents: every machine stops its processes (SIGKILL after a grace)
            gang.abort(self.redis, run.task_id, f"stalled: no new step for {quiet:.0f} s; restarting")
        elif run.task_id:
            # the worker's revoke hook must not take this for a cancel: the run goes on as its next attempt
            self.redis.set(protocol.restart_key(run.id, run.attempt), "1", ex=protocol.RESTART_TTL_S)
            try:
                self.dispatcher.revoke(run.task_id, signal="SIGKILL")  # a hung process ignores a SIGTERM
            except Exception as exc:
                log.warning("run %s: revoke of stalled attempt %d failed (%s); retrying next pass", run.id,
                            run.attempt, exc)
                return False
            if run.worker_id:  # the killed process's lock would make the next attempt a duplicate elsewhere
                self.redis.eval(_RELEASE_LOCK, 1, protocol.lock_key(run.id), run.worker_id)
        reason = f"stalled: no new step for {quiet:.0f} s" + (f" on worker {run.worker_id}" if run.worker_id else "")
        outcome = lifecycle.lose(run, "watchdog", reason, self.settings.max_attempts, at=now)
        self._commit(session, run)
        if outcome == "requeued":
            log.warning("run %s %s; killed and re-queued as attempt %d", run.id, reason, run.attempt)
            dispatch(session, self.dispatcher, run)
        else:
            log.error("run %s %s; %s", run.id, reason, outcome)
        return True

    def _commit(self, session: Session, run: Run, publish: bool = True) -> None:
        session.add(run)
        session.commit()
        if publish:
            publish_run(session, self.bus, run)


@dataclass(frozen=True)
class StallWatch:
    """A run's stall settings (monitor.stall_* of its spec; the engine's config owns them and their defaults)."""

    policy: str = "record"
    factor: float = 10.0
    min_s: float = 120.0

    @classmethod
    def of(cls, spec: dict[str, Any] | None) -> StallWatch:
        monitor = (spec or {}).get("monitor")
        monitor = monitor if isinstance(monitor, dict) else {}
        policy = monitor.get("stall_policy")
        return cls(policy=policy if policy in ("record", "restart") else cls.policy,
                   factor=_positive(monitor.get("stall_factor"), cls.factor),
                   min_s=_positive(monitor.get("stall_min_s"), cls.min_s))


def _positive(value: Any, default: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else default


async def run_watchdog(watchdog: Watchdog, stop: asyncio.Event, every_s: float,
                       state: LoopState | None = None) -> None:
    """A pass every `every_s`, supervised: a pass that raises is retried with back-off and shows in `state`."""

    async def step() -> None:
        await asyncio.to_thread(watchdog.check)

    await supervise(state or LoopState("watchdog"), step, stop, every_s=every_s)
