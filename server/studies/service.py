"""Studies: one request makes every combination of one or two axes' values a pretraining run on the same base
config; each run's evaluations are queued when it succeeds (the watchdog's follow-up pass). The study's
table reads its runs back: a row per combination with the accuracies, the alert count, the kNN monitor's
curve and, where a template matches one of the paper's tables, the paper's number.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

import redis
from sqlmodel import Session, col, select

from server.auth.service import Caller, get_or_create_project
from server.core.db import utcnow
from server.core.errors import Conflict, NotFound, SpecInvalid
from server.events.bus import EventBus
from server.models import Metric, Project, Run, Study, Team, User
from server.runs import lifecycle
from server.runs import repository as runs_repo
from server.runs import service as runs_service
from server.runs.dispatch import Dispatcher
from server.runs.metrics import encode
from server.runs.service import _enqueue, new_run_id, refuse_client_checkpoint, resolve_spec
from server.studies.schemas import (
    AxisIn,
    AxisPublic,
    EvalCell,
    PaperPublic,
    StudyCreate,
    StudyDetail,
    StudyPublic,
    StudyRow,
    StudyStatus,
    TemplatePublic,
)
from server.studies.templates import TEMPLATES, Template, paper_number

MAX_RUNS = 64
CURVE_POINTS = 64


def templates() -> list[TemplatePublic]:
    return [TemplatePublic(name=t.name, title=t.title, description=t.description,
                           axes=[AxisPublic(name=a.name, labels=[v.label for v in a.values]) for a in t.axes],
                           values=[[v.overrides for v in a.values] for a in t.axes],
                           paper=_paper(t), paper_numbers=dict(t.paper.numbers) if t.paper else {},
                           base=dict(t.base))
            for t in TEMPLATES.values()]


def _paper(t: Template | None) -> PaperPublic | None:
    if t is None or t.paper is None:
        return None
    return PaperPublic(source=t.paper.source, setting=t.paper.setting, protocol=t.paper.protocol, notes=t.paper.notes)


def _axes(body: StudyCreate, template: Template | None) -> list[dict[str, Any]]:
    """-> [{name, values: [{label, overrides}]}], from the body's axes or else the template's."""
    if body.axes is None:
        if template is None:
            raise SpecInvalid("axes", "give axes, or a template (GET /study-templates)", root=("body",))
        return [{"name": a.name, "values": [{"label": v.label, "overrides": dict(v.overrides)} for v in a.values]}
                for a in template.axes]
    return [_axis(i, a) for i, a in enumerate(body.axes)]


def _axis(i: int, axis: AxisIn) -> dict[str, Any]:
    values: list[dict[str, Any]] = []
    for j, item in enumerate(axis.values):
        where = f"axes.{i}.values.{j}"
        if axis.path is not None:
            if isinstance(item, dict) and set(item) == {"label", "value"}:
                label, value = str(item["label"]), item["value"]
            else:
                label, value = _label(item), item
            values.append({"label": label[:64], "overrides": {axis.path: value}})
        elif isinstance(item, dict) and isinstance(item.get("label"), str) and isinstance(item.get("overrides"), dict) \
                and item["overrides"] and set(item) == {"label", "overrides"}:
            values.append({"label": item["label"][:64], "overrides": dict(item["overrides"])})
        else:
            raise SpecInvalid(where, "an axis without a path takes {label, overrides} values", root=("body",))
    labels = [v["label"] for v in values]
    if len(set(labels)) != len(labels):
        raise SpecInvalid(f"axes.{i}.values", "the values' labels must differ", root=("body",))
    return {"name": axis.name or axis.path or f"axis {i + 1}", "values": values}


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def create(session: Session, *, settings: Any, caller: Caller, dispatcher: Dispatcher, bus: EventBus | None,
           body: StudyCreate) -> StudyDetail:
    template = None
    if body.template is not None:
        template = TEMPLATES.get(body.template)
        if template is None:
            raise SpecInvalid("template", f"unknown template {body.template!r}; one of: {', '.join(TEMPLATES)}",
                              root=("body",))
    axes = _axes(body, template)
    combos = list(itertools.product(*(range(len(a["values"])) for a in axes)))
    if len(combos) > MAX_RUNS:
        raise SpecInvalid("axes", f"{len(combos)} runs; a study holds at most {MAX_RUNS}", root=("body",))
    if len(set(body.evaluations)) != len(body.evaluations):
        raise SpecInvalid("evaluations", "each evaluation once", root=("body",))
    base = {**(template.base if template else {}), **body.overrides}
    team_id = caller.team_id_for(body.team)  # data.name is resolved within it
    try:
        resolve_spec(settings, "pretrain", body.preset, base, None, session=session, team_id=team_id)
    except SpecInvalid as exc:
        root = ("body",) if exc.path == "preset" else ("body", "overrides")
        raise SpecInvalid(exc.path, exc.message, root=root) from None
    for kind in body.evaluations:  # the evaluations' overrides, checked now rather than when the runs finish
        refuse_client_checkpoint(body.eval_overrides.get(kind), ("body", "eval_overrides", kind))
        try:
            resolve_spec(settings, kind, None, body.eval_overrides.get(kind, {}), None, session=session,
                         team_id=team_id)
        except SpecInvalid as exc:
            raise SpecInvalid(exc.path, exc.message, root=("body", "eval_overrides", kind)) from None
    specs = []
    for combo in combos:
        overrides = dict(base)
        for a, j in zip(axes, combo, strict=True):
            overrides.update(a["values"][j]["overrides"])
        try:
            spec = resolve_spec(settings, "pretrain", body.preset, overrides, None, session=session, team_id=team_id)
        except SpecInvalid as exc:
            i = next((i for i, (a, j) in enumerate(zip(axes, combo, strict=True))
                      if any(k == exc.path or k.startswith(exc.path + ".") or exc.path.startswith(k + ".")
                             for k in a["values"][j]["overrides"])), None)
            where = ("body", "axes", str(i), "values", str(combo[i])) if i is not None else ("body", "overrides")
            raise SpecInvalid(exc.path, f"{exc.message} (in the run for "
                              f"{', '.join(a['values'][j]['label'] for a, j in zip(axes, combo, strict=True))})",
                              root=where) from None
        specs.append((combo, overrides, spec))

    project = get_or_create_project(session, team_id=team_id, name=body.project)
    assert project.id is not None and caller.user.id is not None
    study = Study(id=new_run_id(), name=body.name, template=template.name if template else None, team_id=team_id,
                  project_id=project.id, owner_id=caller.user.id, preset=body.preset, overrides=body.overrides,
                  axes=axes, evaluations=list(body.evaluations), notes=body.notes,
                  eval_overrides={str(k): v for k, v in body.eval_overrides.items()})
    session.add(study)
    session.flush()
    for combo, overrides, spec in specs:
        labels = [a["values"][j]["label"] for a, j in zip(axes, combo, strict=True)]
        run = Run(id=new_run_id(), kind="pretrain", name=f"{body.name}: {', '.join(labels)}", spec=spec,
                  status="queued", team_id=team_id, project_id=project.id, owner_id=caller.user.id,
                  notes=body.notes, queue=body.queue, study_id=study.id, preset=body.preset, overrides=overrides,
                  study_values={a["name"]: label for a, label in zip(axes, labels, strict=True)},
                  followups=list(body.evaluations), followups_pending=bool(body.evaluations))
        _enqueue(session, dispatcher, bus, run, [*body.tags, f"study:{study.id}"][:32])
    return detail(session, study)


def get(session: Session, *, caller: Caller, study_id: str) -> Study:
    study = session.get(Study, study_id)
    if study is None or study.team_id not in caller.team_ids:
        raise NotFound(f"study {study_id} not found")
    return study


def cancel(session: Session, *, caller: Caller, redis_client: redis.Redis, dispatcher: Dispatcher,
           bus: EventBus | None, study_id: str) -> StudyDetail:
    """Cancel each run of the study not ended yet, as POST /runs/{id}/cancel does, and queue no evaluation after.
    Again on a cancelled study: the runs still going are asked again; on one that had ended by itself: 409."""
    study = get(session, caller=caller, study_id=study_id)
    runs = _runs(session, study.id)
    if study.cancelled_at is None:
        if not _unended(runs):
            raise Conflict(f"study {study_id} already ended")
        # The flag first, in its own commit: a pretraining that succeeds from here on gets no evaluation.
        study.cancelled_at = utcnow()
        session.add(study)
        for run in runs:
            run.followups_pending = False
            session.add(run)
        session.commit()
    session.expire_all()  # each run's status read afresh: one may have ended while we were here
    for run in runs:
        if run.status in lifecycle.TERMINAL or (run.status == "running" and run.cancel_requested):
            continue  # a run already asked to stop: asking again would only put off its revoke
        try:
            runs_service.cancel(session, caller=caller, redis_client=redis_client, dispatcher=dispatcher, bus=bus,
                                run_id=run.id)
        except Conflict:  # it ended between the read and the cancel: nothing left to stop
            session.rollback()
    return detail(session, study)


def _unended(runs: list[Run]) -> bool:
    """A run still to end, or a succeeded pretraining whose evaluations are not queued yet."""
    return any(r.status not in lifecycle.TERMINAL or (r.status == "succeeded" and r.followups_pending) for r in runs)


def _status(study: Study, runs: list[Run]) -> StudyStatus:
    if study.cancelled_at is not None:
        return "cancelled"
    return "active" if _unended(runs) else "ended"


def notify_if_ended(session: Session, study_id: str) -> None:
    """When one of its runs ended: if that ended the study (every run ended, every follow-up queued), its end
    goes to the team's notification channels (once per study: the outbox's key)."""
    from server.notify.outbox import NotifyEvent, enqueue

    study = session.get(Study, study_id)
    if study is None:
        return
    runs = _runs(session, study.id)
    if _status(study, runs) != "ended":
        return
    pre = [r for r in runs if r.kind == "pretrain"]
    counts = dict(Counter(r.status for r in pre))
    best = max((r for r in pre if r.best_knn_top1 is not None), key=lambda r: r.best_knn_top1 or 0.0, default=None)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + (
        f"; best kNN top-1 {best.best_knn_top1:.2f}% ({best.name or best.id})" if best else "")
    enqueue(session, study.team_id, study.project_id, NotifyEvent(
        kind="study", title=f"Study {study.name} finished", incident=f"study:{study.id}", occurrence="ended",
        summary=summary, details={"study_id": study.id, "runs": len(pre), "statuses": counts,
                                  "evaluations": study.evaluations, "alerts": sum(r.alert_count for r in pre),
                                  "best_run_id": best.id if best else None,
                                  "best_knn_top1": best.best_knn_top1 if best else None}))


def list_studies(session: Session, *, caller: Caller, skip: int, limit: int) -> list[StudyPublic]:
    studies = session.exec(select(Study).where(col(Study.team_id).in_(caller.team_ids))
                           .order_by(col(Study.created_at).desc()).offset(skip).limit(limit)).all()
    return [_public(session, s, _runs(session, s.id)) for s in studies]


def _runs(session: Session, study_id: str) -> list[Run]:
    return list(session.exec(select(Run).where(Run.study_id == study_id).order_by(col(Run.created_at), col(Run.id))))


def _public(session: Session, study: Study, runs: list[Run]) -> StudyPublic:
    pre = [r for r in runs if r.kind == "pretrain"]
    evals = [r for r in runs if r.kind != "pretrain"]
    names = {
        "project": session.get(Project, study.project_id),
        "team": session.get(Team, study.team_id),
        "owner": session.get(User, study.owner_id),
    }
    template = TEMPLATES.get(study.template or "")
    return StudyPublic(
        id=study.id, name=study.name, template=study.template, title=template.title if template else None,
        project=getattr(names["project"], "name", ""), team=getattr(names["team"], "name", ""),
        owner=getattr(names["owner"], "name", ""), created_at=study.created_at, preset=study.preset,
        overrides=study.overrides, axes=[AxisPublic(name=a["name"], labels=[v["label"] for v in a["values"]])
                                         for a in study.axes],
        evaluations=study.evaluations, notes=study.notes, runs=len(pre), progress=dict(Counter(r.status for r in pre)),
        evals_done=sum(r.status == "succeeded" for r in evals), evals_total=len(pre) * len(study.evaluations),
        status=_status(study, runs), cancelled_at=study.cancelled_at)


def detail(session: Session, study: Study) -> StudyDetail:
    runs = _runs(session, study.id)
    public = _public(session, study, runs)
    pre = [r for r in runs if r.kind == "pretrain"]
    by_parent: dict[str, list[Run]] = {}
    for r in runs:
        if r.parent_run_id:
            by_parent.setdefault(r.parent_run_id, []).append(r)
    published = {r.id: p for r, p in zip(pre, runs_repo.to_public(session, pre), strict=True)}
    template = TEMPLATES.get(study.template or "")
    rows = []
    for run in pre:
        labels = [str(run.study_values.get(a["name"], "")) for a in study.axes]
        evals: dict[str, EvalCell] = {}
        for e in sorted(by_parent.get(run.id, []), key=lambda r: r.created_at):
            top1 = getattr(e, f"best_{e.kind}_top1", None)
            if e.kind not in evals or e.status == "succeeded":
                evals[e.kind] = EvalCell(run_id=e.id, status=e.status, top1=top1)
        overrides = {}
        for a in study.axes:
            for v in a["values"]:
                if v["label"] == run.study_values.get(a["name"]):
                    overrides.update(v["overrides"])
        rows.append(StudyRow(labels=labels, overrides=overrides, run=published[run.id], evals=evals,
                             knn_curve=_curve(session, run.id),
                             paper=paper_number(template, labels) if template else None))
    return StudyDetail(**public.model_dump(), rows=rows, paper=_paper(template))


def _curve(session: Session, run_id: str) -> list[tuple[int, Any]]:
    """The kNN monitor's curve, thinned to at most CURVE_POINTS points (every k-th, and always the last)."""
    points = session.exec(select(Metric.step, Metric.value).where(Metric.run_id == run_id, Metric.key == "knn_top1")
                          .order_by(col(Metric.step))).all()
    if len(points) > CURVE_POINTS:
        every = math.ceil(len(points) / CURVE_POINTS)
        points = [*points[::every][:CURVE_POINTS - 1], points[-1]]
    return [(int(s), encode(v)) for s, v in points]


def to_markdown(study: StudyDetail) -> str:
    """A row per value, the accuracies, the alerts; the paper's number beside ours where there is one."""
    heads = [a.name for a in study.axes]
    cols = [*heads, *(f"{k} top-1" for k in study.evaluations), "best kNN", "alerts", "status"]
    if study.paper:
        cols.append(f"paper ({study.paper.source}, {study.paper.protocol})")
    title = f"**{study.name}**" + (f" ({study.title})" if study.title else "")
    lines = [title, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in study.rows:
        cells = [*row.labels]
        for kind in study.evaluations:
            cell = row.evals.get(kind)
            cells.append(f"{cell.top1:.2f}" if cell and cell.top1 is not None else (cell.status if cell else "-"))
        run = row.run
        cells += [f"{run.best_knn_top1:.2f}" if run and run.best_knn_top1 is not None else "-",
                  str(run.alert_count) if run else "-", run.status if run else "-"]
        if study.paper:
            cells.append(f"{row.paper:.1f}" if row.paper is not None else "-")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if study.paper:
        lines += ["", f"Paper: {study.paper.setting} ({study.paper.source}). {study.paper.notes}".strip()]
    return "\n".join(lines) + "\n"
