"""The ingest's projection for notifications: `alert` and `eval_result` events of runs this server knows
become outbox rows for their team's matching channels, in the ingest's transaction (run ends come from the
status hook in `outbox`). It runs after the runs' projections, so the Run rows are this batch's.

A burst is one message: the batch's alerts are grouped by (run, kind) and each channel's group is filed once
with its count (the rest of the cooldown folds into that row as later batches come). Everything is written in
a savepoint: a notification that cannot be queued is logged, and the batch's events are stored regardless.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from sqlmodel import col, select

from mocov3_core.events import Event
from server.events.projection import Batch, finite, text
from server.models import Run
from server.notify.outbox import NotifyEvent, alert_notification, channels_for, file, matching

log = logging.getLogger("mocolab.notify")
_PROTOCOLS = {"knn": "kNN", "linear": "Linear", "finetune": "Fine-tuning"}


class NotifyProjection:
    def project(self, batch: Batch) -> None:
        wanted = [e for e in batch.events if e.type in ("alert", "eval_result")]
        if not wanted:
            return
        session = batch.session
        runs = {r.id: r for r in session.exec(select(Run).where(col(Run.id).in_({e.run_id for e in wanted})))}
        channels = channels_for(session, {r.team_id for r in runs.values()})
        if not channels:
            return
        try:
            with session.begin_nested():
                self._file(batch, runs, channels)
        except Exception:
            log.exception("notifications for %d events could not be queued", len(wanted))

    def _file(self, batch: Batch, runs: dict[str, Run], channels: list[Any]) -> None:
        session = batch.session
        alerts: dict[tuple[str, str], list[NotifyEvent]] = defaultdict(list)
        for e in batch.events:
            run = runs.get(e.run_id)
            if run is None:
                continue
            if e.type == "alert":
                ev = alert_event(run, e)
                alerts[(run.id, ev.alert_kind or "")].append(ev)
            elif e.type == "eval_result":
                ev = eval_event(session, run, e)
                for channel in matching(channels, run.team_id, run.project_id, ev):
                    file(session, channel, ev)
        for (run_id, _kind), events in alerts.items():
            run = runs[run_id]
            for channel in channels:
                passing = [ev for ev in events if matching([channel], run.team_id, run.project_id, ev)]
                if passing:
                    file(session, channel, passing[0], count=len(passing))


def alert_event(run: Run, e: Event) -> NotifyEvent:
    return alert_notification(run, e.payload, occurrence=f"{run.id}:{e.seq}", at=e.time)


def eval_event(session: Any, run: Run, e: Event) -> NotifyEvent:
    p = e.payload
    protocol = text(p.get("protocol"), 16) or "eval"
    top1, top5 = finite(p.get("top1")), finite(p.get("top5"))
    parent = session.get(Run, run.parent_run_id) if run.parent_run_id else None
    of = f" of {parent.name or parent.id}" if parent is not None else ""
    figure = f"top-1 {top1:.2f}%" if top1 is not None else "no top-1"
    title = f"{_PROTOCOLS.get(protocol, protocol)} evaluation{of}: {figure}"
    return NotifyEvent(kind="evaluation", title=title, incident=f"{run.id}:evaluation:{protocol}",
                       occurrence=f"{run.id}:{e.seq}", summary=title, run_id=run.id, run_name=run.name,
                       details={"protocol": protocol, "top1": top1, "top5": top5,
                                "pretrain_run_id": run.parent_run_id,
                                "pretrain_run_name": parent.name if parent is not None else None,
                                "dataset": text(p.get("dataset"), 64) or None},
                       time=e.time)
