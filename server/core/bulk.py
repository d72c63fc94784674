"""Idempotent batch writes for SQLite and PostgreSQL: insert-if-new (returning what was new) and upsert, for
the ingest and every domain projecting events into its tables.

SQLite: the driver's own cursor, under the transaction SQLAlchemy began (BEGIN IMMEDIATE for the ingest, so
nothing else writes between a check and an insert): one `executemany` for an upsert, and for insert-if-new
one `execute` per row whose rowcount says whether it was new. Both skip SQLAlchemy's per-row parameter
processing, which cost more than SQLite itself (docs/benchmarks.md). PostgreSQL: the rows are COPYed into
a temporary staging table, then moved with one INSERT .. SELECT .. ON CONFLICT, which is several times
faster than any multi-row INSERT from Python.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Table
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
    names, params = _sqlite_params(table, rows)
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
           f"ON CONFLICT ({', '.join(keys)}) DO NOTHING")
    at = [names.index(k) for k in keys]
    inserted: set[tuple[Any, ...]] = set()
    cur = _sqlite_cursor(session)
    try:
        for row in params:
            cur.execute(sql, row)
            if cur.rowcount == 1:
                inserted.add(tuple(row[i] for i in at))
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
    finally:
        cur.close()
    return inserted


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
    names, params = _sqlite_params(table, rows)
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
           f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in update)}")
    cur = _sqlite_cursor(session)
    try:
        cur.executemany(sql, params)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
    finally:
        cur.close()


def _dialect(session: Session) -> str:
    name = session.get_bind().dialect.name
    if name not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"ingest supports SQLite and PostgreSQL, not {name}")
    return name


def _sqlite_cursor(session: Session) -> sqlite3.Cursor:
    conn = session.connection()  # begins the session's transaction if it has not yet
    driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    return driver.cursor()


def _sqlite_params(table: Table, rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and plain row tuples (JSON columns as text, as SQLAlchemy's JSON type stores them)."""
    names = list(rows[0])
    as_json = [isinstance(table.c[n].type, JSON) for n in names]
    if not any(as_json):
        return names, [tuple(row[n] for n in names) for row in rows]
    return names, [tuple(json.dumps(row[n]) if j else row[n] for n, j in zip(names, as_json, strict=True))
                   for row in rows]


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
