"""The delivery loop: it claims the outbox rows that are due, sends each through its channel and records the
attempt, with retries on an exponential back-off with jitter, until the message is sent or has used its tries
(`notify_max_attempts`) or its age (`notify_max_age_s`), when it is marked failed.

Several server processes may run this loop on one database. A claim is one short write transaction that moves
the rows' `next_attempt_at` a lease ahead (longer than any send can take), so no other process picks them up
meanwhile: on PostgreSQL the rows are selected FOR UPDATE SKIP LOCKED (two claims never wait on or take the
same rows); on SQLite the transaction holds the single writer's lock. A process that dies mid-send leaves the
row due again when the lease ends, so delivery is at least once; a sent row is never picked up again, so a
restart sends nothing twice. Sending happens outside any transaction, a few rows at a time in threads.
"""

from __future__ import annotations

import asyncio
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.core.config import Settings
from server.core.db import utcnow, writer
from server.core.loops import LoopState, supervise
from server.models import NotifyAttempt, NotifyChannel, NotifyDelivery, Project, Team
from server.notify import chart, keys, render, urls
from server.notify import send as transport
from server.notify.outbox import NotifyEvent

log = logging.getLogger("mocolab.notify")


@dataclass
class Prepared:
    delivery_id: int
    channel: NotifyChannel
    event: NotifyEvent
    ctx: render.Context
    chart: bytes | None


class Deliverer:
    def __init__(self, engine: Engine, settings: Settings, *, batch: int = 20, threads: int = 4,
                 rng: random.Random | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.batch = batch
        self.threads = threads
        self.rng = rng or random.Random()
        self.allow = urls.allowed_nets(settings.notify_allow_nets)
        self.lease_s = 3 * max(settings.notify_timeout_s, settings.smtp_timeout_s) + 30

    # ---------------------------------------------------------------- the loop's pass
    def step(self, now: datetime | None = None) -> int:
        """Claim what is due by `now` and send it; -> how many rows were tried."""
        ids = self.claim(now or utcnow())
        if len(ids) == 1:
            self.deliver(ids[0])
        elif ids:
            with ThreadPoolExecutor(max_workers=min(self.threads, len(ids)), thread_name_prefix="notify") as pool:
                list(pool.map(self.deliver, ids))
        return len(ids)

    def claim(self, now: datetime) -> list[int]:
        query = (select(NotifyDelivery.id).where(NotifyDelivery.status == "pending",
                                                 col(NotifyDelivery.next_attempt_at) <= now)
                 .order_by(col(NotifyDelivery.next_attempt_at)).limit(self.batch))
        with Session(self.engine) as session:  # a plain read first: an idle pass takes no write lock (SQLite)
            if session.exec(query.limit(1)).first() is None:
                return []
        with Session(writer(self.engine)) as session:
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = [int(i) for i in session.exec(query).all() if i is not None]
            if ids:
                lease = utcnow() + timedelta(seconds=self.lease_s)
                for row in session.exec(select(NotifyDelivery).where(col(NotifyDelivery.id).in_(ids))):
                    row.next_attempt_at = lease
                    session.add(row)
                session.commit()
            return ids

    def deliver(self, delivery_id: int, *, retry: bool = True) -> None:
        """Send one claimed row and record the attempt; `retry=False` (a test message): one try only."""
        try:
            prepared = self.prepare(delivery_id)
            if prepared is None:
                return
            outcome = self.send(prepared)
        except Exception as exc:  # a bug or an unreadable secret: recorded on the row, the loop goes on
            log.exception("delivery %s could not be sent", delivery_id)
            outcome = transport.Outcome(False, error=f"{type(exc).__name__}: {exc}"[:2000],
                                   permanent=isinstance(exc, keys.SecretUnreadable))
        self.record(delivery_id, outcome, retry=retry)

    # ---------------------------------------------------------------- one message
    def prepare(self, delivery_id: int) -> Prepared | None:
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(NotifyDelivery, delivery_id)
            channel = session.get(NotifyChannel, row.channel_id) if row is not None else None
            if row is None or channel is None:
                return None
            team = session.get(Team, channel.team_id)
            project = session.get(Project, channel.project_id) if channel.project_id else None
            event = NotifyEvent.from_payload(row.payload)
            png = chart.for_delivery(session, event.run_id, event.details, event.step) \
                if event.kind in ("alert", "run_end") else None
            base = self.settings.public_base
            ctx = render.Context(
                delivery_id=delivery_id, channel=channel.name, team=team.name if team else str(channel.team_id),
                project=project.name if project else None, public_url=base, suppressed=row.suppressed,
                cooldown_s=channel.cooldown_s, sent_at=utcnow(),
                chart_url=f"{base}/api/v1/notifications/{delivery_id}/chart.png?sig="
                          f"{keys.chart_sig(self.settings, delivery_id)}" if png else None)
            return Prepared(delivery_id, channel, event, ctx, png)

    def send(self, p: Prepared) -> transport.Outcome:
        channel = p.channel
        if channel.kind == "email":
            msg = render.email_message(p.event, p.ctx, sender=self.settings.smtp_from, to=channel.emails,
                                       chart=p.chart)
            return transport.send_mail(self.settings, msg, channel.emails)
        secret = keys.unseal(self.settings, channel.secret)
        url = secret.get("url")
        if not isinstance(url, str):
            return transport.Outcome(False, error="the channel has no URL", permanent=True)
        headers = {str(k): str(v) for k, v in (secret.get("headers") or {}).items()}
        if channel.kind == "slack":
            body = render.slack_body(p.event, p.ctx)
        else:
            body = render.webhook_body(p.event, p.ctx)
            headers["X-Mocolab-Delivery"] = str(p.delivery_id)
            headers["X-Mocolab-Event"] = p.event.kind
            if secret.get("signing_secret"):
                headers["X-Mocolab-Signature"] = keys.body_signature(str(secret["signing_secret"]), body)
        return transport.post_json(url, body, headers, allow=self.allow, timeout_s=self.settings.notify_timeout_s)

    def record(self, delivery_id: int, outcome: transport.Outcome, *, retry: bool = True) -> None:
        now = utcnow()
        with Session(writer(self.engine), expire_on_commit=False) as session:
            row = session.get(NotifyDelivery, delivery_id)
            if row is None:  # its channel was deleted meanwhile
                return
            session.add(NotifyAttempt(delivery_id=delivery_id, time=now, ok=outcome.ok, code=outcome.code,
                                      reply=outcome.reply, error=outcome.error, duration_ms=outcome.duration_ms))
            row.attempts += 1
            if outcome.ok:
                row.status, row.sent_at, row.last_error = "sent", now, None
            else:
                row.last_error = outcome.error
                age = (now - row.created_at).total_seconds()
                if (not retry or outcome.permanent or row.attempts >= self.settings.notify_max_attempts
                        or age >= self.settings.notify_max_age_s):
                    row.status = "failed"
                else:
                    row.next_attempt_at = now + timedelta(seconds=self.backoff(row.attempts))
            session.add(row)
            session.commit()
        if not outcome.ok:
            log.warning("notification %d: attempt failed (%s)", delivery_id, outcome.error)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` tries: base * 2^(attempts-1), capped, times a jitter in
        [0.5, 1] so that messages that failed together do not all come back at once."""
        s = self.settings
        delay = min(s.notify_backoff_max_s, s.notify_backoff_s * 2.0 ** (attempts - 1))
        return float(delay * self.rng.uniform(0.5, 1.0))


async def run_delivery(deliverer: Deliverer, stop: asyncio.Event, every_s: float, state: LoopState) -> None:
    """The loop inside the server: a pass every `every_s`, supervised like the ingest and the watchdog."""

    async def step() -> None:
        while await asyncio.to_thread(deliverer.step) and not stop.is_set():
            pass  # a full batch: go again at once

    await supervise(state, step, stop, every_s=every_s)
