"""/api/v1/studies, /study-templates and /leaderboard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse, Response

from server.core.errors import ERROR_RESPONSES
from server.core.ratelimit import submission_quota
from server.deps import BusDep, CallerDep, DispatcherDep, RedisDep, SessionDep, SettingsDep
from server.runs.schemas import EvalKind
from server.studies import leaderboard, service
from server.studies.schemas import Leaderboard, StudyCreate, StudyDetail, StudyPublic, TemplatePublic

router = APIRouter(tags=["studies"], responses=ERROR_RESPONSES)

StudyId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
Limit = Annotated[int, Query(ge=1, le=5000)]


@router.get("/study-templates", response_model=list[TemplatePublic])
def read_templates() -> list[TemplatePublic]:
    """The paper's comparisons: what each varies and the numbers it printed."""
    return service.templates()


@router.post("/studies", status_code=201, response_model=StudyDetail, dependencies=[Depends(submission_quota)])
def create_study(body: StudyCreate, session: SessionDep, settings: SettingsDep, caller: CallerDep,
                 dispatcher: DispatcherDep, bus: BusDep) -> StudyDetail:
    """Queue a pretraining run per combination of the axes' values (every spec validated first: nothing is
    queued when one is invalid); each run's evaluations are queued when it succeeds."""
    return service.create(session, settings=settings, caller=caller, dispatcher=dispatcher, bus=bus, body=body)


@router.get("/studies", response_model=list[StudyPublic])
def read_studies(session: SessionDep, caller: CallerDep, skip: Annotated[int, Query(ge=0, le=10**9)] = 0,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[StudyPublic]:
    return service.list_studies(session, caller=caller, skip=skip, limit=limit)


@router.get("/studies/{study_id}", response_model=StudyDetail)
def read_study(study_id: StudyId, session: SessionDep, caller: CallerDep) -> StudyDetail:
    """The study's table: a row per combination with its accuracies, alerts, kNN curve and the paper's number."""
    return service.detail(session, service.get(session, caller=caller, study_id=study_id))


@router.post("/studies/{study_id}/cancel", response_model=StudyDetail)
def cancel_study(study_id: StudyId, session: SessionDep, caller: CallerDep, redis_client: RedisDep,
                 dispatcher: DispatcherDep, bus: BusDep) -> StudyDetail:
    """Cancel every run of the study that has not ended (each as a run's cancel does); no evaluation is queued
    for it afterwards. 409 when all had ended by themselves; again on a cancelled study, nothing more."""
    return service.cancel(session, caller=caller, redis_client=redis_client, dispatcher=dispatcher, bus=bus,
                          study_id=study_id)


@router.get("/studies/{study_id}/table.md", response_class=Response,
            responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}})
def study_markdown(study_id: StudyId, session: SessionDep, caller: CallerDep) -> PlainTextResponse:
    """The study's table as Markdown, laid out as the paper prints its ablations."""
    study = service.detail(session, service.get(session, caller=caller, study_id=study_id))
    return PlainTextResponse(service.to_markdown(study), media_type="text/markdown")


@router.get("/leaderboard", response_model=Leaderboard)
def read_leaderboard(session: SessionDep, caller: CallerDep, protocol: EvalKind | None = None,
                     dataset: Text = None, project: Text = None, limit: Limit = 500) -> Leaderboard:
    """The team's evaluated models, best first per protocol and dataset."""
    return Leaderboard(data=leaderboard.rows(session, caller=caller, protocol=protocol, dataset=dataset,
                                             project=project, limit=limit))


@router.get("/leaderboard.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def leaderboard_csv(session: SessionDep, caller: CallerDep, protocol: EvalKind | None = None, dataset: Text = None,
                    project: Text = None, limit: Limit = 500) -> PlainTextResponse:
    data = leaderboard.rows(session, caller=caller, protocol=protocol, dataset=dataset, project=project, limit=limit)
    return PlainTextResponse(leaderboard.to_csv(data), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="leaderboard.csv"'})


@router.get("/leaderboard.md", response_class=Response,
            responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}})
def leaderboard_markdown(session: SessionDep, caller: CallerDep, protocol: EvalKind | None = None,
                         dataset: Text = None, project: Text = None, limit: Limit = 500) -> PlainTextResponse:
    data = leaderboard.rows(session, caller=caller, protocol=protocol, dataset=dataset, project=project, limit=limit)
    return PlainTextResponse(leaderboard.to_markdown(data), media_type="text/markdown")
