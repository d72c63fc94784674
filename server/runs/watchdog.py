"""The periodic checks that keep runs moving when something died.

- lost: a running run with no event or heartbeat for `lost_after_s` and no live lock in Redis is re-queued
  (same run id, attempt + 1, resumed by the worker from its latest checkpoint) up to `max_attempts`, then
  failed with the reason. A run whose cancel was requested is cancelled instead.
- revoke: a cooperative cancel that has not ended the run within `cancel_grace_s` is revoked (terminated).
- re-send: a queued run whose task never reached the broker (Redis was down) is sent again.
- follow-ups: a pretraining run that succeeded with evaluations to queue (a study's) gets them queued.
- datasets: a dataset whose scan or packing run ended without its result (cancelled, failed, lost too often) is
  marked failed with the run's error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.core.config import Settings
from server.core.db import utcnow, writer
from server.core.loops import LoopState, supervise
from server.datasets import service as datasets
from server.events.bus import EventBus
from server.models import Run
from server.runs import lifecycle
from server.runs.dispatch import Dispatcher
from server.runs.service import dispatch, publish_run, queue_followups
from worker import gang, protocol

log = logging.getLogger("mocolab.watchdog")


@dataclass
class WatchdogResult:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    followups: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # datasets whose status followed their run's


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

    def _commit(self, session: Session, run: Run, publish: bool = True) -> None:
        session.add(run)
        session.commit()
        if publish:
            publish_run(session, self.bus, run)


async def run_watchdog(watchdog: Watchdog, stop: asyncio.Event, every_s: float,
                       state: LoopState | None = None) -> None:
    """A pass every `every_s`, supervised: a pass that raises is retried with back-off and shows in `state`."""

    async def step() -> None:
        await asyncio.to_thread(watchdog.check)

    await supervise(state or LoopState("watchdog"), step, stop, every_s=every_s)
