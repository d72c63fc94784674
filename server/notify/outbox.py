"""The outbox: incidents become delivery rows in the transaction that saw them, and the delivery loop sends
them later (so the ingest never waits on a receiver, and a crash between the two loses nothing).

- `enqueue(session, team_id, project_id, event)`: any code's hook (the ingest's projection, a study's end,
  a server-side alert). It picks the team's enabled channels whose project (if any) and rules match, and for
  each writes one row, or folds the event into the channel's open message for the same incident.
- One message per incident: an incident is (run, kind) (an alert kind, a run end's status, an evaluation's
  protocol). A second one within the channel's cooldown adds 1 to the open row's `suppressed` instead of a new
  message. The row's unique `dedup_key` is (channel, incident, cooldown window): two transactions that both
  found no open row insert the same key, and the second folds into the first's row.
- Run ends: every change of `Run.status` to succeeded, failed or lost, wherever it is made (the ingest, the
  watchdog, the scheduler), is seen by an ORM attribute hook and enqueued just before that transaction commits
  (`before_commit`), in a savepoint, so a notification problem never costs the status change itself. A run of a
  study that ends it also enqueues the study's end (`server.studies.service.notify_if_ended`).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import event, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import object_session
from sqlmodel import Session, col, select

from server.core.db import utcnow
from server.events.projection import integer, text
from server.models import NotifyChannel, NotifyDelivery, Run

log = logging.getLogger("mocolab.notify")
EventKind = Literal["alert", "run_end", "evaluation", "study", "test"]
RUN_ENDS = ("succeeded", "failed", "lost")
SEVERITIES = ("warning", "critical")
DEFAULT_RULES: dict[str, Any] = {"alert_kinds": None, "severities": list(SEVERITIES), "run_ends": list(RUN_ENDS),
                                 "evaluations": True, "studies": True}
_PENDING = "mocolab.notify.run_ends"


@dataclass
class NotifyEvent:
    """What happened, as a message says it; stored as the delivery's payload and rendered when sent.

    `incident` names what one message covers (with the channel's cooldown); `occurrence` names this one event
    (used for the key when a channel has no cooldown). `details`: an alert's payload (metric, value, baseline,
    threshold, evidence, remedy, last_healthy_checkpoint), an evaluation's result, a study's figures.
    """

    kind: EventKind
    title: str
    incident: str
    occurrence: str = field(default_factory=lambda: uuid.uuid4().hex)
    summary: str = ""
    run_id: str | None = None
    run_name: str | None = None
    step: int | None = None
    severity: str | None = None
    alert_kind: str | None = None
    status: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> NotifyEvent:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in payload.items() if k in names})


def rules_of(channel: NotifyChannel) -> dict[str, Any]:
    return {**DEFAULT_RULES, **(channel.rules or {})}


def wants(rules: dict[str, Any], event: NotifyEvent) -> bool:
    """Whether a channel's rules ask for this event."""
    if event.kind == "alert":
        kinds = rules.get("alert_kinds")
        return (kinds is None or event.alert_kind in kinds) and (event.severity or "warning") in rules["severities"]
    if event.kind == "run_end":
        return event.status in rules["run_ends"]
    if event.kind == "evaluation":
        return bool(rules["evaluations"])
    if event.kind == "study":
        return bool(rules["studies"])
    return event.kind == "test"


def channels_for(session: Session, team_ids: set[int]) -> list[NotifyChannel]:
    if not team_ids:
        return []
    return list(session.exec(select(NotifyChannel).where(col(NotifyChannel.team_id).in_(team_ids),
                                                         col(NotifyChannel.enabled).is_(True))
                             .order_by(col(NotifyChannel.id))))


def matching(channels: list[NotifyChannel], team_id: int, project_id: int | None,
             event: NotifyEvent) -> list[NotifyChannel]:
    return [c for c in channels if c.team_id == team_id and (c.project_id is None or c.project_id == project_id)
            and wants(rules_of(c), event)]


def enqueue(session: Session, team_id: int, project_id: int | None, event: NotifyEvent) -> list[int]:
    """Write `event` into the outbox of every matching channel of the team (in `session`, not committed);
    -> the delivery ids written or folded into."""
    ids = []
    for channel in matching(channels_for(session, {team_id}), team_id, project_id, event):
        ids.append(file(session, channel, event))
    return ids


def file(session: Session, channel: NotifyChannel, event: NotifyEvent, count: int = 1, *,
         cooldown_s: int | None = None) -> int:
    """One channel's row for `event` (and `count - 1` more like it folded in): a new message, or the open one
    of the same incident within the cooldown. -> the delivery's id."""
    assert channel.id is not None
    now = utcnow()
    cooldown = max(0, channel.cooldown_s if cooldown_s is None else cooldown_s)
    if cooldown:
        open_id = session.exec(select(NotifyDelivery.id).where(
            NotifyDelivery.channel_id == channel.id, NotifyDelivery.incident == event.incident[:200],
            col(NotifyDelivery.created_at) >= now - timedelta(seconds=cooldown))
            .order_by(col(NotifyDelivery.id).desc()).limit(1)).first()
        if open_id is not None:
            _fold(session, int(open_id), count)
            return int(open_id)
        window = str(math.floor(now.timestamp() / cooldown))
    else:
        window = event.occurrence
    key = f"{channel.id}|{event.incident}|{window}"[:255]
    row = {"channel_id": channel.id, "dedup_key": key, "incident": event.incident[:200], "kind": event.kind,
           "run_id": event.run_id, "status": "pending", "attempts": 0, "suppressed": count - 1,
           "next_attempt_at": now, "created_at": now, "payload": event.to_payload()}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = NotifyDelivery.__table__  # type: ignore[attr-defined]
    stmt = dialect.insert(table).values(**row).on_conflict_do_nothing(index_elements=["dedup_key"])
    new_id = session.execute(stmt.returning(table.c.id)).scalar()
    if new_id is not None:
        return int(new_id)
    existing = int(session.exec(select(NotifyDelivery.id).where(NotifyDelivery.dedup_key == key)).one() or 0)
    if cooldown:  # another transaction opened the incident a moment ago: fold into it
        _fold(session, existing, count)
    return existing


def _fold(session: Session, delivery_id: int, count: int) -> None:
    session.execute(update(NotifyDelivery).where(col(NotifyDelivery.id) == delivery_id)
                    .values(suppressed=col(NotifyDelivery.suppressed) + count))


def alert_notification(run: Run, payload: dict[str, Any], *, occurrence: str | None = None,
                       at: float | None = None) -> NotifyEvent:
    """The notification of an alert with the engine's payload shape ({kind, step, metric, value, baseline,
    threshold, severity, message, remedy, evidence, last_healthy_checkpoint}): the ingest's, and a server-side
    alert's (a stalled run: `enqueue(session, run.team_id, run.project_id, alert_notification(run, payload))`)."""
    kind = text(payload.get("kind"), 64) or "alert"
    severity = text(payload.get("severity"), 16) or "warning"
    details = {k: payload.get(k) for k in ("metric", "value", "baseline", "threshold", "message", "remedy",
                                           "evidence", "last_healthy_checkpoint")}
    return NotifyEvent(kind="alert", title=f"{severity.capitalize()}: {kind} in run {run.name or run.id}",
                       incident=f"{run.id}:alert:{kind}", occurrence=occurrence or uuid.uuid4().hex,
                       summary=text(payload.get("message"), 2000), run_id=run.id, run_name=run.name,
                       step=integer(payload.get("step")),
                       severity=severity, alert_kind=kind, details=details, time=at or time.time())


# ---------------------------------------------------------------- run ends, from any status change
def run_end_event(run: Run, status: str) -> NotifyEvent:
    name = run.name or run.id
    what = {"succeeded": "succeeded", "failed": "failed", "lost": "was lost"}[status]
    text = (run.error if status == "failed" else run.message) or ""
    details: dict[str, Any] = {"kind": run.kind, "attempt": run.attempt, "total_steps": run.total_steps,
                               "best_knn_top1": run.best_knn_top1, "best_linear_top1": run.best_linear_top1,
                               "best_finetune_top1": run.best_finetune_top1, "alert_count": run.alert_count,
                               "message": text[:2000]}
    return NotifyEvent(kind="run_end", title=f"Run {name} {what}", incident=f"{run.id}:run_end:{status}",
                       occurrence=f"{run.attempt}", summary=text[:500], run_id=run.id, run_name=run.name,
                       step=run.step, severity="critical" if status != "succeeded" else None, status=status,
                       details=details)


def _status_set(target: Run, value: Any, oldvalue: Any, _initiator: Any) -> None:
    if value not in RUN_ENDS or value == oldvalue or not isinstance(oldvalue, str):
        return  # a new row, an unchanged status, or no end
    session = object_session(target)
    if session is not None:
        session.info.setdefault(_PENDING, []).append((target, value))


def _before_commit(session: OrmSession) -> None:
    pending: list[tuple[Run, str]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    try:
        with session.begin_nested():
            for run, status in pending:
                enqueue(session, run.team_id, run.project_id, run_end_event(run, status))  # type: ignore[arg-type]
            studies = {run.study_id for run, status in pending if run.study_id and status != "lost"}
            if studies:
                from server.studies.service import notify_if_ended  # the studies import the runs: late

                for study_id in studies:
                    notify_if_ended(session, study_id)  # type: ignore[arg-type]
    except Exception:  # the status change stands without its notification
        log.exception("notifications for %d run end(s) could not be queued", len(pending))


def _after_rollback(session: OrmSession) -> None:
    session.info.pop(_PENDING, None)


event.listen(Run.status, "set", _status_set, active_history=True)
event.listen(OrmSession, "before_commit", _before_commit)
event.listen(OrmSession, "after_rollback", _after_rollback)

