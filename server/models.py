"""The SQL tables (SQLModel). Public response schemas live beside each domain's router (`*/schemas.py`);
rows that hold secrets (ApiToken.token_hash) are never returned.

Events, metrics, alerts, checkpoints and evaluation results are keyed by the engine's (run_id, seq) or
(run_id, key, step), which is what makes ingest idempotent. They carry no foreign key to `runs`: an event
for a run this database does not know (a run started from the engine's CLI) is still stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from server.core.db import UTCDateTime, utcnow

RUN_KINDS = ("pretrain", "knn", "linear", "finetune", "prepare")


# ---------------------------------------------------------------- people
class User(SQLModel, table=True):
    __tablename__ = "users"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, index=True)
    email: str | None = Field(default=None, max_length=255)
    is_admin: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Team(SQLModel, table=True):
    __tablename__ = "teams"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    user_id: int = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    team_id: int = Field(foreign_key="teams.id", primary_key=True, ondelete="CASCADE", index=True)
    role: str = Field(default="member", max_length=16)


class Project(SQLModel, table=True):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_projects_team_name"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="teams.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    """A bearer token: only its sha256 is stored; `prefix` identifies it in listings."""

    __tablename__ = "api_tokens"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64)
    prefix: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    kind: str = Field(default="api", max_length=16)  # api | session | login (a one-time login code)
    # the token this one was minted with (an API token, a session's token, a login code's token): revoking a
    # token revokes its descendants too
    parent_id: int | None = Field(default=None, foreign_key="api_tokens.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked: bool = False


# ---------------------------------------------------------------- runs
class Run(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_team_created", "team_id", "created_at"),)
    id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=16, index=True)
    name: str | None = Field(default=None, max_length=200)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    status: str = Field(default="queued", max_length=16, index=True)
    team_id: int = Field(foreign_key="teams.id", index=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    owner_id: int = Field(foreign_key="users.id", index=True)
    notes: str = Field(default="")
    queue: str = Field(max_length=64)
    parent_run_id: str | None = Field(default=None, foreign_key="runs.id", max_length=32, index=True)
    checkpoint: str | None = Field(default=None, description="The pretraining checkpoint an evaluation reads.")
    parent_step: int | None = Field(default=None, sa_type=BigInteger,
                                    description="The parent's step it started from (a fork) or reads (an evaluation).")
    attempt: int = 1
    task_id: str | None = Field(default=None, max_length=64)
    worker_id: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    queued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    dispatched_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_heartbeat: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancel_requested: bool = False
    cancel_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    error: str | None = None
    message: str | None = None
    step: int | None = None
    total_steps: int | None = None
    last_seq: int = Field(default=-1, sa_type=BigInteger)
    best_knn_top1: float | None = None
    best_linear_top1: float | None = None
    best_finetune_top1: float | None = None
    alert_count: int = Field(default=0, description="Stability alerts the run raised.")
    preset: str | None = Field(default=None, max_length=64, description="The preset it was submitted with.")
    overrides: dict[str, Any] = Field(default_factory=dict, sa_type=JSON,
                                      description="The dotted overrides it was submitted with.")
    study_id: str | None = Field(default=None, foreign_key="studies.id", max_length=32, index=True)
    study_values: dict[str, Any] = Field(default_factory=dict, sa_type=JSON,
                                         description="The study's axis name -> this run's value label.")
    followups: list[str] = Field(default_factory=list, sa_type=JSON,
                                 description="Evaluations to queue when this pretraining run succeeds.")
    followups_pending: bool = Field(default=False, index=True)
    nodes: int = Field(default=1, description="Machines the run asks for.")
    gpus_per_node: int = Field(default=1, description="Devices it asks for on each machine.")
    wait_reason: str | None = Field(default=None, description="Why a queued run waits (None when not waiting).")
    # one dict per machine, node order: {"worker_id", "host", "devices": [int]}; None until placed
    placement: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON)
    # the stall watch (server/runs/watchdog.py), kept by the ingest as the step moves: when the step last changed
    # (the server's clock, as the watchdog's); a sample point of the worker's clock and the step then (step times
    # are measured on one clock, between read-backs at least a second apart); the usual seconds per step (an EMA);
    # and when the current stall was alerted (one alert per episode)
    step_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    step_clock: float | None = None
    clock_step: int | None = Field(default=None, sa_type=BigInteger)
    step_time_s: float | None = None
    stalled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Study(SQLModel, table=True):
    """A named set of pretraining runs that vary one or two settings of one base config, each followed by
    the same evaluations."""

    __tablename__ = "studies"
    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    template: str | None = Field(default=None, max_length=64)
    team_id: int = Field(foreign_key="teams.id", index=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    owner_id: int = Field(foreign_key="users.id")
    preset: str | None = Field(default=None, max_length=64)
    overrides: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    axes: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    evaluations: list[str] = Field(default_factory=list, sa_type=JSON)
    eval_overrides: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    notes: str = Field(default="")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime,
                                          description="Set by the study's cancel: no follow-up is queued after it.")


class RunTag(SQLModel, table=True):
    __tablename__ = "run_tags"
    run_id: str = Field(foreign_key="runs.id", primary_key=True, max_length=32, ondelete="CASCADE")
    tag: str = Field(primary_key=True, max_length=64, index=True)


# ---------------------------------------------------------------- datasets
class Dataset(SQLModel, table=True):
    """A dataset a team registered (server/datasets/): its source folder, what the scan found (`info`: the
    engine's DatasetInfo without the sample grid, which is `samples_jpeg`), and its packed copy once prepared.
    Names are unique per team; the built-in Fashion-MNIST row of each team is made on first use."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_datasets_team_name"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="teams.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64)
    kind: str = Field(max_length=16, description="The reader (config.DatasetName) of the source.")
    root: str | None = Field(default=None, description="The source folder, resolved; None = the reader's "
                             "standard location (the built-in).")
    status: str = Field(default="scanning", max_length=16)  # scanning | ready | failed
    error: str | None = None
    info: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    samples_jpeg: str | None = Field(default=None, description="The sample grid, a base64 JPEG.")
    packed_root: str | None = Field(default=None, description="The packed copy, relative to the storage root.")
    prepare_status: str = Field(default="none", max_length=16)  # none | preparing | prepared | failed
    scan_run_id: str | None = Field(default=None, foreign_key="runs.id", max_length=32, index=True)
    prepare_run_id: str | None = Field(default=None, foreign_key="runs.id", max_length=32, index=True)
    created_by: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    builtin: bool = False


# ---------------------------------------------------------------- what runs emit
class Event(SQLModel, table=True):
    __tablename__ = "events"
    run_id: str = Field(primary_key=True, max_length=64)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    time: float
    type: str = Field(max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Metric(SQLModel, table=True):
    """One value per (run, key, step); a step run again after a resume replaces it."""

    __tablename__ = "metrics"
    run_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=64)
    step: int = Field(primary_key=True, sa_type=BigInteger)
    value: float | None = Field(default=None, description="NULL = NaN; +-inf are stored as such.")


class MetricRollup(SQLModel, table=True):
    """Min, max, counts and last point of one key over `width` consecutive steps (bucket = step // width; 64
    and 1024), kept exact by the ingest, so a downsampled view of a long curve reads far fewer rows."""

    __tablename__ = "metric_rollups"
    run_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=64)
    width: int = Field(primary_key=True)
    bucket: int = Field(primary_key=True, sa_type=BigInteger)
    vmin: float | None = None
    vmax: float | None = None
    n: int
    n_nan: int = Field(default=0, description="Points that are NaN (left out of min and max).")
    last_step: int = Field(sa_type=BigInteger)
    last_value: float | None = None


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"
    run_id: str = Field(primary_key=True, max_length=64)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    time: float
    step: int | None = None
    kind: str = Field(default="", max_length=64)
    severity: str = Field(default="", max_length=16)
    metric: str | None = Field(default=None, max_length=64)
    message: str = ""
    remedy: str = ""
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Checkpoint(SQLModel, table=True):
    """The latest checkpoint written at each step (a rollback and a resume overwrite the same steps)."""

    __tablename__ = "checkpoints"
    run_id: str = Field(primary_key=True, max_length=64)
    step: int = Field(primary_key=True, sa_type=BigInteger)
    seq: int = Field(sa_type=BigInteger)
    time: float
    path: str
    healthy: bool = True


class RunBranch(SQLModel, table=True):
    """A rollback of the engine's stability policy: the run went back from `from_step` to the checkpoint at
    `to_step`; the curve it abandoned is kept in `branch_metrics`."""

    __tablename__ = "run_branches"
    run_id: str = Field(primary_key=True, max_length=64)
    branch: int = Field(primary_key=True)
    seq: int = Field(sa_type=BigInteger, description="The rollback event's seq.")
    time: float
    from_step: int = Field(sa_type=BigInteger)
    to_step: int = Field(sa_type=BigInteger)
    alert_kind: str = Field(default="", max_length=64)
    alert_step: int | None = Field(default=None, sa_type=BigInteger)
    lr_scale: float | None = None
    skipped: list[int] | None = Field(default=None, sa_type=JSON, description="[first, last] data positions skipped.")
    checkpoint: str | None = None


class BranchMetric(SQLModel, table=True):
    """A rolled-back branch's metrics as they were before the replay overwrote them in `metrics`."""

    __tablename__ = "branch_metrics"
    run_id: str = Field(primary_key=True, max_length=64)
    branch: int = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=64)
    step: int = Field(primary_key=True, sa_type=BigInteger)
    value: float | None = Field(default=None, description="NULL = NaN, as in `metrics`.")


class EvalResult(SQLModel, table=True):
    __tablename__ = "eval_results"
    run_id: str = Field(primary_key=True, max_length=64)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    time: float
    protocol: str = Field(max_length=16)
    top1: float | None = None
    top5: float | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


# ---------------------------------------------------------------- workers
class Worker(SQLModel, table=True):
    __tablename__ = "workers"
    id: str = Field(primary_key=True, max_length=128)
    host: str | None = Field(default=None, max_length=255)
    queue: str | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=64)
    current_run_id: str | None = Field(default=None, max_length=64)
    first_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    telemetry: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class WorkerHeartbeat(SQLModel, table=True):
    """Worker history. (time, seq) is unique per worker even when a restarted worker counts seq from 0."""

    __tablename__ = "worker_heartbeats"
    worker_id: str = Field(primary_key=True, max_length=128)
    time: float = Field(primary_key=True)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    telemetry: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


# ---------------------------------------------------------------- notifications (server/notify/)
class NotifyChannel(SQLModel, table=True):
    """Where a team's notifications go: a JSON webhook, a Slack incoming webhook or e-mail, for the whole team
    or one project, with rules choosing what is sent. `secret` holds the write-only part (the URL, extra
    headers, the signing secret), sealed with the server's key; the API never returns it."""

    __tablename__ = "notify_channels"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_notify_channels_team_name"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="teams.id", index=True, ondelete="CASCADE")
    project_id: int | None = Field(default=None, foreign_key="projects.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64)
    kind: str = Field(max_length=16)  # webhook | slack | email
    enabled: bool = True
    target_hint: str = Field(default="", max_length=2000, description="The masked URL, or the e-mail addresses.")
    secret: str | None = Field(default=None, description="Sealed JSON {url, headers, signing_secret}.")
    emails: list[str] = Field(default_factory=list, sa_type=JSON)
    rules: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    cooldown_s: int = 1800
    created_by: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class NotifyDelivery(SQLModel, table=True):
    """The outbox: one message for one channel and one incident, written in the transaction that saw the
    incident and sent later by the delivery loop. `dedup_key` is unique, so an incident enqueued twice is one
    row; more incidents of the same kind within the channel's cooldown add to `suppressed` instead."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (Index("ix_notify_deliveries_due", "status", "next_attempt_at"),
                      Index("ix_notify_deliveries_incident", "channel_id", "incident", "created_at"))
    id: int | None = Field(default=None, primary_key=True)
    channel_id: int = Field(foreign_key="notify_channels.id", index=True, ondelete="CASCADE")
    dedup_key: str = Field(max_length=255, unique=True, index=True)
    incident: str = Field(max_length=200, description="What one message covers: <run>:<kind>, or a study's id.")
    kind: str = Field(max_length=16)  # alert | run_end | evaluation | study | test
    run_id: str | None = Field(default=None, max_length=64)
    status: str = Field(default="pending", max_length=16)  # pending | sent | failed
    attempts: int = 0
    suppressed: int = Field(default=0, description="Further incidents of the cooldown folded into this message.")
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class NotifyAttempt(SQLModel, table=True):
    """One try at sending a delivery: the HTTP status or SMTP reply code, the error, how long it took."""

    __tablename__ = "notify_attempts"
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="notify_deliveries.id", index=True, ondelete="CASCADE")
    time: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ok: bool = False
    code: int | None = Field(default=None, description="The HTTP status, or the SMTP reply code.")
    reply: str | None = Field(default=None, description="The start of the receiver's answer.")
    error: str | None = None
    duration_ms: float = 0.0
