"""The ingest loop: the workers' events stream (Redis) -> SQL, idempotently, then out to SSE subscribers.

Each pass reads up to `batch` stream entries with XREADGROUP in the group `protocol.INGEST_GROUP`
(every entry's field ``b`` is a JSON list of events), writes them in ONE transaction, and XACKs only after
the commit. An entry read but not acknowledged (the server died, SQL was down) stays pending: a restarted
consumer re-reads its own pending entries first (id 0), and entries left by a consumer that vanished are
taken over with XAUTOCLAIM once idle. Replays change nothing: events insert with ON CONFLICT DO NOTHING on
(run_id, seq), and only the events actually inserted go on to metrics, alerts, run state and subscribers.

SQL work runs in a thread (`Ingestor.step` is synchronous); `run_ingest` is the asyncio loop around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlmodel import Session, col, delete, select

from mocov3_core.events import Event as EngineEvent
from mocov3_core.events import decode_float
from server.core import bulk
from server.core.config import Settings
from server.core.db import make_engine, migrate, utcnow, wait_for_db, writer
from server.core.loops import LoopState, supervise
from server.events.bus import EventBus
from server.models import Alert, Checkpoint, EvalResult, Event, Metric, Run, Worker, WorkerHeartbeat
from server.runs import lifecycle
from server.runs.metrics import refresh_rollups
from server.runs.repository import to_public
from worker import protocol

log = logging.getLogger("mocolab.ingest")
DEAD_LETTER = f"{protocol.EVENTS_STREAM}:dead"
WORKER_PREFIX = protocol.worker_run_id("")
Entry = tuple[str, dict[Any, Any] | None]  # a stream entry: (id, fields)
_BEST = {"knn": "best_knn_top1", "linear": "best_linear_top1", "finetune": "best_finetune_top1"}


@dataclass
class IngestResult:
    entries: int = 0
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    invalid: int = 0
    gaps: list[tuple[str, int, int]] = field(default_factory=list)  # (run_id, first missing, last missing)
    published: list[dict[str, Any]] = field(default_factory=list)  # new run events, for SSE
    team: list[tuple[str, int | None, dict[str, Any]]] = field(default_factory=list)  # (kind, team_id, data)

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


def _finite(value: Any) -> float | None:
    number = decode_float(value)
    return number if number is not None and math.isfinite(number) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**62 else None
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _short(value: Any, n: int) -> str:
    return str(value if value is not None else "")[:n]


class Ingestor:
    """One consumer of the events stream. `step()` does one read-write-ack pass; safe to call repeatedly."""

    def __init__(self, engine: Engine, redis_client: redis.Redis, consumer: str = "ingest", batch: int = 200,
                 block_ms: int = 500, claim_idle_ms: int = 30_000, progress_every_s: float = 1.0,
                 heartbeat_retention_s: float = 14 * 86400, prune_every_s: float = 600.0) -> None:
        self.engine = engine
        self.write_engine = writer(engine)
        self.redis = redis_client
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.stats = IngestStats()
        self._own_pending = True  # re-read what this consumer left unacknowledged before reading new entries
        self._last_claim = 0.0
        self._group_ready = False
        self._last_seq: dict[str, int] = {}  # for runs without a Run row
        self.progress_every_s = progress_every_s
        self._progress_at: dict[str, float] = {}  # run -> when its progress was last announced
        self.heartbeat_retention_s = heartbeat_retention_s
        self.prune_every_s = prune_every_s
        self._pruned_at = -1e18  # monotonic time of the last history prune: the first beats prune at once

    @classmethod
    def from_settings(cls, engine: Engine, redis_client: redis.Redis, settings: Settings) -> Ingestor:
        return cls(engine, redis_client, consumer=settings.ingest_consumer, batch=settings.ingest_batch,
                   block_ms=settings.ingest_block_ms, claim_idle_ms=settings.ingest_claim_idle_ms,
                   heartbeat_retention_s=settings.heartbeat_retention_days * 86400)

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
        result = IngestResult(events=len(events))
        unique: dict[tuple[str, int], EngineEvent] = {}
        beats: list[EngineEvent] = []
        for ev in events:
            if ev.type == "heartbeat" or ev.run_id.startswith(WORKER_PREFIX):
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
            self._derived(session, new)
            runs = self._runs(session, {e.run_id for e in new} | _beat_runs(beats))
            changed = self._apply(session, runs, new, result)
            changed += self._progressed(runs, new, {r.id for r in changed})
            session.flush()
            result.team[:0] = [("run", r.team_id, p.model_dump(mode="json"))  # status before its alerts
                               for r, p in zip(changed, to_public(session, changed), strict=True)]
            self._workers(session, beats, runs, result)
            session.commit()
        result.published = [e.model_dump() for e in new]
        return result

    def _progressed(self, runs: dict[str, Run], new: list[EngineEvent], changed: set[str]) -> list[Run]:
        """Runs whose step moved, announced to the team at most every `progress_every_s` (status changes
        are announced at once, by `_apply`)."""
        now = time.monotonic()
        out = []
        for run_id in dict.fromkeys(e.run_id for e in new if e.type == "metrics"):
            run = runs.get(run_id)
            if run is None or run_id in changed or now - self._progress_at.get(run_id, -1e9) < self.progress_every_s:
                continue
            self._progress_at[run_id] = now
            out.append(run)
        for run_id in changed:
            self._progress_at[run_id] = now
        if len(self._progress_at) > 10_000:  # forget runs long quiet
            self._progress_at = {k: v for k, v in self._progress_at.items() if now - v < 3600}
        return out

    def _derived(self, session: Session, new: list[EngineEvent]) -> None:
        """Metrics (a step stored again replaces the old value), alerts, checkpoints, evaluation results."""
        metrics: dict[tuple[str, str, int], float | None] = {}
        alerts, checkpoints, evals = [], {}, []
        for e in new:
            p = e.payload
            if e.type == "metrics":
                step = _int(p.get("step"))
                values = p.get("values")
                if step is None or not isinstance(values, dict):
                    continue
                for key, raw in values.items():
                    number = decode_float(raw)
                    if number is not None and len(str(key)) <= 64:  # NaN is stored as NULL
                        metrics[(e.run_id, str(key), step)] = None if math.isnan(number) else number
            elif e.type == "alert":
                alerts.append({"run_id": e.run_id, "seq": e.seq, "time": e.time, "step": _int(p.get("step")),
                               "kind": _short(p.get("kind"), 64), "severity": _short(p.get("severity"), 16),
                               "metric": _short(p.get("metric"), 64) or None, "message": _short(p.get("message"), 4000),
                               "remedy": _short(p.get("remedy"), 4000), "payload": p})
            elif e.type == "checkpoint":
                step = _int(p.get("step"))
                if step is not None and p.get("path"):
                    checkpoints[(e.run_id, step)] = {"run_id": e.run_id, "step": step, "seq": e.seq, "time": e.time,
                                                     "path": str(p["path"]), "healthy": bool(p.get("healthy", True))}
            elif e.type == "eval_result":
                evals.append({"run_id": e.run_id, "seq": e.seq, "time": e.time,
                              "protocol": _short(p.get("protocol"), 16) or "eval", "top1": _finite(p.get("top1")),
                              "top5": _finite(p.get("top5")), "payload": p})
        if metrics:
            bulk.upsert(session, Metric.__table__, [  # type: ignore[attr-defined]
                {"run_id": r, "key": k, "step": s, "value": v} for (r, k, s), v in metrics.items()],
                ["run_id", "key", "step"], ["value"])
            spans: dict[tuple[str, str], tuple[int, int]] = {}
            for r, k, s in metrics:
                lo, hi = spans.get((r, k), (s, s))
                spans[(r, k)] = (min(lo, s), max(hi, s))
            refresh_rollups(session, spans)
        if alerts:
            bulk.insert_new(session, Alert.__table__, alerts, ["run_id", "seq"])  # type: ignore[attr-defined]
        if checkpoints:
            bulk.upsert(session, Checkpoint.__table__, list(checkpoints.values()),  # type: ignore[attr-defined]
                        ["run_id", "step"], ["seq", "time", "path", "healthy"])
        if evals:
            bulk.insert_new(session, EvalResult.__table__, evals, ["run_id", "seq"])  # type: ignore[attr-defined]

    def _runs(self, session: Session, run_ids: set[str]) -> dict[str, Run]:
        if not run_ids:
            return {}
        return {r.id: r for r in session.exec(select(Run).where(col(Run.id).in_(run_ids)))}

    def _apply(self, session: Session, runs: dict[str, Run], new: list[EngineEvent], result: IngestResult) -> list[Run]:
        """Run state from the new events, in seq order; -> the runs whose status changed."""
        now = utcnow()
        changed: dict[str, Run] = {}
        parents: dict[str, Run] = {}
        for e in new:
            run = runs.get(e.run_id)
            # a run this server knows starts at seq 0; one it does not is followed from its first event seen
            last = run.last_seq if run is not None else self._last_seq.get(e.run_id, e.seq - 1)
            if e.seq > last + 1:
                result.gaps.append((e.run_id, last + 1, e.seq - 1))
            last = max(last, e.seq)
            if run is None:
                self._last_seq[e.run_id] = last
                continue
            run.last_seq = last
            run.last_heartbeat = now
            p = e.payload
            if e.type == "status" and _status(run, p, e.time):
                changed[run.id] = run
            elif e.type == "metrics":
                step = _int(p.get("step"))
                if step is not None:
                    run.step = step + 1
                knn = _finite((p.get("values") or {}).get("knn_top1")) if isinstance(p.get("values"), dict) else None
                if knn is not None and (run.best_knn_top1 is None or knn > run.best_knn_top1):
                    run.best_knn_top1 = knn
            elif e.type == "eval_result":
                top1, attr = _finite(p.get("top1")), _BEST.get(str(p.get("protocol")))
                if top1 is not None and attr is not None:
                    targets = [run]
                    if run.parent_run_id:
                        parent = parents.get(run.parent_run_id) or session.get(Run, run.parent_run_id)
                        if parent is not None:
                            parents[parent.id] = parent
                            targets.append(parent)
                    for target in targets:
                        best = getattr(target, attr)
                        if best is None or top1 > best:
                            setattr(target, attr, top1)
            elif e.type == "alert":
                run.alert_count += 1
                result.team.append(("alert", run.team_id, {"run_id": run.id, "seq": e.seq, "time": e.time, **p}))
            session.add(run)
        for parent in parents.values():
            session.add(parent)
            changed.setdefault(parent.id, parent)
        return list(changed.values())

    def _prune_history(self, session: Session) -> None:
        """Delete worker telemetry older than the retention, at most every `prune_every_s` (in the same
        transaction as the beats that prompted it); the workers' latest state stays in `workers`."""
        now = time.monotonic()
        if now - self._pruned_at < self.prune_every_s:
            return
        self._pruned_at = now
        cutoff = time.time() - self.heartbeat_retention_s
        deleted = session.exec(delete(WorkerHeartbeat).where(col(WorkerHeartbeat.time) < cutoff))
        if deleted.rowcount:
            log.info("pruned %d worker heartbeats older than %.1f days", deleted.rowcount,
                     self.heartbeat_retention_s / 86400)

    def _workers(self, session: Session, beats: list[EngineEvent], runs: dict[str, Run],
                 result: IngestResult) -> None:
        if not beats:
            return
        beats = sorted(beats, key=lambda e: (e.time, e.seq))
        bulk.insert_new(session, WorkerHeartbeat.__table__, [  # type: ignore[attr-defined]
            {"worker_id": _worker_id(e), "time": e.time, "seq": e.seq, "telemetry": e.payload} for e in beats],
            ["worker_id", "time", "seq"])
        self._prune_history(session)
        latest: dict[str, EngineEvent] = {}
        for e in beats:
            latest[_worker_id(e)] = e
        now = utcnow()
        for worker_id, e in latest.items():
            p = e.payload
            worker = session.get(Worker, worker_id) or Worker(id=worker_id, first_seen=now)
            seen = datetime.fromtimestamp(e.time, UTC)
            if worker.last_seen is not None and worker.last_seen > seen and worker.telemetry:
                continue  # an older beat delivered late
            worker.host = _short(p.get("host"), 255) or worker.host
            worker.queue = _short(p.get("queue"), 64) or worker.queue
            worker.version = _short(p.get("version"), 64) or worker.version
            worker.current_run_id = _short(p.get("run_id"), 64) or None
            worker.last_seen, worker.telemetry = min(seen, now), p
            session.add(worker)
            result.team.append(("worker", None, {"id": worker_id, "host": worker.host, "queue": worker.queue,
                                                 "version": worker.version, "last_seen": worker.last_seen.isoformat(),
                                                 "current_run_id": worker.current_run_id, "telemetry": p}))
            for run_id in _beat_runs([e]):
                run = runs.get(run_id)
                if run is not None and run.status not in lifecycle.TERMINAL:
                    run.last_heartbeat, run.worker_id = now, worker_id
                    session.add(run)


def _status(run: Run, p: dict[str, Any], t: float) -> bool:
    """Apply a status event through the run's status machine; -> whether the run's status changed.

    Engine states: running, succeeded, stopped, failed. The worker's own status events carry worker_id and
    attempt: running, then a final succeeded, failed, cancelled, or queued (it shut down and gave the task back
    to the queue). An event from an earlier attempt than the run's current one changes nothing, and neither
    does one the status machine refuses (a late "running" after the run ended, ...).
    """
    state = p.get("state")
    attempt = _int(p.get("attempt"))
    if attempt is not None and attempt < run.attempt:
        return False
    if isinstance(p.get("message"), str):
        run.message = p["message"][:4000]
    if p.get("worker_id"):
        run.worker_id = _short(p["worker_id"], 128)
    if _int(p.get("total_steps")) is not None:
        run.total_steps = _int(p.get("total_steps"))
    if state not in ("running", "queued", *lifecycle.TERMINAL):
        return False  # "stopped": the worker's final word follows
    cause: lifecycle.Cause = "worker" if p.get("worker_id") else "engine"
    if not lifecycle.allowed(run.status, state, cause):
        log.info("run %s: %s event refused while %s (%s)", run.id, state, run.status, cause)
        return False
    before = run.status
    error = _short(p.get("error") or p.get("message") or "failed", 4000) if state == "failed" else None
    lifecycle.transition(run, state, cause, error=error, at=datetime.fromtimestamp(t, UTC))
    step = _int(p.get("step"))
    if step is not None and (state == "running" or (state == "succeeded" and run.total_steps is not None)):
        run.step = step
    return run.status != before


def _worker_id(e: EngineEvent) -> str:
    return _short(e.payload.get("worker_id") or e.run_id.removeprefix(WORKER_PREFIX), 128)


def _beat_runs(beats: Iterable[EngineEvent]) -> set[str]:
    ids: set[str] = set()
    for e in beats:
        if e.payload.get("state") == "stopped":
            continue
        if isinstance(e.payload.get("run_id"), str):
            ids.add(e.payload["run_id"])
        for r in e.payload.get("runs") or []:
            if isinstance(r, dict) and isinstance(r.get("run_id"), str):
                ids.add(r["run_id"])
    return ids


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
async def run_ingest(settings: Settings | None = None, *, engine: Engine | None = None,
                     redis_client: redis.Redis | None = None, bus: EventBus | None = None,
                     stop: asyncio.Event | None = None, ingestor: Ingestor | None = None,
                     state: LoopState | None = None) -> IngestStats:
    """Ingest until `stop` is set (forever without one), supervised (`server.core.loops`): an outage of Redis
    or SQL, or any error, is waited out with back-off and shows in `state`; nothing is acknowledged that is
    not committed. Standalone: `python -m server.events.ingest`."""
    if ingestor is None:
        settings = settings or Settings()
        if engine is None:
            engine = make_engine(settings.database)
            await asyncio.to_thread(wait_for_db, engine)
            await asyncio.to_thread(migrate, engine)
        redis_client = redis_client or redis.Redis.from_url(settings.redis_url, socket_timeout=10,
                                                            socket_connect_timeout=5)
        ingestor = Ingestor.from_settings(engine, redis_client, settings)
    stop = stop or asyncio.Event()
    state = state or LoopState("ingest")

    async def step() -> None:
        assert ingestor is not None
        try:
            result = await asyncio.to_thread(ingestor.step)
        except Exception:
            ingestor.stats.errors += 1
            raise
        if bus is not None:
            if result.published:
                bus.publish_events(result.published)
            for kind, team_id, data in result.team:
                bus.publish_team(kind, team_id, data)

    await supervise(state, step, stop)
    return ingestor.stats


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_ingest(Settings()))


if __name__ == "__main__":
    main()
