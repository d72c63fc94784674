"""Request and response schemas of the runs API (the table is `server.models.Run`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mocov3_core.config import MAX_NAME
from server.runs.lifecycle import RunStatus
from worker import protocol

MAX_STEP = 2**62  # the largest step a query or body may name (SQL BIGINT holds it on every backend)

RunKind = Literal["pretrain", "knn", "linear", "finetune"]
# every kind a run may have: a `prepare` run scans or packs a dataset, and only the datasets API creates one
AnyRunKind = Literal["pretrain", "knn", "linear", "finetune", "prepare"]
EvalKind = Literal["knn", "linear", "finetune"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^,\x00-\x1f]+$")]
Queue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
RunRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
CheckpointStep = Annotated[int, Field(ge=0, le=MAX_STEP)]
# A metric value: a number, or 'nan' / 'inf' / '-inf' (JSON has no non-finite numbers).
Value = float | str


MAX_NODES = 256  # machines one run may ask for
MAX_GPUS_PER_NODE = 64  # devices it may ask for on each


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Body):
    """What a run asks for: `nodes` machines with `gpus_per_node` devices each (a GPU each, or a CPU slot on a
    machine without GPUs). The spec's optim.batch_size stays the global batch, split evenly over them all."""

    nodes: int = Field(1, ge=1, le=MAX_NODES, description="Machines.")
    gpus_per_node: int = Field(1, ge=1, le=MAX_GPUS_PER_NODE, description="Devices on each machine.")


class RunCreate(_Body):
    kind: RunKind = "pretrain"
    preset: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                               description="A pretraining preset (GET /presets).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted keys on top of preset and spec, "
                                      "e.g. {\"optim.base_lr\": 3e-4}.")
    spec: dict[str, Any] | None = Field(None, description="A (partial) spec tree, layered after the preset.")
    run_id: RunRef | None = Field(None, description="An evaluation (kind knn, linear or finetune): the pretraining "
                                  "run whose checkpoint it reads, one of your teams' (it then goes to that run's "
                                  "team and project). A checkpoint is named only this way, never by a path.")
    checkpoint_step: CheckpointStep | None = Field(None, description="With run_id: the checkpoint's step "
                                                   "(default: the latest).")
    name: str | None = Field(None, max_length=MAX_NAME)
    project: Name = "default"
    team: Name | None = Field(None, description="One of your teams; default: your first.")
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    notes: str = Field("", max_length=10_000)
    queue: Queue = protocol.DEFAULT_QUEUE
    resources: Resources = Field(default_factory=Resources, description="Machines and devices per machine "
                                 "(default one device). An evaluation runs on one device.")


class RunUpdate(_Body):
    name: str | None = Field(None, max_length=MAX_NAME)
    tags: list[Tag] | None = Field(None, max_length=32)
    notes: str | None = Field(None, max_length=10_000)


class EvaluateRequest(_Body):
    kind: EvalKind
    overrides: dict[str, Any] = Field(default_factory=dict)
    checkpoint_step: CheckpointStep | None = Field(None, description="Default: the latest checkpoint.")
    name: str | None = Field(None, max_length=MAX_NAME)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    queue: Queue | None = Field(None, description="Default: the pretraining run's queue.")


class ForkRequest(_Body):
    """A new pretraining run from a checkpoint of this one, with changed settings: the parent's spec, then
    `spec` (a partial tree), then `overrides`, validated like a new run's."""

    checkpoint_step: CheckpointStep | None = Field(None, description="The parent's checkpoint to start from "
                                                   "(default: its latest).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted keys on top of the parent's spec, "
                                      "e.g. {\"optim.base_lr\": 1e-4}.")
    spec: dict[str, Any] | None = Field(None, description="A partial spec tree layered on the parent's.")
    name: str | None = Field(None, max_length=MAX_NAME, description="Default: 'fork of <parent> @<step>'.")
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    notes: str = Field("", max_length=10_000)
    queue: Queue | None = Field(None, description="Default: the parent's queue.")
    resources: Resources | None = Field(None, description="Default: the parent's.")


class PlacementPublic(BaseModel):
    worker_id: str
    host: str | None = None
    devices: list[int]


class RunPublic(BaseModel):
    id: str
    kind: str
    name: str | None
    status: RunStatus
    project: str
    team: str
    owner: str
    tags: list[str]
    notes: str
    queue: str
    parent_run_id: str | None
    parent_step: int | None = Field(None, description="A fork: the parent's step it started from; an evaluation: "
                                    "the step of the checkpoint it reads.")
    checkpoint: str | None
    attempt: int
    worker_id: str | None
    created_at: datetime
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_heartbeat: datetime | None
    cancel_requested: bool
    error: str | None
    message: str | None
    step: int | None
    total_steps: int | None
    last_seq: int
    best_knn_top1: float | None
    best_linear_top1: float | None
    best_finetune_top1: float | None
    knn_probe_top1: float | None = Field(None, description="The monitor's latest kNN top-1 (%), a training-time probe "
                                         "on a few hundred images (metric knn_top1); null if none or NaN.")
    knn_probe_step: int | None = Field(None, description="The step of that probe.")
    knn_eval_top1: float | None = Field(None, description="Best kNN evaluation top-1 (%): this run's own (a kNN "
                                        "evaluation run) or its evaluations'. best_knn_top1 mixes it with the probe.")
    alert_count: int = Field(0, description="Stability alerts raised.")
    model: str | None = Field(None, description="The backbone (spec model.arch).")
    framework: str | None = Field(None, description="Pretraining framework (spec framework).")
    dataset: str | None = Field(None, description="The team's dataset it reads (spec data.name), else its reader "
                                "(spec data.dataset).")
    preset: str | None = Field(None, description="The preset it was submitted with (for clone and edit).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="The dotted overrides it was submitted with.")
    study_id: str | None = None
    study_values: dict[str, Any] = Field(default_factory=dict, description="Its values in its study, by axis.")
    nodes: int = Field(1, description="Machines it asks for.")
    gpus_per_node: int = Field(1, description="Devices it asks for on each machine.")
    wait_reason: str | None = Field(None, description="Why it is still queued (what it waits for); null when "
                                    "it is not waiting.")
    placement: list[PlacementPublic] | None = Field(None, description="Where it runs: one entry per machine, in "
                                                    "node order (node 0 first); null until placed.")


class RunDetail(RunPublic):
    spec: dict[str, Any]


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


class PresetPublic(BaseModel):
    name: str
    kind: str
    overrides: dict[str, Any]


class MetricSeries(BaseModel):
    """Columnar points. Downsampled: `step` and `value` are each bucket's last point; min, max, count, nan its
    range."""

    key: str
    step: list[int]
    value: list[Value]
    min: list[Value] | None = None
    max: list[Value] | None = None
    count: list[int] | None = None
    nan: list[int] | None = Field(None, description="Downsampled: NaN points in each bucket (min and max leave "
                                  "them out, so a NaN that is not a bucket's last point shows only here).")


class RunMetrics(BaseModel):
    run_id: str
    buckets: int | None
    bucket_width: int | None
    start: int | None
    end: int | None
    truncated: bool = False
    series: list[MetricSeries]


class EventPublic(BaseModel):
    run_id: str
    seq: int
    time: float
    type: str
    payload: dict[str, Any]


class EventsPublic(BaseModel):
    data: list[EventPublic]
    last_seq: int | None = Field(None, description="Pass as after_seq to read on.")


class AlertPublic(BaseModel):
    run_id: str
    seq: int
    time: float
    step: int | None
    kind: str
    severity: str
    metric: str | None
    message: str
    remedy: str
    payload: dict[str, Any]


class CheckpointPublic(BaseModel):
    run_id: str
    step: int
    seq: int
    time: float
    path: str
    healthy: bool


class LineageParent(BaseModel):
    id: str
    name: str | None
    step: int | None = Field(None, description="The parent's step this run started from.")


class LineageFork(BaseModel):
    id: str
    name: str | None
    status: RunStatus
    step: int | None = Field(None, description="The step of this run the fork started from (its parent_step).")


class BranchPublic(BaseModel):
    branch: int
    from_step: int = Field(description="The step training had reached when it rolled back.")
    to_step: int = Field(description="The checkpoint's step it restarted from.")
    alert_kind: str
    alert_step: int | None
    lr_scale: float | None = Field(None, description="The lr scale after the rollback.")
    skipped: list[int] | None = Field(None, description="[first, last] data positions skipped, or null.")
    time: float


class LineagePublic(BaseModel):
    parent: LineageParent | None = Field(None, description="The run it was forked from (null: none).")
    forks: list[LineageFork] = Field(default_factory=list, description="Pretraining runs forked from it.")
    branches: list[BranchPublic] = Field(default_factory=list, description="Its rollbacks, in order; each "
                                         "branch's abandoned curve is at /runs/{id}/branches/{branch}/metrics.")


class EvalResultPublic(BaseModel):
    run_id: str
    seq: int
    time: float
    protocol: str
    top1: float | None
    top5: float | None
    payload: dict[str, Any]
