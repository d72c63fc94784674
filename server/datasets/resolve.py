"""What the runs need of the datasets, without the datasets' service (which queues runs itself): where a team
may read data from, each team's built-in row, and a spec's `data.name` resolved into the reader, root and
statistics of the team's registered dataset.

Paths: a relative path in a spec is relative to the storage root, as checkpoints are (the worker resolves it the
same way, worker/runner.py `resolve_paths`). `<storage>/datasets/<team id>/` holds a team's packed copies: it is
inside the allowed roots, but only for that team.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from server.core.config import Settings
from server.core.db import utcnow, writer
from server.core.errors import SpecInvalid
from server.datasets import builtin
from server.models import Dataset


# ---------------------------------------------------------------- paths
def resolve_path(settings: Settings, path: str) -> Path | None:
    """`path` with symlinks and '..' resolved; a relative one is relative to the storage root. None if it cannot
    be resolved (a loop, a NUL byte)."""
    try:
        return (settings.storage_root / Path(path).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def _within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def path_refusal(settings: Settings, resolved: Path | None, team_id: int) -> str | None:
    """Why team `team_id` may not read `resolved` (None: it may): outside every allowed dataset root, or in
    <storage>/datasets but not in the team's own folder there."""
    roots = [r.resolve() for r in settings.allowed_dataset_roots]
    if resolved is None or not any(_within(resolved, r) for r in roots):
        return f"must be inside one of the allowed dataset roots: {', '.join(map(str, roots))}"
    packed = settings.packed_datasets_root.resolve()
    if _within(resolved, packed) and not resolved.is_relative_to(packed / str(team_id)):
        return f"{packed} holds the teams' packed copies: only your team's folder there ({packed / str(team_id)})"
    return None


def packed_folder(team_id: int, name: str, short_side: int) -> str:
    """Where a dataset's packed copy goes, relative to the storage root."""
    return f"datasets/{team_id}/{name}/packed-{short_side}"


# ---------------------------------------------------------------- the built-in
def _builtin_row(team_id: int) -> dict[str, Any]:
    now = utcnow()
    return {"team_id": team_id, "name": builtin.NAME, "kind": builtin.KIND, "root": builtin.ROOT, "status": "ready",
            "info": builtin.info(), "prepare_status": "none", "builtin": True, "created_at": now, "updated_at": now}


def ensure_builtin(session: Session, team_ids: Iterable[int]) -> None:
    """Give each team its built-in row if it has none yet, in `session` (not committed). Two requests doing it at
    once both succeed: the insert skips a row the other one made (unique (team_id, name))."""
    wanted = set(team_ids)
    if not wanted:
        return
    have = set(session.exec(select(Dataset.team_id).where(col(Dataset.team_id).in_(wanted),
                                                          Dataset.name == builtin.NAME)))
    missing = sorted(wanted - have)
    if not missing:
        return
    table = Dataset.__table__  # type: ignore[attr-defined]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(table).values([_builtin_row(t) for t in missing])
                    .on_conflict_do_nothing(index_elements=["team_id", "name"]))


def ensure_builtin_committed(engine: Engine, team_ids: Iterable[int]) -> None:
    """`ensure_builtin` in a short write transaction of its own (for requests that only read): looked for
    first without the write lock, so that a team that has its row costs one SELECT."""
    wanted = set(team_ids)
    with Session(engine) as read:
        have = set(read.exec(select(Dataset.team_id).where(col(Dataset.team_id).in_(wanted),
                                                           Dataset.name == builtin.NAME)))
    if wanted <= have:
        return
    with Session(writer(engine)) as write:
        ensure_builtin(write, wanted)
        write.commit()


# ---------------------------------------------------------------- data.name
def find(session: Session, team_id: int, name: str) -> Dataset | None:
    return session.exec(select(Dataset).where(Dataset.team_id == team_id, Dataset.name == name)).first()


def names(session: Session, team_id: int) -> list[str]:
    return list(session.exec(select(Dataset.name).where(Dataset.team_id == team_id).order_by(col(Dataset.name))))


def _stats(value: Any) -> list[float] | None:
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]
    return None


def resolve_name(session: Session, spec: dict[str, Any], team_id: int) -> None:
    """Fill `spec.data` from the team's dataset named by `data.name` (in place): the reader and root (the packed
    copy once there is one), and the mean and std the scan measured unless the spec set them. SpecInvalid at
    data.name for a name the team does not have, or a dataset not ready."""
    data = spec.get("data")
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not name:
        return
    ensure_builtin(session, [team_id])
    row = find(session, team_id, name)
    if row is None:
        raise SpecInvalid("data.name", f"no dataset named {name!r}; registered: {', '.join(names(session, team_id))}")
    if row.status == "scanning":
        raise SpecInvalid("data.name", f"dataset {name!r} is still scanning (run {row.scan_run_id}); wait until it "
                          "is ready")
    if row.status != "ready":
        raise SpecInvalid("data.name", f"dataset {name!r}: scan failed: {row.error or 'no reason given'}")
    if row.packed_root:
        data["dataset"], data["root"] = "packed", row.packed_root
    else:
        data["dataset"], data["root"] = row.kind, None if row.builtin else row.root
    info = row.info or {}
    for key in ("mean", "std"):
        if data.get(key) is None and _stats(info.get(key)) is not None:
            data[key] = _stats(info.get(key))
