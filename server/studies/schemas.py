"""Request and response schemas of studies and the team's leaderboard."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from server.runs.lifecycle import RunStatus
from server.runs.schemas import EvalKind, Name, Queue, RunPublic, Tag, Value, _Body

Path = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
                                        max_length=128)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
StudyStatus = Literal["active", "ended", "cancelled"]


class AxisValueIn(_Body):
    label: Label
    overrides: dict[str, Any] = Field(min_length=1, description="Dotted spec keys this value sets.")


class AxisIn(_Body):
    name: Label | None = Field(None, description="Default: the path.")
    path: Path | None = Field(None, description="The dotted spec key the values set; without one, each value is "
                              "{label, overrides}.")
    values: list[Any] = Field(min_length=1, max_length=16, description="With a path: the values (or {label, value}); "
                              "without: {label, overrides} objects.")


class StudyCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    template: str | None = Field(None, max_length=64, description="One of GET /study-templates; its axes are used "
                                 "unless `axes` is given.")
    preset: str | None = Field(None, max_length=64, description="The base config's pretraining preset.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted keys on the base config.")
    axes: list[AxisIn] | None = Field(None, min_length=1, max_length=2)
    evaluations: list[EvalKind] = Field(["knn"], max_length=3,
                                        description="Queued for each run when its pretraining succeeds.")
    eval_overrides: dict[EvalKind, dict[str, Any]] = Field(default_factory=dict)
    project: Name = "default"
    team: Name | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    queue: Queue = "gpu"
    notes: str = Field("", max_length=10_000)


class AxisPublic(BaseModel):
    name: str
    labels: list[str]


class PaperPublic(BaseModel):
    source: str
    setting: str
    protocol: str
    notes: str


class TemplatePublic(BaseModel):
    name: str
    title: str
    description: str
    axes: list[AxisPublic]
    values: list[list[dict[str, Any]]] = Field(description="Per axis, each value's overrides.")
    paper: PaperPublic | None
    paper_numbers: dict[str, float]
    base: dict[str, Any] = Field(default_factory=dict, description="Settings the template applies under its axes "
                                 "(the paper's conditions), before the study's own overrides.")


class EvalCell(BaseModel):
    run_id: str
    status: RunStatus
    top1: float | None


class StudyRow(BaseModel):
    labels: list[str]
    overrides: dict[str, Any]
    run: RunPublic | None
    evals: dict[str, EvalCell]
    knn_curve: list[tuple[int, Value]] = Field(description="(step, kNN top-1) of the monitor, up to 64 points.")
    paper: float | None = Field(None, description="The paper's number for this row, where the template has one.")


class StudyPublic(BaseModel):
    id: str
    name: str
    template: str | None
    title: str | None
    project: str
    team: str
    owner: str
    created_at: datetime
    preset: str | None
    overrides: dict[str, Any]
    axes: list[AxisPublic]
    evaluations: list[str]
    notes: str
    runs: int = Field(description="Pretraining runs in the study.")
    progress: dict[str, int] = Field(description="Pretraining runs by status.")
    evals_done: int
    evals_total: int
    status: StudyStatus = Field(description="active: a run (or an evaluation to queue) has not ended; "
                                "cancelled: POST /studies/{id}/cancel.")
    cancelled_at: datetime | None = None


class StudyDetail(StudyPublic):
    rows: list[StudyRow]
    paper: PaperPublic | None


class LeaderboardRow(BaseModel):
    rank: int
    protocol: str
    dataset: str | None
    top1: float
    top5: float | None
    eval_run_id: str
    pretrain_run_id: str | None
    name: str | None
    model: str | None
    framework: str | None
    project: str
    owner: str
    study_id: str | None
    config: dict[str, Any] = Field(description="The pretraining spec's settings that differ from the defaults.")
    finished_at: datetime | None


class Leaderboard(BaseModel):
    data: list[LeaderboardRow]
