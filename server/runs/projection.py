"""The runs' projections of the events stream.

- `RunRecords`: what runs emit, into their tables: metrics (a step stored again replaces the old value) and
  their rollups, alerts, checkpoints, evaluation results.
- `RunState`: the Run rows: seq and gaps, status through the status machine (`lifecycle`), progress, best
  accuracies (an evaluation's also on the run it evaluates), alert counts, and liveness from the workers'
  heartbeats; the changes go to the team stream (a status at once, progress at most every `progress_every_s`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, delete, insert, literal
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from mocov3_core.events import Event, decode_float
from server.core import bulk
from server.core.db import utcnow
from server.events.projection import Batch, Notice, finite, integer, text
from server.models import Alert, BranchMetric, Checkpoint, EvalResult, Metric, Run, RunBranch
from server.runs import lifecycle
from server.runs.metrics import refresh_rollups
from server.runs.repository import to_public

log = logging.getLogger("mocolab.ingest")
_BEST = {"knn": "best_knn_top1", "linear": "best_linear_top1", "finetune": "best_finetune_top1"}


class RunRecords:
    def project(self, batch: Batch) -> None:
        metrics: dict[tuple[str, str, int], float | None] = {}
        alerts, checkpoints, evals = [], {}, []
        session = batch.session
        for e in batch.events:
            p = e.payload
            if e.type == "metrics":
                step = integer(p.get("step"))
                values = p.get("values")
                if step is None or not isinstance(values, dict):
                    continue
                for key, raw in values.items():
                    number = decode_float(raw)
                    if number is not None and len(str(key)) <= 64:  # NaN is stored as NULL
                        metrics[(e.run_id, str(key), step)] = None if math.isnan(number) else number
            elif e.type == "alert":
                alerts.append({"run_id": e.run_id, "seq": e.seq, "time": e.time, "step": integer(p.get("step")),
                               "kind": text(p.get("kind"), 64), "severity": text(p.get("severity"), 16),
                               "metric": text(p.get("metric"), 64) or None, "message": text(p.get("message"), 4000),
                               "remedy": text(p.get("remedy"), 4000), "payload": p})
            elif e.type == "checkpoint":
                step = integer(p.get("step"))
                if step is not None and p.get("path"):
                    checkpoints[(e.run_id, step)] = {"run_id": e.run_id, "step": step, "seq": e.seq, "time": e.time,
                                                     "path": str(p["path"]), "healthy": bool(p.get("healthy", True))}
            elif e.type == "eval_result":
                evals.append({"run_id": e.run_id, "seq": e.seq, "time": e.time,
                              "protocol": text(p.get("protocol"), 16) or "eval", "top1": finite(p.get("top1")),
                              "top5": finite(p.get("top5")), "payload": p})
            elif e.type == "rollback":
                # the branch's curve is copied before the replayed steps overwrite it: what this batch holds of
                # it so far is stored first (the replay's metrics follow the rollback event in seq order)
                if metrics:
                    _store_metrics(session, metrics)
                    metrics = {}
                if checkpoints:
                    _store_checkpoints(session, checkpoints)
                    checkpoints = {}
                _rollback(session, e)
        if metrics:
            _store_metrics(session, metrics)
        if alerts:
            bulk.insert_new(session, Alert.__table__, alerts, ["run_id", "seq"])  # type: ignore[attr-defined]
        if checkpoints:
            _store_checkpoints(session, checkpoints)
        if evals:
            bulk.insert_new(session, EvalResult.__table__, evals, ["run_id", "seq"])  # type: ignore[attr-defined]


def _store_checkpoints(session: Session, checkpoints: dict[tuple[str, int], dict[str, Any]]) -> None:
    bulk.upsert(session, Checkpoint.__table__, list(checkpoints.values()),  # type: ignore[attr-defined]
                ["run_id", "step"], ["seq", "time", "path", "healthy"])


def _rollback(session: Session, e: Event) -> None:
    """A rollback of the engine's stability policy: a `run_branches` row, and the curve it abandons (the stored
    metrics of its steps) copied to `branch_metrics` before the replay overwrites them. The checkpoints after
    the one it went back to are gone (the engine deletes their files): their rows go too, so that no fork or
    evaluation is offered one.

    The abandoned steps: the contract says to_step+1 .. from_step, counted as steps done; a metrics event's
    step is the index of the step (a checkpoint at step N is taken after N steps, so the replay's first metrics
    are those of index N), so indices to_step .. from_step are copied (from_step's own is there only if the
    engine counts the other way)."""
    p = e.payload
    branch, to_step, from_step = integer(p.get("branch")), integer(p.get("to_step")), integer(p.get("from_step"))
    if branch is None or to_step is None or from_step is None or not 0 <= to_step <= from_step or \
            not 0 < branch < 2**31:
        log.warning("run %s: rollback event %d without a usable branch, to_step and from_step: %s", e.run_id, e.seq,
                    {k: p.get(k) for k in ("branch", "to_step", "from_step")})
        return
    skipped = p.get("skipped")
    pair = [integer(v) for v in skipped] if isinstance(skipped, list) and len(skipped) == 2 else None
    row = {"run_id": e.run_id, "branch": branch, "seq": e.seq, "time": e.time, "from_step": from_step,
           "to_step": to_step, "alert_kind": text(p.get("alert_kind"), 64), "alert_step": integer(p.get("alert_step")),
           "lr_scale": finite(p.get("lr_scale")), "skipped": pair if pair and None not in pair else None,
           "checkpoint": text(p.get("checkpoint"), 4000) or None}
    bulk.upsert(session, RunBranch.__table__, [row], ["run_id", "branch"],  # type: ignore[attr-defined]
                [k for k in row if k not in ("run_id", "branch")])
    b, m = BranchMetric.__table__.c, Metric.__table__.c  # type: ignore[attr-defined]
    # the same branch number again (an engine resumed from a checkpoint before it): its newest curve only
    session.execute(delete(BranchMetric.__table__).where(b.run_id == e.run_id, b.branch == branch))  # type: ignore[attr-defined]
    copied = sa_select(m.run_id, literal(branch, Integer), m.key, m.step, m.value).where(
        m.run_id == e.run_id, m.step >= to_step, m.step <= from_step)
    session.execute(insert(BranchMetric.__table__).from_select(  # type: ignore[attr-defined]
        ["run_id", "branch", "key", "step", "value"], copied))
    c = Checkpoint.__table__.c  # type: ignore[attr-defined]
    session.execute(delete(Checkpoint.__table__).where(c.run_id == e.run_id, c.step > to_step))  # type: ignore[attr-defined]


def _store_metrics(session: Session, metrics: dict[tuple[str, str, int], float | None]) -> None:
    bulk.upsert(session, Metric.__table__, [  # type: ignore[attr-defined]
        {"run_id": r, "key": k, "step": s, "value": v} for (r, k, s), v in metrics.items()],
        ["run_id", "key", "step"], ["value"])
    spans: dict[tuple[str, str], tuple[int, int]] = {}
    for r, k, s in metrics:
        lo, hi = spans.get((r, k), (s, s))
        spans[(r, k)] = (min(lo, s), max(hi, s))
    refresh_rollups(session, spans)


class RunState:
    def __init__(self, progress_every_s: float = 1.0) -> None:
        self.progress_every_s = progress_every_s
        self._progress_at: dict[str, float] = {}  # run -> when its progress was last announced
        self._last_seq: dict[str, int] = {}  # for runs without a Run row

    def project(self, batch: Batch) -> None:
        session = batch.session
        runs = _runs(session, {e.run_id for e in batch.events} | _beat_runs(batch.current_beats.values()))
        alerts: list[Notice] = []
        changed = self._apply(session, runs, batch, alerts)
        changed += self._progressed(runs, batch.events, {r.id for r in changed})
        session.flush()
        batch.notices += [Notice("run", r.team_id, p.model_dump(mode="json"))  # a status before its alerts
                          for r, p in zip(changed, to_public(session, changed), strict=True)]
        batch.notices += alerts
        _keep_alive(session, runs, batch.current_beats)

    def _apply(self, session: Session, runs: dict[str, Run], batch: Batch, alerts: list[Notice]) -> list[Run]:
        """Run state from the new events, in seq order; -> the runs whose status changed."""
        now = utcnow()
        changed: dict[str, Run] = {}
        parents: dict[str, Run] = {}
        for e in batch.events:
            run = runs.get(e.run_id)
            # a run this server knows starts at seq 0; one it does not is followed from its first event seen
            last = run.last_seq if run is not None else self._last_seq.get(e.run_id, e.seq - 1)
            if e.seq > last + 1:
                batch.gaps.append((e.run_id, last + 1, e.seq - 1))
            last = max(last, e.seq)
            if run is None:
                self._last_seq[e.run_id] = last
                continue
            run.last_seq = last
            run.last_heartbeat = now
            p = e.payload
            if e.type == "status":
                if p.get("state") == "running" and (integer(p.get("attempt")) or run.attempt) >= run.attempt:
                    _starting(run, now)
                if _status(run, p, e.time):
                    changed[run.id] = run
            elif e.type == "metrics":
                step, total = integer(p.get("step")), integer(p.get("total_steps"))
                if step is not None and total is not None:  # a count of work done with its total (a prepare run)
                    _moved(run, step, e.time, now)
                    run.step, run.total_steps = step, total
                elif step is not None:  # the step whose metrics these are: step + 1 done
                    _moved(run, step + 1, e.time, now)
                    run.step = step + 1
                knn = finite((p.get("values") or {}).get("knn_top1")) if isinstance(p.get("values"), dict) else None
                if knn is not None and (run.best_knn_top1 is None or knn > run.best_knn_top1):
                    run.best_knn_top1 = knn
            elif e.type == "eval_result":
                _best(session, run, p, parents)
            elif e.type == "alert":
                run.alert_count += 1
                alerts.append(Notice("alert", run.team_id, {"run_id": run.id, "seq": e.seq, "time": e.time, **p}))
            session.add(run)
        for parent in parents.values():
            session.add(parent)
            changed.setdefault(parent.id, parent)
        return list(changed.values())

    def _progressed(self, runs: dict[str, Run], new: list[Event], changed: set[str]) -> list[Run]:
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


STEP_TIME_EMA = 0.2  # weight of a new sample in the usual step time
CLOCK_SAMPLE_S = 1.0  # step times are sampled over at least this long (the engine emits a read-back's steps at once)


def _starting(run: Run, now: datetime) -> None:
    """An attempt starts (or the engine begins its loop): its loading and compiling are not judged by the stall
    watch, which waits for the step to move in this attempt; the usual step time of earlier attempts stays."""
    run.step_at, run.step_clock, run.clock_step, run.stalled_at = now, None, None, None


def _moved(run: Run, step: int, clock: float, now: datetime) -> None:
    """The stall watch's inputs as the step changes: when (the server's clock), and the usual seconds per step, an
    EMA of samples taken on the worker's clock over at least CLOCK_SAMPLE_S (a step that went back, a rollback
    or a resume, starts a new sample)."""
    if run.step == step:
        return
    run.step_at, run.stalled_at = now, None
    if run.clock_step is None or run.step_clock is None or step < run.clock_step:
        run.step_clock, run.clock_step = clock, step
        return
    elapsed, steps = clock - run.step_clock, step - run.clock_step
    if steps > 0 and elapsed >= CLOCK_SAMPLE_S:
        sample = elapsed / steps
        run.step_time_s = sample if run.step_time_s is None else \
            run.step_time_s + STEP_TIME_EMA * (sample - run.step_time_s)
        run.step_clock, run.clock_step = clock, step


def _runs(session: Session, run_ids: set[str]) -> dict[str, Run]:
    if not run_ids:
        return {}
    return {r.id: r for r in session.exec(select(Run).where(col(Run.id).in_(run_ids)))}


def _best(session: Session, run: Run, p: dict[str, Any], parents: dict[str, Run]) -> None:
    """An evaluation's top-1, as the best of its protocol on the run and on the pretraining run it evaluates."""
    top1, attr = finite(p.get("top1")), _BEST.get(str(p.get("protocol")))
    if top1 is None or attr is None:
        return
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


def _status(run: Run, p: dict[str, Any], t: float) -> bool:
    """Apply a status event through the run's status machine; -> whether the run's status changed.

    Engine states: running, succeeded, stopped, failed. The worker's own status events carry worker_id and
    attempt: running, then a final succeeded, failed, cancelled, or queued (it shut down and gave the task back
    to the queue). An event from an earlier attempt than the run's current one changes nothing, and neither
    does one the status machine refuses (a late "running" after the run ended, ...).
    """
    state = p.get("state")
    attempt = integer(p.get("attempt"))
    if attempt is not None and attempt < run.attempt:
        return False
    if isinstance(p.get("message"), str):
        run.message = p["message"][:4000]
    if p.get("worker_id"):
        run.worker_id = text(p["worker_id"], 128)
    if integer(p.get("total_steps")) is not None:
        run.total_steps = integer(p.get("total_steps"))
    if state not in ("running", "queued", *lifecycle.TERMINAL):
        return False  # "stopped": the worker's final word follows
    cause: lifecycle.Cause = "worker" if p.get("worker_id") else "engine"
    if not lifecycle.allowed(run.status, state, cause):
        log.info("run %s: %s event refused while %s (%s)", run.id, state, run.status, cause)
        return False
    before = run.status
    error = text(p.get("error") or p.get("message") or "failed", 4000) if state == "failed" else None
    lifecycle.transition(run, state, cause, error=error, at=datetime.fromtimestamp(t, UTC))
    step = integer(p.get("step"))
    if step is not None and (state == "running" or (state == "succeeded" and run.total_steps is not None)):
        run.step = step
    return run.status != before


def _keep_alive(session: Session, runs: dict[str, Run], current_beats: dict[str, Event]) -> None:
    """A run that a live worker's latest beat names is alive (the watchdog's input), on that worker."""
    now = utcnow()
    for worker_id, beat in current_beats.items():
        for run_id in _beat_runs([beat]):
            run = runs.get(run_id)
            if run is not None and run.status not in lifecycle.TERMINAL:
                run.last_heartbeat, run.worker_id = now, worker_id
                session.add(run)


def _beat_runs(beats: Iterable[Event]) -> set[str]:
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
