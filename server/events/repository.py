"""Idempotent batch writes for SQLite and PostgreSQL: insert-if-new (returning what was new) and upsert.

SQLite: one cached INSERT .. ON CONFLICT statement executed for all rows (SQLAlchemy batches them into
multi-row statements). PostgreSQL: the rows are COPYed into a temporary staging table, then moved with one
INSERT .. SELECT .. ON CONFLICT, which is several times faster than any multi-row INSERT from Python.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session


def insert_new(session: Session, table: Table, rows: Sequence[dict[str, Any]],
               keys: Sequence[str]) -> set[tuple[Any, ...]]:
    """Insert rows whose key is not stored yet; -> the keys actually inserted (duplicates are skipped)."""
    if not rows:
        return set()
    if _dialect(session) == "postgresql":
        staged, cols = _stage(session, table, rows)
        result = session.connection().exec_driver_sql(
            f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {staged} ON CONFLICT ({', '.join(keys)}) "
            f"DO NOTHING RETURNING {', '.join(keys)}")
        return {tuple(r) for r in result}
    stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=keys).returning(*(table.c[k] for k in keys))
    return {tuple(r) for r in session.connection().execute(stmt, list(rows))}


def upsert(session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str],
           update: Sequence[str]) -> None:
    """Insert, or replace the `update` columns of the row with the same key. Keys must be unique in `rows`
    (PostgreSQL refuses to update one row twice in a statement)."""
    if not rows:
        return
    if _dialect(session) == "postgresql":
        staged, cols = _stage(session, table, rows)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
        session.connection().exec_driver_sql(
            f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {staged} ON CONFLICT ({', '.join(keys)}) "
            f"DO UPDATE SET {sets}")
        return
    stmt = sqlite.insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
    session.connection().execute(stmt, list(rows))


def _dialect(session: Session) -> str:
    name = session.get_bind().dialect.name
    if name not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"ingest supports SQLite and PostgreSQL, not {name}")
    return name


def _stage(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """COPY the rows into this connection's staging table for `table` (emptied first); -> (its name, columns)."""
    names = list(rows[0])
    as_json = {n for n in names if isinstance(table.c[n].type, JSON)}
    staged = f"_staged_{table.name}"
    conn = session.connection()
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {staged} (LIKE {table.name}) ON COMMIT DELETE ROWS")
    conn.exec_driver_sql(f"DELETE FROM {staged}")
    raw: Any = conn.connection.driver_connection
    cols = ", ".join(names)
    statement = f"COPY {staged} ({cols}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row([json.dumps(row[n]) if n in as_json else row[n] for n in names])
    except raw.Error as exc:  # the driver's own error: give it SQLAlchemy's class (DataError, OperationalError..)
        raise DBAPIError.instance(statement, None, exc, type(raw).Error) from exc
    return staged, cols
