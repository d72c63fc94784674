"""SQL for runs: lookups scoped to teams, filtered lists, and the rows that hang off a run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, or_
from sqlmodel import Session, col, delete, select

from server.models import Alert, Checkpoint, EvalResult, Event, Metric, Project, Run, RunBranch, RunTag, Team, User
from server.runs.schemas import RunDetail, RunPublic

KNN_PROBE = "knn_top1"  # the monitor's metric (mocov3_core's training-time kNN probe)


@dataclass
class RunFilters:
    status: str | None = None
    kind: str | None = None
    project: str | None = None
    owner: str | None = None
    tag: str | None = None
    q: str | None = None
    parent_run_id: str | None = None


def get_run(session: Session, *, run_id: str, team_ids: Sequence[int]) -> Run | None:
    run = session.get(Run, run_id)
    return run if run is not None and run.team_id in team_ids else None


def list_runs(session: Session, *, team_ids: Sequence[int], filters: RunFilters, skip: int,
              limit: int) -> tuple[list[Run], int]:
    query = select(Run).where(col(Run.team_id).in_(team_ids))
    if filters.status:
        query = query.where(Run.status == filters.status)
    if filters.kind:
        query = query.where(Run.kind == filters.kind)
    if filters.parent_run_id:
        query = query.where(Run.parent_run_id == filters.parent_run_id)
    if filters.project:
        query = query.where(col(Run.project_id).in_(select(Project.id).where(Project.name == filters.project)))
    if filters.owner:
        query = query.where(col(Run.owner_id).in_(select(User.id).where(User.name == filters.owner)))
    if filters.tag:
        query = query.where(exists().where(col(RunTag.run_id) == col(Run.id), col(RunTag.tag) == filters.tag))
    if filters.q:
        needle = filters.q.lower()
        project_hit = col(Run.project_id).in_(
            select(Project.id).where(func.lower(Project.name).contains(needle, autoescape=True)))
        query = query.where(or_(*(func.lower(c).contains(needle, autoescape=True)
                                  for c in (col(Run.id), col(Run.name), col(Run.notes))), project_hit))
    count = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Run.created_at).desc(), col(Run.id).desc()).offset(skip).limit(limit))
    return list(rows), int(count)


def tags_of(session: Session, run_ids: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {r: [] for r in run_ids}
    if run_ids:
        for run_id, tag in session.exec(select(RunTag.run_id, RunTag.tag).where(col(RunTag.run_id).in_(run_ids))
                                        .order_by(col(RunTag.tag))):
            out[run_id].append(tag)
    return out


def set_tags(session: Session, *, run_id: str, tags: Sequence[str]) -> None:
    session.exec(delete(RunTag).where(col(RunTag.run_id) == run_id))
    for tag in dict.fromkeys(tags):
        session.add(RunTag(run_id=run_id, tag=tag))


def to_public(session: Session, runs: Sequence[Run]) -> list[RunPublic]:
    """Runs with their project, team and owner names and tags, in three small queries."""
    if not runs:
        return []
    projects = dict(session.exec(select(Project.id, Project.name)
                                 .where(col(Project.id).in_({r.project_id for r in runs}))).all())
    teams = dict(session.exec(select(Team.id, Team.name).where(col(Team.id).in_({r.team_id for r in runs}))).all())
    owners = dict(session.exec(select(User.id, User.name).where(col(User.id).in_({r.owner_id for r in runs}))).all())
    ids = [r.id for r in runs]
    tags, probes, evals = tags_of(session, ids), knn_probes(session, ids), knn_evals(session, ids)
    return [RunPublic(**_fields(r), project=projects.get(r.project_id, ""), team=teams.get(r.team_id, ""),
                      owner=owners.get(r.owner_id, ""), tags=tags[r.id], knn_probe_step=probes.get(r.id, (None,))[0],
                      knn_probe_top1=probes.get(r.id, (None, None))[1], knn_eval_top1=evals.get(r.id))
            for r in runs]


def knn_probes(session: Session, run_ids: Sequence[str]) -> dict[str, tuple[int, float | None]]:
    """run id -> (step, value) of its latest monitor kNN point (metrics key knn_top1; NULL = NaN)."""
    last = (select(Metric.run_id, func.max(Metric.step).label("step"))
            .where(col(Metric.run_id).in_(run_ids), Metric.key == KNN_PROBE).group_by(col(Metric.run_id)).subquery())
    rows = session.exec(select(Metric.run_id, Metric.step, Metric.value)
                        .join(last, (col(Metric.run_id) == last.c.run_id) & (col(Metric.step) == last.c.step))
                        .where(Metric.key == KNN_PROBE))
    return {run_id: (step, value if value is None or math.isfinite(value) else None) for run_id, step, value in rows}


def knn_evals(session: Session, run_ids: Sequence[str]) -> dict[str, float]:
    """run id -> best kNN evaluation top-1 among its own results and those of its evaluation runs."""
    rows = session.exec(select(EvalResult.run_id, Run.parent_run_id, EvalResult.top1)
                        .join(Run, col(Run.id) == col(EvalResult.run_id))
                        .where(EvalResult.protocol == "knn", col(EvalResult.top1).is_not(None),
                               or_(col(EvalResult.run_id).in_(run_ids), col(Run.parent_run_id).in_(run_ids))))
    wanted, best = set(run_ids), dict[str, float]()
    for run_id, parent_id, top1 in rows:
        if top1 is None or not math.isfinite(top1):
            continue
        for target in (run_id, parent_id):
            if target in wanted:
                best[target] = max(best.get(target, top1), top1)
    return best


def to_detail(session: Session, run: Run) -> RunDetail:
    public = to_public(session, [run])[0]
    return RunDetail(**public.model_dump(), spec=run.spec)


def _fields(run: Run) -> dict[str, Any]:
    data = run.model_dump(exclude={"spec", "team_id", "project_id", "owner_id", "task_id", "dispatched_at",
                                   "cancel_requested_at", "revoked_at", "followups", "followups_pending",
                                   "step_at", "step_clock", "clock_step", "step_time_s", "stalled_at"})
    spec = run.spec if isinstance(run.spec, dict) else {}
    model, data_spec = spec.get("model"), spec.get("data")
    data["model"] = str(model["arch"]) if isinstance(model, dict) and model.get("arch") else None
    data["framework"] = str(spec["framework"]) if spec.get("framework") else None
    data_spec = data_spec if isinstance(data_spec, dict) else {}
    named = data_spec.get("name") or data_spec.get("dataset")  # a registered dataset by its name
    data["dataset"] = str(named) if named else None
    return data


# ---------------------------------------------------------------- what hangs off a run
def events_after(session: Session, *, run_id: str, after_seq: int, limit: int,
                 types: Sequence[str] | None = None) -> list[Event]:
    query = select(Event).where(Event.run_id == run_id, Event.seq > after_seq)
    if types:
        query = query.where(col(Event.type).in_(types))
    return list(session.exec(query.order_by(col(Event.seq)).limit(limit)))


def alerts_of(session: Session, *, run_id: str) -> list[Alert]:
    return list(session.exec(select(Alert).where(Alert.run_id == run_id).order_by(col(Alert.seq))))


def checkpoints_of(session: Session, *, run_id: str) -> list[Checkpoint]:
    return list(session.exec(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(col(Checkpoint.step))))


def evals_of(session: Session, *, run_id: str) -> list[EvalResult]:
    """The run's own results, and those of the evaluations of it."""
    children = select(Run.id).where(Run.parent_run_id == run_id)
    query = select(EvalResult).where(or_(col(EvalResult.run_id) == run_id, col(EvalResult.run_id).in_(children)))
    return list(session.exec(query.order_by(col(EvalResult.time))))


def checkpoint_at(session: Session, *, run_id: str, step: int | None) -> Checkpoint | None:
    query = select(Checkpoint).where(Checkpoint.run_id == run_id)
    if step is not None:
        query = query.where(Checkpoint.step == step)
    return session.exec(query.order_by(col(Checkpoint.step).desc()).limit(1)).first()


# ---------------------------------------------------------------- lineage
def forks_of(session: Session, *, run_id: str) -> list[Run]:
    """The pretraining runs forked from `run_id` (its evaluations also name it as their parent), oldest first."""
    query = select(Run).where(Run.parent_run_id == run_id, Run.kind == "pretrain")
    return list(session.exec(query.order_by(col(Run.created_at), col(Run.id))))


def branches_of(session: Session, *, run_id: str) -> list[RunBranch]:
    return list(session.exec(select(RunBranch).where(RunBranch.run_id == run_id).order_by(col(RunBranch.branch))))
