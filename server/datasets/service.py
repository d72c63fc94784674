"""What can be done to a team's datasets: register one (its folder is checked here, then a `prepare` run with
no `out` scans it on a worker), prepare its packed copy (a `prepare` run writing into <storage>/datasets/<team>/),
list, show, remove. The scan's and the packing's `dataset` event fill the row (`apply_event`, from the ingest);
a scan or packing run that ends without one marks the row failed (`reconcile`, from the ingest and the watchdog).

A dataset is the team's: another team's is a 404, and names are unique per team (the table's constraint).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from mocov3_core.config import validate_spec
from mocov3_core.events import Event
from server.auth.service import Caller, get_or_create_project
from server.core.config import Settings
from server.core.db import utcnow, writer
from server.core.errors import Conflict, NotFound, SpecInvalid
from server.datasets import builtin
from server.datasets.detect import detect
from server.datasets.resolve import (
    ensure_builtin,
    ensure_builtin_committed,
    find,
    packed_folder,
    path_refusal,
    resolve_path,
)
from server.datasets.schemas import DatasetCreate, DatasetPrepare, DatasetPublic
from server.events.bus import EventBus
from server.models import Dataset, Run, Team
from server.runs import lifecycle
from server.runs.dispatch import Dispatcher
from server.runs.service import _enqueue, new_run_id
from worker import protocol

log = logging.getLogger(__name__)
PROJECT = "datasets"  # the project a team's scan and prepare runs go to
MAX_SAMPLES_B64 = 4 << 20  # a sample grid larger than this (base64) is not kept
BODY = ("body",)


def _team_name(session: Session, team_id: int, cache: dict[int, str] | None = None) -> str:
    if cache is not None and team_id in cache:
        return cache[team_id]
    team = session.get(Team, team_id)
    name = team.name if team is not None else str(team_id)
    if cache is not None:
        cache[team_id] = name
    return name


# ---------------------------------------------------------------- reading
def get(session: Session, *, caller: Caller, team: str | None, name: str) -> Dataset:
    """The caller's team's dataset (its first team's unless `team` names another of its teams), else 404."""
    row = find(session, caller.team_id_for(team), name)
    if row is None:
        raise NotFound(f"dataset {name!r} not found")
    return row


def list_datasets(session: Session, *, caller: Caller, team: str | None) -> list[DatasetPublic]:
    team_id = caller.team_id_for(team)
    ensure_builtin_committed(session.get_bind(), [team_id])  # type: ignore[arg-type]
    rows = session.exec(select(Dataset).where(Dataset.team_id == team_id)
                        .order_by(col(Dataset.builtin).desc(), col(Dataset.name))).all()
    return to_public(session, rows)


def read(session: Session, *, caller: Caller, team: str | None, name: str) -> DatasetPublic:
    team_id = caller.team_id_for(team)
    if name == builtin.NAME:
        ensure_builtin_committed(session.get_bind(), [team_id])  # type: ignore[arg-type]
    return to_public(session, [get(session, caller=caller, team=team, name=name)])[0]


def samples(session: Session, *, caller: Caller, team: str | None, name: str) -> bytes:
    """The sample grid (JPEG). The built-in's is drawn on the first request and kept."""
    if name == builtin.NAME:
        ensure_builtin_committed(session.get_bind(), [caller.team_id_for(team)])  # type: ignore[arg-type]
    row = get(session, caller=caller, team=team, name=name)
    if row.samples_jpeg is None and row.builtin:
        try:
            grid, labels = builtin.sample_grid(row.root or builtin.ROOT)
        except (OSError, ValueError) as exc:
            raise NotFound(f"dataset {name!r}: its files cannot be read ({exc})") from None
        with Session(writer(session.get_bind()), expire_on_commit=False) as write:  # type: ignore[arg-type]
            stored = write.get(Dataset, row.id)
            if stored is not None:
                stored.samples_jpeg = grid
                stored.info = {**(stored.info or {}), "sample_labels": labels}
                write.add(stored)
                write.commit()
        return base64.b64decode(grid)
    if row.samples_jpeg is None:
        raise NotFound(f"dataset {name!r} has no sample grid" + (" yet: it is still scanning"
                                                                  if row.status == "scanning" else ""))
    return base64.b64decode(row.samples_jpeg)


def to_public(session: Session, rows: Iterable[Dataset]) -> list[DatasetPublic]:
    teams: dict[int, str] = {}
    out = []
    for row in rows:
        info = row.info or {}
        classes = info.get("classes") if isinstance(info.get("classes"), list) else None
        packed = info.get("packed") if row.packed_root and isinstance(info.get("packed"), dict) else None
        out.append(DatasetPublic(
            name=row.name, team=_team_name(session, row.team_id, teams), kind=row.kind, root=row.root,
            status=row.status, error=row.error, builtin=row.builtin, created_at=row.created_at,
            updated_at=row.updated_at, splits=info.get("splits"), classes=classes,
            num_classes=len(classes) if classes is not None else None, mean=info.get("mean"), std=info.get("std"),
            image_size=info.get("image_size"), stats_images=info.get("stats_images"),
            sample_labels=info.get("sample_labels"), has_samples=row.samples_jpeg is not None or row.builtin,
            skipped_count=info.get("skipped_count"), skipped=info.get("skipped"),
            skipped_reasons=info.get("skipped_reasons"),
            prepare_status=row.prepare_status,
            packed={**packed, "root": row.packed_root} if packed is not None else None,
            scan_run_id=row.scan_run_id, prepare_run_id=row.prepare_run_id))
    return out


def publish(session: Session, bus: EventBus | None, rows: Iterable[Dataset]) -> None:
    """The datasets' new state to their teams' streams (SSE event `dataset`)."""
    if bus is None:
        return
    rows = list(rows)
    for row, public in zip(rows, to_public(session, rows), strict=True):
        bus.publish_team("dataset", row.team_id, public.model_dump(mode="json"))


# ---------------------------------------------------------------- registering, preparing, removing
def check_source(settings: Settings, path: str, team_id: int) -> Path:
    """The folder a registration names, resolved, or SpecInvalid at body.path: not absolute, outside the allowed
    dataset roots (symlinks and '..' resolved), another team's packed data, missing, not a folder, unreadable."""
    def refuse(why: str) -> SpecInvalid:
        return SpecInvalid("path", why, root=BODY)

    if not os.path.isabs(path):
        raise refuse("an absolute path, as the server and the workers see it")
    resolved = resolve_path(settings, path)
    why = path_refusal(settings, resolved, team_id)
    if why is not None or resolved is None:
        raise refuse(why or "cannot be resolved")
    if not resolved.exists():
        raise refuse(f"{resolved} does not exist")
    if not resolved.is_dir():
        raise refuse(f"{resolved} is not a folder")
    try:
        with os.scandir(resolved) as it:
            next(it, None)
    except OSError as exc:
        raise refuse(f"{resolved} cannot be read ({exc.strerror or exc})") from None
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise refuse(f"{resolved} cannot be read (permission denied)")
    return resolved


def _prepare_run(session: Session, *, team_id: int, owner_id: int, name: str, spec: dict[str, Any]) -> Run:
    """A queued run of kind prepare in the team's datasets project, on the shared queue and one device (a scan
    or a packing is never a gang's: it needs no more than one process and its workers)."""
    project = get_or_create_project(session, team_id=team_id, name=PROJECT)
    assert project.id is not None
    checked = validate_spec("prepare", {**spec, "name": name}).model_dump(mode="json")
    return Run(id=new_run_id(), kind="prepare", name=name, spec=checked, status="queued", team_id=team_id,
               project_id=project.id, owner_id=owner_id, queue=protocol.DEFAULT_QUEUE, nodes=1, gpus_per_node=1)


def register(session: Session, *, settings: Settings, caller: Caller, dispatcher: Dispatcher, bus: EventBus | None,
             body: DatasetCreate) -> DatasetPublic:
    team_id = caller.team_id_for(body.team)
    ensure_builtin(session, [team_id])
    if find(session, team_id, body.name) is not None:
        raise SpecInvalid("name", f"{body.name!r} is taken in this team", root=BODY)
    folder = check_source(settings, body.path, team_id)
    kind = body.kind or detect(folder)
    if kind is None:
        raise SpecInvalid("kind", f"cannot tell the format of {folder}: give kind (imagefolder: class sub-folders "
                          "of images, or train/ and val/ holding them; idx; cifar10; cifar100; npz; packed)", root=BODY)
    assert caller.user.id is not None
    run = _prepare_run(session, team_id=team_id, owner_id=caller.user.id, name=f"scan {body.name}",
                       spec={"data": {"dataset": kind, "root": str(folder)}, "out": None})
    session.add(run)
    session.flush()
    row = Dataset(team_id=team_id, name=body.name, kind=kind, root=str(folder), status="scanning",
                  scan_run_id=run.id, created_by=caller.user.id)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # registered meanwhile by another request
        session.rollback()
        raise SpecInvalid("name", f"{body.name!r} is taken in this team", root=BODY) from None
    _enqueue(session, dispatcher, bus, run, ["dataset"])  # commits both, then sends the run
    publish(session, bus, [row])
    return to_public(session, [row])[0]


def prepare(session: Session, *, settings: Settings, caller: Caller, dispatcher: Dispatcher, bus: EventBus | None,
            team: str | None, name: str, body: DatasetPrepare) -> DatasetPublic:
    ensure_builtin(session, [caller.team_id_for(team)])
    row = get(session, caller=caller, team=team, name=name)
    if row.status != "ready":
        raise Conflict(f"dataset {name!r} is {row.status}" + (f": {row.error}" if row.error else "")
                       + "; only a ready dataset is prepared")
    if row.prepare_status == "preparing":
        raise Conflict(f"dataset {name!r} is being prepared already (run {row.prepare_run_id})")
    if row.kind == "packed":
        raise Conflict(f"dataset {name!r} is a packed copy already")
    if row.root and not row.builtin:  # the roots may have changed since it was registered
        why = path_refusal(settings, resolve_path(settings, row.root), row.team_id)
        if why is not None:
            raise Conflict(f"dataset {name!r}: its folder {row.root} is no longer readable here: {why}")
    assert caller.user.id is not None
    out = packed_folder(row.team_id, row.name, body.short_side)
    run = _prepare_run(session, team_id=row.team_id, owner_id=caller.user.id, name=f"prepare {name}",
                       spec={"data": {"dataset": row.kind, "root": None if row.builtin else row.root}, "out": out,
                             "short_side": body.short_side, "quality": body.quality})
    session.add(run)
    session.flush()
    row.prepare_run_id, row.prepare_status, row.error, row.updated_at = run.id, "preparing", None, utcnow()
    session.add(row)
    _enqueue(session, dispatcher, bus, run, ["dataset"])
    publish(session, bus, [row])
    return to_public(session, [row])[0]


def delete(session: Session, *, caller: Caller, bus: EventBus | None, team: str | None, name: str) -> None:
    """The row only: the source folder is the user's, and a packed copy stays in the storage (a registration
    under the same name that prepares again at the same short side continues it)."""
    ensure_builtin(session, [caller.team_id_for(team)])
    row = get(session, caller=caller, team=team, name=name)
    if row.builtin:
        raise Conflict(f"{name!r} is built in; it cannot be removed")
    session.delete(row)
    session.commit()
    if bus is not None:
        bus.publish_team("dataset", row.team_id, {"name": row.name, "team": _team_name(session, row.team_id),
                                                  "deleted": True})


# ---------------------------------------------------------------- what the runs report
def _int(value: Any, most: int = 2**62) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < most else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _splits(value: Any) -> dict[str, dict[str, int]] | None:
    if not isinstance(value, dict):
        return None
    out = {str(k)[:16]: {"images": n} for k, v in list(value.items())[:8]
           if isinstance(v, dict) and (n := _int(v.get("images"))) is not None}
    return out or None


def _triple(value: Any) -> list[float] | None:
    if isinstance(value, list) and len(value) == 3:
        numbers = [_float(v) for v in value]
        if all(n is not None and 0 <= n <= 1 for n in numbers):
            return numbers  # type: ignore[return-value]
    return None


def _size(value: Any) -> dict[str, list[int]] | None:
    if not isinstance(value, dict):
        return None
    out = {}
    for key in ("min", "median", "max"):
        pair = value.get(key)
        if not (isinstance(pair, list) and len(pair) == 2 and all(_int(p) is not None for p in pair)):
            return None
        out[key] = [int(p) for p in pair]
    return out


def clean_info(payload: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A `dataset` event's payload (a worker's word: every value read defensively) -> (the DatasetInfo kept in
    the row, without the grid; the grid, a base64 JPEG, or None when there is none or it is no JPEG)."""
    classes = payload.get("classes")
    labels = payload.get("sample_labels")
    skipped = payload.get("skipped")
    reasons = payload.get("skipped_reasons")
    packed = payload.get("packed")
    info: dict[str, Any] = {
        "kind": str(payload.get("kind") or "")[:16] or None, "root": str(payload.get("root") or "")[:4096] or None,
        "splits": _splits(payload.get("splits")),
        "classes": [str(c)[:200] for c in classes[:100_000]] if isinstance(classes, list) else None,
        "mean": _triple(payload.get("mean")), "std": _triple(payload.get("std")),
        "stats_images": _int(payload.get("stats_images")), "image_size": _size(payload.get("image_size")),
        "sample_labels": [x for x in labels[:256] if _int(x) is not None] if isinstance(labels, list) else None,
        "skipped_count": _int(payload.get("skipped_count")),
        "skipped": [str(x)[:500] for x in skipped[:20]] if isinstance(skipped, list) else None,
        "skipped_reasons": [str(x)[:500] for x in reasons[:20]] if isinstance(reasons, list) else None,
        "packed": None}
    if isinstance(packed, dict):
        info["packed"] = {"root": str(packed.get("root") or "")[:4096], "short_side": _int(packed.get("short_side")),
                          "quality": _int(packed.get("quality")), "shards": _int(packed.get("shards")),
                          "bytes": _int(packed.get("bytes")), "splits": _splits(packed.get("splits")),
                          "seconds": _float(packed.get("seconds"))}
    grid = payload.get("samples_jpeg")
    if not isinstance(grid, str) or len(grid) > MAX_SAMPLES_B64:
        return info, None
    try:
        jpeg = base64.b64decode(grid, validate=True)
    except (binascii.Error, ValueError):
        return info, None
    return info, grid if jpeg[:3] == b"\xff\xd8\xff" else None


def apply_event(session: Session, row: Dataset, event: Event) -> None:
    """A scan's or a packing's `dataset` event into the row (not committed)."""
    info, grid = clean_info(event.payload)
    if grid is not None:
        row.samples_jpeg = grid
    elif row.samples_jpeg is not None and (row.info or {}).get("sample_labels") is not None:
        info["sample_labels"] = row.info["sample_labels"]  # type: ignore[index]  # the kept grid's labels
    if event.run_id == row.scan_run_id:
        row.info, row.status, row.error = info, "ready", None
    if event.run_id == row.prepare_run_id:
        row.info = {**(row.info or {}), **{k: v for k, v in info.items() if v is not None}}
        run = session.get(Run, event.run_id)
        out = (run.spec or {}).get("out") if run is not None else None
        if info["packed"] is not None and isinstance(out, str):
            row.packed_root, row.prepare_status, row.error = out, "prepared", None
    row.updated_at = utcnow()
    session.add(row)


def reconcile(session: Session, rows: Iterable[Dataset]) -> list[Dataset]:
    """Rows whose scan or packing run ended without its result -> failed with the run's error (a run the user
    resumed: scanning or preparing again); -> the rows changed (not committed)."""
    changed = []
    for row in rows:
        before = (row.status, row.prepare_status)
        scan = session.get(Run, row.scan_run_id) if row.scan_run_id else None
        if scan is not None:
            if row.status == "scanning" and (ended := _ended_without(scan, row.info is None)):
                row.status, row.error = "failed", ended
            elif row.status == "failed" and scan.status in lifecycle.ACTIVE:
                row.status, row.error = "scanning", None
        prep = session.get(Run, row.prepare_run_id) if row.prepare_run_id else None
        if prep is not None:
            if row.prepare_status == "preparing" and (ended := _ended_without(prep, True)):
                row.prepare_status, row.error = "failed", f"prepare failed: {ended}"
            elif row.prepare_status == "failed" and prep.status in lifecycle.ACTIVE:
                row.prepare_status, row.error = "preparing", None
        if (row.status, row.prepare_status) != before:
            row.updated_at = utcnow()
            session.add(row)
            changed.append(row)
    return changed


def _ended_without(run: Run, missing: bool) -> str | None:
    """Why `run` ended without giving its dataset what it was for (None: it has not ended so)."""
    if run.status in ("failed", "cancelled"):
        return (run.error or run.message or f"its run was {run.status}")[:4000]
    if run.status == "succeeded" and missing:
        return f"its run {run.id} ended without a result"
    return None


def pending(session: Session) -> list[Dataset]:
    """Rows waiting on a run, and failed ones whose run was resumed."""
    def active(run_id: Any) -> Any:
        return exists().where(col(Run.id) == run_id, col(Run.status).in_(lifecycle.ACTIVE))

    status, prepared = col(Dataset.status), col(Dataset.prepare_status)
    return list(session.exec(select(Dataset).options(defer(Dataset.samples_jpeg)).where(or_(  # type: ignore[arg-type]
        status == "scanning", prepared == "preparing",
        and_(status == "failed", active(Dataset.scan_run_id)),
        and_(prepared == "failed", active(Dataset.prepare_run_id))))))


def for_runs(session: Session, run_ids: set[str]) -> list[Dataset]:
    if not run_ids:
        return []
    return list(session.exec(select(Dataset).where(
        or_(col(Dataset.scan_run_id).in_(run_ids), col(Dataset.prepare_run_id).in_(run_ids)))))
