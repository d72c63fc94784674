"""The ingest loop: the workers' events stream (Redis) -> SQL, idempotently, then out to SSE subscribers.

Each pass reads up to `batch` stream entries with XREADGROUP in the group `protocol.INGEST_GROUP`
(every entry's field ``b`` is a JSON list of events), writes them in ONE transaction, and XACKs only after
the commit. An entry read but not acknowledged (the server died, SQL was down) stays pending: a restarted
consumer re-reads its own pending entries first (id 0), and entries left by a consumer that vanished are
taken over with XAUTOCLAIM once idle. Replays change nothing: events insert with ON CONFLICT DO NOTHING on
(run_id, seq), and only the events actually inserted go on, in the same transaction, to the domains'
projections (`server.events.projection`: the runs' metrics, alerts, run state; the workers' state), and
after the commit to subscribers. The ingest knows no domain: `server.projections` assembles it.

An entry that cannot be read or stored (anything but an outage) goes to the dead letters, ``DEAD_LETTER``,
and is acknowledged. SQL work runs in a thread (`Ingestor.step` is synchronous); `run_ingest` is the
supervised asyncio loop around it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlmodel import Session

from mocov3_core.events import Event as EngineEvent
from server.core import bulk
from server.core.db import writer
from server.core.loops import LoopState, supervise
from server.events.bus import EventBus
from server.events.projection import Batch, Notice, Projection, is_beat
from server.models import Event
from worker import protocol

log = logging.getLogger("mocolab.ingest")
DEAD_LETTER = f"{protocol.EVENTS_STREAM}:dead"
Entry = tuple[str, dict[Any, Any] | None]  # a stream entry: (id, fields)


@dataclass
class IngestResult:
    entries: int = 0
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    invalid: int = 0
    gaps: list[tuple[str, int, int]] = field(default_factory=list)  # (run_id, first missing, last missing)
    published: list[dict[str, Any]] = field(default_factory=list)  # new run events, for SSE
    team: list[Notice] = field(default_factory=list)  # for the team stream

    def add(self, other: IngestResult) -> None:
        self.entries += other.entries
        self.events += other.events
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.invalid += other.invalid
        self.gaps += other.gaps
        self.published += other.published
        self.team += other.team


@dataclass
class IngestStats:
    """Totals since start, for logs, the health endpoint and the benchmark."""

    entries: int = 0
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    invalid: int = 0
    gaps: int = 0
    errors: int = 0
    caught_up: bool = False


class Ingestor:
    """One consumer of the events stream. `step()` does one read-write-ack pass; safe to call repeatedly."""

    def __init__(self, engine: Engine, redis_client: redis.Redis, projections: Sequence[Projection],
                 consumer: str = "ingest", batch: int = 200, block_ms: int = 500, claim_idle_ms: int = 30_000) -> None:
        self.engine = engine
        self.write_engine = writer(engine)
        self.redis = redis_client
        self.projections = list(projections)
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.stats = IngestStats()
        self._own_pending = True  # re-read what this consumer left unacknowledged before reading new entries
        self._last_claim = 0.0
        self._group_ready = False

    # ------------------------------------------------------------ reading
    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(protocol.EVENTS_STREAM, protocol.INGEST_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def read(self, block_ms: int | None = None) -> list[tuple[str, dict[str, Any] | None]]:
        if not self._group_ready:
            self.ensure_group()
        now = time.monotonic()
        if now - self._last_claim > self.claim_idle_ms / 2000:
            self._last_claim = now
            claimed = self.claim_stale()
            if claimed:
                return claimed
        start = "0" if self._own_pending else ">"
        reply = self.redis.xreadgroup(protocol.INGEST_GROUP, self.consumer, {protocol.EVENTS_STREAM: start},
                                      count=self.batch, block=None if self._own_pending else (block_ms or None))
        entries = _entries(reply)
        if self._own_pending and not entries:
            self._own_pending = False
            return self.read(block_ms)
        self.stats.caught_up = not self._own_pending and len(entries) < self.batch
        return entries

    def claim_stale(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Take over entries another consumer read and never acknowledged (it died)."""
        reply = self.redis.xautoclaim(protocol.EVENTS_STREAM, protocol.INGEST_GROUP, self.consumer,
                                      min_idle_time=self.claim_idle_ms, start_id="0-0", count=self.batch)
        entries = [(_text(i), f) for i, f in reply[1]] if reply and len(reply) > 1 else []
        deleted = [_text(i) for i in reply[2]] if reply and len(reply) > 2 else []
        if deleted:  # trimmed from the stream while pending: nothing left to store
            self.redis.xack(protocol.EVENTS_STREAM, protocol.INGEST_GROUP, *deleted)
        if entries:
            log.info("claimed %d stale entries from dead consumers", len(entries))
        return entries

    # ------------------------------------------------------------ one pass
    def step(self, block_ms: int | None = None) -> IngestResult:
        """Read, store, acknowledge. Raises on a Redis or database outage (nothing acknowledged then)."""
        try:
            entries = self.read(self.block_ms if block_ms is None else block_ms)
        except redis.RedisError as exc:
            if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                self._group_ready = False  # Redis lost its data (no persistence): start the group again
            # Redis may have handed us entries whose reply never arrived (it went down mid-read): they are in
            # this consumer's pending list, which a ">" read never returns. Read that list first next time.
            self._own_pending = True
            raise
        if not entries:
            return IngestResult()
        try:
            result = self.process(entries)
        except BaseException:
            self._own_pending = True  # they stay pending; read them again next time
            raise
        self.redis.xack(protocol.EVENTS_STREAM, protocol.INGEST_GROUP, *[i for i, _ in entries])
        self._account(result)
        return result

    def process(self, entries: list[Entry]) -> IngestResult:
        """Store the entries in one transaction. An entry that cannot be read, or that fails to store for any
        reason but an outage (a value SQL refuses, a time no datetime holds, ...), goes to the dead letters and
        is acknowledged with the rest: one bad entry never holds up the stream."""
        parsed, invalid, rejected = parse_entries(entries)
        for entry, reason in rejected:
            self._dead_letter(entry, reason)
        result = self._store_or_split(parsed)
        result.entries = len(entries)
        result.invalid += invalid
        return result

    def _store_or_split(self, parsed: list[tuple[Entry, list[EngineEvent]]]) -> IngestResult:
        """All of `parsed` in one transaction; when that fails, each entry in its own, to find the bad one."""
        try:
            return self._store([e for _, events in parsed for e in events])
        except Exception as exc:
            if _outage(exc):
                raise
            if len(parsed) == 1:
                entry, events = parsed[0]
                if not isinstance(exc, DBAPIError):  # not the database refusing a value: show where it broke
                    log.exception("entry %s could not be stored", entry[0])
                self._dead_letter(entry, f"{type(exc).__name__}: {exc}")
                return IngestResult(invalid=max(1, len(events)))
            log.warning("a batch of %d entries was refused (%s); storing them one by one", len(parsed), exc)
        result = IngestResult()
        for one in parsed:
            result.add(self._store_or_split([one]))
        return result

    def _dead_letter(self, entry: Entry, error: str) -> None:
        entry_id, fields = entry
        log.error("entry %s moved to %s: %s", entry_id, DEAD_LETTER, error)
        body = _body(fields) or b""
        self.redis.xadd(DEAD_LETTER, {"id": entry_id, "b": body, "error": error[:2000]}, maxlen=10_000)

    def _account(self, result: IngestResult) -> None:
        s = self.stats
        s.entries += result.entries
        s.events += result.events
        s.inserted += result.inserted
        s.duplicates += result.duplicates
        s.invalid += result.invalid
        s.gaps += len(result.gaps)
        if result.duplicates:
            log.info("%d duplicate events skipped (%d duplicates so far)", result.duplicates, s.duplicates)
        for run_id, first, last in result.gaps:
            log.warning("run %s: seq gap, %d..%d not received (yet)", run_id, first, last)

    # ------------------------------------------------------------ the transaction
    def _store(self, events: list[EngineEvent]) -> IngestResult:
        """Insert the run events not stored yet, then hand them (and the heartbeats) to every projection, all
        in one transaction."""
        result = IngestResult(events=len(events))
        unique: dict[tuple[str, int], EngineEvent] = {}
        beats: list[EngineEvent] = []
        for ev in events:
            if is_beat(ev):
                beats.append(ev)
            else:
                unique.setdefault((ev.run_id, ev.seq), ev)
        run_events = sorted(unique.values(), key=lambda e: (e.run_id, e.seq))
        with Session(self.write_engine, expire_on_commit=False) as session:
            inserted = bulk.insert_new(session, Event.__table__, [  # type: ignore[attr-defined]
                e.model_dump() for e in run_events], ["run_id", "seq"]) if run_events else set()
            new = [e for e in run_events if (e.run_id, e.seq) in inserted]
            result.inserted = len(new)
            result.duplicates = len(events) - len(beats) - len(new)  # replays and in-batch repeats
            batch = Batch(session, new, sorted(beats, key=lambda e: (e.time, e.seq)))
            for projection in self.projections:
                projection.project(batch)
            session.commit()
        result.gaps = batch.gaps
        result.team = batch.notices
        result.published = [e.model_dump() for e in new]
        return result


def _body(fields: dict[Any, Any] | None) -> Any:
    """Field `b` of a stream entry (bytes keys from a plain client, str keys from a decoding one)."""
    if not fields:
        return None
    return fields.get(b"b", fields.get("b"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(reply: Any) -> list[tuple[str, dict[str, Any] | None]]:
    out: list[tuple[str, dict[str, Any] | None]] = []
    for _stream, items in reply or []:
        out += [(_text(i), f) for i, f in items]
    return out


def parse_entries(entries: list[Entry]) -> tuple[list[tuple[Entry, list[EngineEvent]]], int, list[tuple[Entry, str]]]:
    """-> (each entry with its valid events, count of invalid events, the entries holding anything unreadable
    with the reason). What is unreadable is logged and never retried; an entry's valid events are kept."""
    parsed: list[tuple[Entry, list[EngineEvent]]] = []
    invalid = 0
    rejected: list[tuple[Entry, str]] = []
    for entry in entries:
        entry_id, fields = entry
        body = _body(fields)
        if body is None:
            if fields:  # an entry without `b` (deleted entries come back as None: nothing to do)
                log.warning("entry %s has no field 'b'; skipped", entry_id)
                invalid += 1
                rejected.append((entry, "no field 'b'"))
            continue
        try:
            items = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("entry %s is not JSON (%s); skipped", entry_id, exc)
            invalid += 1
            rejected.append((entry, f"not JSON: {exc}"))
            continue
        events: list[EngineEvent] = []
        reasons: list[str] = []
        for item in items if isinstance(items, list) else [items]:
            try:
                ev = EngineEvent.model_validate(item)
            except ValidationError as exc:
                reasons.append(f"invalid event: {exc.errors()[0]['msg']}")
                continue
            if len(ev.run_id) > 64 or ev.seq >= 2**62 or not math.isfinite(ev.time):
                reasons.append(f"event out of bounds (run_id {ev.run_id[:80]!r}, seq {ev.seq})")
                continue
            events.append(ev)
        if reasons:
            log.warning("entry %s: %d invalid events skipped: %s", entry_id, len(reasons), reasons[0])
            invalid += len(reasons)
            rejected.append((entry, f"{len(reasons)} of {len(reasons) + len(events)} events invalid (the others "
                                    f"were stored): {'; '.join(reasons)[:1500]}"))
        parsed.append((entry, events))
    return parsed, invalid, rejected


def _outage(exc: Exception) -> bool:
    """Redis or the database is away (wait and read the same entries again), as opposed to a bad entry."""
    if isinstance(exc, redis.RedisError | OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


# ---------------------------------------------------------------- the loop
async def run_ingest(ingestor: Ingestor, *, bus: EventBus | None = None, stop: asyncio.Event | None = None,
                     state: LoopState | None = None) -> IngestStats:
    """Ingest until `stop` is set (forever without one), supervised (`server.core.loops`): an outage of Redis
    or SQL, or any error, is waited out with back-off and shows in `state`; nothing is acknowledged that is
    not committed. What was stored goes out to SSE subscribers through `bus`."""
    stop = stop or asyncio.Event()

    async def step() -> None:
        try:
            result = await asyncio.to_thread(ingestor.step)
        except Exception:
            ingestor.stats.errors += 1
            raise
        if bus is not None:
            if result.published:
                bus.publish_events(result.published)
            for n in result.team:
                bus.publish_team(n.kind, n.team_id, n.data, n.scoped)

    await supervise(state or LoopState("ingest"), step, stop)
    return ingestor.stats
