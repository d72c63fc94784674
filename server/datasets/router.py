"""/api/v1/datasets: a team's registered datasets (a few lines per route; the work is in `service`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from server.core.errors import ERROR_RESPONSES
from server.core.ratelimit import submission_quota
from server.datasets import service
from server.datasets.schemas import DatasetCreate, DatasetPrepare, DatasetPublic
from server.deps import BusDep, CallerDep, DispatcherDep, SessionDep, SettingsDep

router = APIRouter(tags=["datasets"], responses=ERROR_RESPONSES)

Name = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
Team = Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$",
                                   description="One of your teams; default: your first.")]


@router.get("/datasets", response_model=list[DatasetPublic])
def read_datasets(session: SessionDep, caller: CallerDep, team: Team = None) -> list[DatasetPublic]:
    """The team's datasets, the built-in fashion-mnist first."""
    return service.list_datasets(session, caller=caller, team=team)


@router.post("/datasets", status_code=201, response_model=DatasetPublic, dependencies=[Depends(submission_quota)])
def register_dataset(body: DatasetCreate, session: SessionDep, settings: SettingsDep, caller: CallerDep,
                     dispatcher: DispatcherDep, bus: BusDep) -> DatasetPublic:
    """Register a folder (inside the allowed dataset roots) under a name; a `prepare` run scans it on a worker
    (counts, classes, mean and std, a sample grid): status scanning, then ready or failed."""
    return service.register(session, settings=settings, caller=caller, dispatcher=dispatcher, bus=bus, body=body)


@router.get("/datasets/{name}", response_model=DatasetPublic)
def read_dataset(name: Name, session: SessionDep, caller: CallerDep, team: Team = None) -> DatasetPublic:
    return service.read(session, caller=caller, team=team, name=name)


@router.post("/datasets/{name}/prepare", status_code=202, response_model=DatasetPublic,
             dependencies=[Depends(submission_quota)])
def prepare_dataset(name: Name, session: SessionDep, settings: SettingsDep, caller: CallerDep,
                    dispatcher: DispatcherDep, bus: BusDep, body: DatasetPrepare | None = None,
                    team: Team = None) -> DatasetPublic:
    """Write the dataset's packed copy (JPEG shards at a fixed short side, with an index) with a `prepare` run;
    runs naming the dataset read it once it is prepared."""
    return service.prepare(session, settings=settings, caller=caller, dispatcher=dispatcher, bus=bus, team=team,
                           name=name, body=body or DatasetPrepare())


@router.get("/datasets/{name}/samples.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "A grid of training images, label order, row-major."}})
def read_samples(name: Name, session: SessionDep, caller: CallerDep, team: Team = None) -> Response:
    return Response(service.samples(session, caller=caller, team=team, name=name), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=60"})


@router.delete("/datasets/{name}", status_code=204, response_class=Response)
def delete_dataset(name: Name, session: SessionDep, caller: CallerDep, bus: BusDep, team: Team = None) -> Response:
    """Forget the dataset (its files stay where they are); the built-in refuses with 409."""
    service.delete(session, caller=caller, bus=bus, team=team, name=name)
    return Response(status_code=204)
