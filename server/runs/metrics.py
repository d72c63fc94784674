"""Metric series at full resolution or downsampled, rollups, and exports.

Downsampling cuts [start, end] into N buckets of equal step width (integer division of the step) and keeps
each bucket's min, max, count and last point, so a single-step spike survives any zoom level. The
bucket edges are shared by every key, so series drawn together line up.

Rollups (`metric_rollups`) hold the same numbers per key over `ROLLUP` (64) and `COARSE` (1024) steps,
written by the ingest in the transaction that stores the points and recomputed from the stored points of
every bucket a batch touched (so a step stored again after a resume leaves them exact). A request whose
buckets are at least 64 steps wide is answered from the rollups: its bucket width is rounded up to a
multiple of theirs (the coarse ones' when that costs at most a fifth of the buckets asked for) and its start
down to one, so each rollup falls whole into one bucket; a 10^6-step curve drawn 600 buckets wide then
reads 977 rows per key instead of 10^6. Finer requests
(zoomed in) read the points themselves.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, Table, and_, bindparam, func, literal_column
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from mocov3_core.events import encode_float
from server.core import bulk
from server.core.spreadsheet import cell
from server.models import BranchMetric, Metric, MetricRollup
from server.runs.schemas import MetricSeries, RunMetrics, Value


def encode(value: float | None) -> Value:
    """NULL is NaN (SQLite stores NaN as NULL); JSON carries non-finite numbers as strings."""
    return encode_float(math.nan if value is None else value)


ROLLUP = 64  # the fine rollups' width in steps
COARSE = 1024  # the coarse ones', made of 16 fine ones


@dataclass(frozen=True)
class Points:
    """Where a curve's points are: a run's own (`metrics`, with rollups), or a rolled-back branch's
    (`branch_metrics`: bounded by the steps it abandoned, so it has no rollups). `owner` picks the rows by the
    table's leading primary-key columns; every table has (key, step, value) after them."""

    table: Table
    owner: tuple[tuple[str, object], ...]
    rollups: bool = False

    def where(self, table: Any = None) -> list[ColumnElement[bool]]:
        c = (table if table is not None else self.table).c
        return [c[name] == value for name, value in self.owner]


def run_points(run_id: str) -> Points:
    return Points(Metric.__table__, (("run_id", run_id),), rollups=True)  # type: ignore[attr-defined]


def branch_points(run_id: str, branch: int) -> Points:
    return Points(BranchMetric.__table__, (("run_id", run_id), ("branch", branch)))  # type: ignore[attr-defined]


def keys_of(session: Session, *, run_id: str, points: Points | None = None) -> list[str]:
    """The run's metric keys, by skipping along the primary key: one index lookup per key, not a scan of
    every point (a long run has millions)."""
    points = points or run_points(run_id)
    c = points.table.c
    keys: list[str] = []
    conn = session.connection()
    while True:
        query = sa_select(func.min(c.key)).where(*points.where())
        if keys:
            query = query.where(c.key > keys[-1])
        key = conn.execute(query).scalar()
        if key is None:
            return keys
        keys.append(key)


def _span(session: Session, points: Points, key: str, start: int | None, end: int | None) -> tuple[int, int] | None:
    """First and last stored step of one key within [start, end]: two index lookups."""
    c = points.table.c
    where: list[ColumnElement[bool]] = [*points.where(), c.key == key]
    if start is not None:
        where.append(c.step >= start)
    if end is not None:
        where.append(c.step <= end)
    conn = session.connection()
    lo = conn.execute(sa_select(func.min(c.step)).where(*where)).scalar()
    hi = conn.execute(sa_select(func.max(c.step)).where(*where)).scalar()
    return None if lo is None or hi is None else (int(lo), int(hi))


def refresh_rollups(session: Session, spans: dict[tuple[str, str], tuple[int, int]]) -> None:
    """Recompute the rollups of every bucket that steps [lo, hi] of (run, key) touch, at both widths: the fine
    ones from the stored points, then the coarse ones from the fine (call after storing the points, in the
    same transaction)."""
    if not spans:
        return
    conn = session.connection()  # Core rows: the ORM's row loading cost more than the query
    m = Metric.__table__.c  # type: ignore[attr-defined]
    r = MetricRollup.__table__.c  # type: ignore[attr-defined]
    points_q = (sa_select(m.step, m.value).where(m.run_id == bindparam("run_id"), m.key == bindparam("key"),
                                                 m.step >= bindparam("lo"), m.step < bindparam("hi"))
                .order_by(m.step))
    fine_q = (sa_select(r.bucket * ROLLUP, r.vmin, r.vmax, r.n, r.n_nan, r.last_step, r.last_value)
              .where(r.run_id == bindparam("run_id"), r.key == bindparam("key"), r.width == ROLLUP,
                     r.bucket >= bindparam("lo"), r.bucket < bindparam("hi")).order_by(r.bucket))
    fine: list[dict[str, object]] = []
    for (run_id, key), (lo, hi) in spans.items():
        first, last = max(0, lo) // ROLLUP, max(0, hi) // ROLLUP
        points = conn.execute(points_q, {"run_id": run_id, "key": key, "lo": first * ROLLUP,
                                         "hi": (last + 1) * ROLLUP}).all()
        fine += _rows(run_id, key, ROLLUP, _merge(_points(points), ROLLUP))
    _upsert_rollups(session, fine)
    coarse: list[dict[str, object]] = []
    ratio = COARSE // ROLLUP
    for (run_id, key), (lo, hi) in spans.items():
        first, last = max(0, lo) // COARSE, max(0, hi) // COARSE
        parts = conn.execute(fine_q, {"run_id": run_id, "key": key, "lo": first * ratio,
                                      "hi": (last + 1) * ratio}).all()
        coarse += _rows(run_id, key, COARSE, _merge(parts, COARSE))
    _upsert_rollups(session, coarse)


def _upsert_rollups(session: Session, rows: list[dict[str, object]]) -> None:
    bulk.upsert(session, MetricRollup.__table__, rows, ["run_id", "key", "width", "bucket"],  # type: ignore[attr-defined]
                ["vmin", "vmax", "n", "n_nan", "last_step", "last_value"])


def rebuild_rollups(session: Session, *, run_id: str) -> None:
    """All of a run's rollups from its points (after points were written other than by the ingest)."""
    points = run_points(run_id)
    for key in keys_of(session, run_id=run_id):
        span = _span(session, points, key, None, None)
        if span is not None:
            refresh_rollups(session, {(run_id, key): span})


# A "part" is (first step, min, max, count, NaN count, last step, last value) of a run of consecutive points:
# one point, a fine rollup, a coarse one. Merging parts in step order into buckets of `width` steps gives
# every level: points -> 64-step rollups -> 1024-step rollups -> the buckets a request asks for.
Part = tuple[int, float | None, float | None, int, int, int, float | None]


def _points(points: Sequence[Any]) -> Iterator[Part]:
    """(step, value) rows -> one-point parts; NaN (NULL) is left out of min and max, as SQL's min/max do."""
    for step, value in points:
        nan = value is None or math.isnan(value)
        finite = None if nan else value
        yield step, finite, finite, 1, int(nan), step, value


def _merge(parts: Iterable[Part], width: int, lo: int = 0) -> list[list[Any]]:
    """Parts in step order -> [bucket, min, max, count, NaN count, last step, last value] per bucket of
    `width` steps counted from `lo` (each part must fall whole into one bucket)."""
    out: list[list[Any]] = []
    current: list[Any] | None = None
    for first, vmin, vmax, n, n_nan, last_step, last_value in parts:
        bucket = (first - lo) // width
        if current is None or current[0] != bucket:
            current = [bucket, None, None, 0, 0, last_step, last_value]
            out.append(current)
        if vmin is not None and (current[1] is None or vmin < current[1]):
            current[1] = vmin
        if vmax is not None and (current[2] is None or vmax > current[2]):
            current[2] = vmax
        current[3] += n
        current[4] += n_nan
        current[5], current[6] = last_step, last_value
    return out


def _rows(run_id: str, key: str, width: int, merged: list[list[Any]]) -> list[dict[str, object]]:
    return [{"run_id": run_id, "key": key, "width": width, "bucket": b, "vmin": vmin, "vmax": vmax, "n": n,
             "n_nan": n_nan, "last_step": last_step, "last_value": last_value}
            for b, vmin, vmax, n, n_nan, last_step, last_value in merged]


def series(session: Session, *, run_id: str, keys: Sequence[str] | None, start: int | None, end: int | None,
           buckets: int | None, limit: int, points: Points | None = None) -> RunMetrics:
    """A run's curves (or, with `points`, a rolled-back branch's), in full or in `buckets`."""
    points = points or run_points(run_id)
    c = points.table.c
    keys = list(keys) if keys else keys_of(session, run_id=run_id, points=points)
    where: list[ColumnElement[bool]] = [*points.where(), c.key.in_(keys)]
    if start is not None:
        where.append(c.step >= start)
    if end is not None:
        where.append(c.step <= end)
    spans = [span for k in keys if (span := _span(session, points, k, start, end)) is not None]
    if not spans:
        return RunMetrics(run_id=run_id, buckets=buckets, bucket_width=None, start=start, end=end,
                          series=[MetricSeries(key=k, step=[], value=[]) for k in keys])
    lo = start if start is not None else min(a for a, _ in spans)
    hi = end if end is not None else max(b for _, b in spans)
    if buckets is None:
        return _full(session, run_id, keys, where, points, lo, hi, limit)
    width = max(1, math.ceil((hi - lo + 1) / buckets))
    if width >= ROLLUP and lo >= 0 and points.rollups:
        return _from_rollups(session, run_id, keys, lo, hi, width, buckets)
    bucket = (c.step - bindparam("lo", lo, type_=Integer)) // bindparam("w", width, type_=Integer)
    agg = (sa_select(c.key.label("key"), bucket.label("bucket"), func.min(c.value).label("vmin"),
                     func.max(c.value).label("vmax"), func.count().label("n"),
                     (func.count() - func.count(c.value)).label("n_nan"), func.max(c.step).label("last"))
           .where(*where).group_by(c.key, literal_column("bucket")).subquery())
    last = points.table.alias("last_point")
    rows = session.connection().execute(
        sa_select(agg.c.key, agg.c.last, last.c.value, agg.c.vmin, agg.c.vmax, agg.c.n, agg.c.n_nan)
        .join(last, and_(*points.where(last), last.c.key == agg.c.key, last.c.step == agg.c.last))
        .order_by(agg.c.key, agg.c.last)).all()
    out = {k: MetricSeries(key=k, step=[], value=[], min=[], max=[], count=[], nan=[]) for k in keys}
    for key, step, value, vmin, vmax, n, n_nan in rows:
        s = out[key]
        s.step.append(int(step))
        s.value.append(encode(value))
        s.min.append(encode(vmin))  # type: ignore[union-attr]
        s.max.append(encode(vmax))  # type: ignore[union-attr]
        s.count.append(int(n))  # type: ignore[union-attr]
        s.nan.append(int(n_nan))  # type: ignore[union-attr]
    return RunMetrics(run_id=run_id, buckets=buckets, bucket_width=width, start=lo, end=hi, series=list(out.values()))


def _from_rollups(session: Session, run_id: str, keys: list[str], lo: int, hi: int, width: int,
                  buckets: int) -> RunMetrics:
    # the coarse rollups when rounding up to them costs at most a fifth of the buckets asked for
    unit = COARSE if math.ceil(width / COARSE) * COARSE <= 1.25 * width else ROLLUP
    width = math.ceil(width / unit) * unit
    lo = lo // unit * unit
    hi = (hi // unit + 1) * unit - 1
    r = MetricRollup.__table__.c  # type: ignore[attr-defined]
    rows = session.connection().execute(
        sa_select(r.key, r.bucket * unit, r.vmin, r.vmax, r.n, r.n_nan, r.last_step, r.last_value)
        .where(r.run_id == run_id, r.key.in_(keys), r.width == unit, r.bucket >= lo // unit, r.bucket <= hi // unit)
        .order_by(r.key, r.bucket)).all()
    parts: dict[str, list[Part]] = {k: [] for k in keys}
    for key, *part in rows:
        parts[key].append(tuple(part))
    out = []
    for key in keys:
        merged = _merge(parts[key], width, lo)
        out.append(MetricSeries(
            key=key, step=[int(m[5]) for m in merged], value=[encode(m[6]) for m in merged],
            min=[encode(m[1]) for m in merged], max=[encode(m[2]) for m in merged],
            count=[int(m[3]) for m in merged], nan=[int(m[4]) for m in merged]))
    return RunMetrics(run_id=run_id, buckets=buckets, bucket_width=width, start=lo, end=hi, series=out)


def _full(session: Session, run_id: str, keys: list[str], where: list[ColumnElement[bool]], points: Points, lo: int,
          hi: int, limit: int) -> RunMetrics:
    c = points.table.c
    rows = session.connection().execute(sa_select(c.key, c.step, c.value).where(*where)
                                        .order_by(c.key, c.step).limit(limit + 1)).all()
    truncated = len(rows) > limit
    out = {k: MetricSeries(key=k, step=[], value=[]) for k in keys}
    for key, step, value in rows[:limit]:
        out[key].step.append(int(step))
        out[key].value.append(encode(value))
    return RunMetrics(run_id=run_id, buckets=None, bucket_width=None, start=lo, end=hi, truncated=truncated,
                      series=list(out.values()))


def csv_rows(session: Session, *, run_id: str, chunk: int = 50_000) -> Iterator[str]:
    """A wide CSV: one row per step, one column per key; empty where a key has no value at that step."""
    keys = keys_of(session, run_id=run_id)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", *(cell(k) for k in keys)])  # keys are whatever a worker sent: no formulas
    index = {k: i for i, k in enumerate(keys)}
    current: int | None = None
    row: list[object] = []
    after = -1
    while True:
        rows = list(session.exec(select(Metric.step, Metric.key, Metric.value)
                                 .where(Metric.run_id == run_id, col(Metric.step) > after)
                                 .order_by(col(Metric.step), col(Metric.key)).limit(chunk)).all())
        if not rows:
            break
        full = len(rows) == chunk
        if full and rows[0][0] != rows[-1][0]:  # whole steps only: the cut step is read again next time
            tail = rows[-1][0]
            rows = [r for r in rows if r[0] != tail]
        for step, key, value in rows:
            if step != current:
                if current is not None:
                    writer.writerow([current, *row])
                current, row = step, [""] * len(keys)
            v = encode(value)
            row[index[key]] = repr(v) if isinstance(v, float) else v
        after = rows[-1][0]
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if not full:
            break
    if current is not None:
        writer.writerow([current, *row])
    yield buf.getvalue()


def json_series(session: Session, *, run_id: str) -> dict[str, dict[str, list[int] | list[Value]]]:
    out: dict[str, dict[str, list[int] | list[Value]]] = {}
    for key, step, value in session.exec(select(Metric.key, Metric.step, Metric.value)
                                         .where(Metric.run_id == run_id).order_by(col(Metric.key), col(Metric.step))):
        s = out.setdefault(key, {"step": [], "value": []})
        s["step"].append(int(step))
        s["value"].append(encode(value))  # type: ignore[arg-type]
    return out
