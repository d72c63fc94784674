"""/api/v1/runs, /presets and /schema: a few lines per route, the work is in `service` and `repository`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlmodel import Session

from mocov3_core.config import json_schema
from mocov3_core.presets import PRETRAIN_PRESETS, list_presets
from server.core.errors import ERROR_RESPONSES
from server.core.ratelimit import submission_quota
from server.deps import BusDep, CallerDep, DispatcherDep, RedisDep, SessionDep, SettingsDep
from server.runs import metrics, repository, service
from server.runs.lifecycle import RunStatus
from server.runs.repository import RunFilters
from server.runs.schemas import (
    MAX_STEP,
    AlertPublic,
    AnyRunKind,
    CheckpointPublic,
    EvalResultPublic,
    EvaluateRequest,
    EventPublic,
    EventsPublic,
    ForkRequest,
    LineagePublic,
    PresetPublic,
    RunCreate,
    RunDetail,
    RunKind,
    RunMetrics,
    RunsPublic,
    RunUpdate,
    Value,
)

router = APIRouter(tags=["runs"], responses=ERROR_RESPONSES)

RunId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]


@router.get("/presets", response_model=list[PresetPublic])
def read_presets() -> list[PresetPublic]:
    return [PresetPublic(name=name, kind="pretrain", overrides=PRETRAIN_PRESETS[name]) for name in list_presets()]


@router.get("/schema/{kind}", response_model=dict[str, Any])
def read_schema(kind: RunKind) -> dict[str, Any]:
    """The JSON Schema of a run kind's spec (the submit form is rendered from it)."""
    return json_schema(kind)


@router.post("/runs", status_code=201, response_model=RunDetail, dependencies=[Depends(submission_quota)])
def submit_run(body: RunCreate, session: SessionDep, settings: SettingsDep, caller: CallerDep,
               dispatcher: DispatcherDep, bus: BusDep, redis_client: RedisDep) -> RunDetail:
    """Validate the spec and the resources, store the run as queued, then send it to its queue (a run on more
    than one device waits for the scheduler to place it on free devices of live agents)."""
    return service.submit(session, settings=settings, caller=caller, dispatcher=dispatcher, bus=bus, body=body,
                          redis_client=redis_client)


@router.get("/runs", response_model=RunsPublic)
def read_runs(session: SessionDep, caller: CallerDep, status: RunStatus | None = None, kind: AnyRunKind | None = None,
              project: Text = None, owner: Text = None, tag: Text = None, q: Text = None,
              parent_run_id: Text = None, skip: Annotated[int, Query(ge=0, le=10**9)] = 0,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> RunsPublic:
    filters = RunFilters(status=status, kind=kind, project=project, owner=owner, tag=tag, q=q,
                         parent_run_id=parent_run_id)
    rows, count = repository.list_runs(session, team_ids=caller.team_ids, filters=filters, skip=skip, limit=limit)
    return RunsPublic(data=repository.to_public(session, rows), count=count)


@router.get("/runs/{run_id}", response_model=RunDetail)
def read_run(run_id: RunId, session: SessionDep, caller: CallerDep) -> RunDetail:
    return repository.to_detail(session, service.get(session, caller=caller, run_id=run_id))


@router.patch("/runs/{run_id}", response_model=RunDetail)
def update_run(run_id: RunId, body: RunUpdate, session: SessionDep, caller: CallerDep, bus: BusDep) -> RunDetail:
    return service.update(session, caller=caller, bus=bus, run_id=run_id, body=body)


@router.post("/runs/{run_id}/cancel", response_model=RunDetail)
def cancel_run(run_id: RunId, session: SessionDep, caller: CallerDep, redis_client: RedisDep,
               dispatcher: DispatcherDep, bus: BusDep) -> RunDetail:
    """Ask the worker to stop at its next step (a checkpoint is kept); revoked if it has not within the grace."""
    return service.cancel(session, caller=caller, redis_client=redis_client, dispatcher=dispatcher, bus=bus,
                          run_id=run_id)


@router.post("/runs/{run_id}/resume", response_model=RunDetail, dependencies=[Depends(submission_quota)])
def resume_run(run_id: RunId, session: SessionDep, caller: CallerDep, redis_client: RedisDep,
               dispatcher: DispatcherDep, bus: BusDep) -> RunDetail:
    """Queue a failed, cancelled or lost run again; it continues from its latest checkpoint."""
    return service.resume(session, caller=caller, redis_client=redis_client, dispatcher=dispatcher, bus=bus,
                          run_id=run_id)


@router.post("/runs/{run_id}/evaluate", status_code=201, response_model=RunDetail,
             dependencies=[Depends(submission_quota)])
def evaluate_run(run_id: RunId, body: EvaluateRequest, session: SessionDep, settings: SettingsDep,
                 caller: CallerDep, dispatcher: DispatcherDep, bus: BusDep) -> RunDetail:
    """Submit a kNN, linear-probe or fine-tuning run on this pretraining run's checkpoint."""
    return service.evaluate(session, settings=settings, caller=caller, dispatcher=dispatcher, bus=bus,
                            run_id=run_id, body=body)


@router.post("/runs/{run_id}/fork", status_code=201, response_model=RunDetail,
             dependencies=[Depends(submission_quota)])
def fork_run(run_id: RunId, body: ForkRequest, session: SessionDep, settings: SettingsDep, caller: CallerDep,
             dispatcher: DispatcherDep, bus: BusDep, redis_client: RedisDep) -> RunDetail:
    """A new pretraining run from one of this run's checkpoints (default its latest) with changed settings, in
    its team and project; it keeps parent_run_id and parent_step (the step it left the parent at)."""
    return service.fork(session, settings=settings, caller=caller, dispatcher=dispatcher, bus=bus,
                        redis_client=redis_client, run_id=run_id, body=body)


@router.get("/runs/{run_id}/lineage", response_model=LineagePublic)
def read_lineage(run_id: RunId, session: SessionDep, caller: CallerDep) -> LineagePublic:
    """Where the run came from (the run and step it was forked from), the runs forked from it, and its rollback
    branches."""
    return service.lineage(session, caller=caller, run_id=run_id)


Keys = Annotated[str | None, Query(max_length=2000, description="Comma-separated; default all.")]
Start = Annotated[int | None, Query(ge=0, le=MAX_STEP)]
Buckets = Annotated[int | None, Query(ge=1, le=20_000, description="Downsample to N buckets (min, max, last each); "
                                      "omit for full resolution.")]
Limit = Annotated[int, Query(ge=1, le=2_000_000)]


def _keys(keys: str | None) -> list[str] | None:
    return [k.strip() for k in keys.split(",") if k.strip()] if keys else None


@router.get("/runs/{run_id}/metrics", response_model=RunMetrics)
def read_metrics(run_id: RunId, session: SessionDep, caller: CallerDep, keys: Keys = None, start: Start = None,
                 end: Start = None, buckets: Buckets = None, limit: Limit = 200_000) -> RunMetrics:
    service.get(session, caller=caller, run_id=run_id)
    return metrics.series(session, run_id=run_id, keys=_keys(keys), start=start, end=end, buckets=buckets,
                          limit=limit)


@router.get("/runs/{run_id}/branches/{branch}/metrics", response_model=RunMetrics)
def read_branch_metrics(run_id: RunId, branch: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep,
                        caller: CallerDep, keys: Keys = None, start: Start = None, end: Start = None,
                        buckets: Buckets = None, limit: Limit = 200_000) -> RunMetrics:
    """The curve a rollback abandoned: the branch's steps as they were before the replay overwrote them."""
    service.get_branch(session, caller=caller, run_id=run_id, branch=branch)
    return metrics.series(session, run_id=run_id, keys=_keys(keys), start=start, end=end, buckets=buckets,
                          limit=limit, points=metrics.branch_points(run_id, branch))


@router.get("/runs/{run_id}/metric-keys", response_model=list[str])
def read_metric_keys(run_id: RunId, session: SessionDep, caller: CallerDep) -> list[str]:
    service.get(session, caller=caller, run_id=run_id)
    return metrics.keys_of(session, run_id=run_id)


@router.get("/runs/{run_id}/alerts", response_model=list[AlertPublic])
def read_alerts(run_id: RunId, session: SessionDep, caller: CallerDep) -> list[AlertPublic]:
    service.get(session, caller=caller, run_id=run_id)
    return [AlertPublic.model_validate(a, from_attributes=True) for a in repository.alerts_of(session, run_id=run_id)]


@router.get("/runs/{run_id}/checkpoints", response_model=list[CheckpointPublic])
def read_checkpoints(run_id: RunId, session: SessionDep, caller: CallerDep) -> list[CheckpointPublic]:
    service.get(session, caller=caller, run_id=run_id)
    return [CheckpointPublic.model_validate(c, from_attributes=True)
            for c in repository.checkpoints_of(session, run_id=run_id)]


@router.get("/runs/{run_id}/evals", response_model=list[EvalResultPublic])
def read_evals(run_id: RunId, session: SessionDep, caller: CallerDep) -> list[EvalResultPublic]:
    """The run's own evaluation results and those of the evaluation runs of it."""
    service.get(session, caller=caller, run_id=run_id)
    return [EvalResultPublic.model_validate(e, from_attributes=True)
            for e in repository.evals_of(session, run_id=run_id)]


@router.get("/runs/{run_id}/events", response_model=EventsPublic)
def read_events(run_id: RunId, session: SessionDep, caller: CallerDep,
                after_seq: Annotated[int, Query(ge=-1, le=MAX_STEP)] = -1,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                types: Annotated[str | None, Query(max_length=200, description="Comma-separated types.")] = None,
                ) -> EventsPublic:
    service.get(session, caller=caller, run_id=run_id)
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    rows = repository.events_after(session, run_id=run_id, after_seq=after_seq, limit=limit, types=wanted)
    return EventsPublic(data=[EventPublic.model_validate(e, from_attributes=True) for e in rows],
                        last_seq=rows[-1].seq if rows else None)


class RunExport(BaseModel):
    run: RunDetail
    metrics: dict[str, dict[str, list[int] | list[Value]]]
    alerts: list[AlertPublic]
    checkpoints: list[CheckpointPublic]
    evals: list[EvalResultPublic]


@router.get("/runs/{run_id}/export.json", response_model=RunExport)
def export_json(run_id: RunId, session: SessionDep, caller: CallerDep) -> RunExport:
    run = service.get(session, caller=caller, run_id=run_id)
    return RunExport(
        run=repository.to_detail(session, run), metrics=metrics.json_series(session, run_id=run_id),
        alerts=[AlertPublic.model_validate(a, from_attributes=True)
                for a in repository.alerts_of(session, run_id=run_id)],
        checkpoints=[CheckpointPublic.model_validate(c, from_attributes=True)
                     for c in repository.checkpoints_of(session, run_id=run_id)],
        evals=[EvalResultPublic.model_validate(e, from_attributes=True)
               for e in repository.evals_of(session, run_id=run_id)])


@router.get("/runs/{run_id}/export.csv", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "One row per step, one column per metric key."}})
def export_csv(run_id: RunId, session: SessionDep, caller: CallerDep) -> StreamingResponse:
    service.get(session, caller=caller, run_id=run_id)
    engine = session.get_bind()

    def rows() -> Any:
        with Session(engine) as own:  # the request's session is closed before the body is streamed
            yield from metrics.csv_rows(own, run_id=run_id)

    return StreamingResponse(rows(), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{run_id}-metrics.csv"'})

