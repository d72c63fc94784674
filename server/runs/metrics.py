"""Metric series at full resolution or downsampled in SQL, and exports.

Downsampling cuts [start, end] into N buckets of equal step width (integer division of the step) and keeps
each bucket's min, max, count and last point, so a single-step spike survives any zoom level. The
bucket edges are shared by every key, so series drawn together line up.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence

from sqlalchemy import ColumnElement, Integer, and_, bindparam, func, literal_column
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from server.models import Metric
from server.runs.schemas import MetricSeries, RunMetrics, Value


def encode(value: float | None) -> Value:
    """NULL is NaN (SQLite stores NaN as NULL); JSON carries non-finite numbers as strings."""
    if value is None or math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def keys_of(session: Session, *, run_id: str) -> list[str]:
    return list(session.exec(select(Metric.key).where(Metric.run_id == run_id).distinct().order_by(col(Metric.key))))


def series(session: Session, *, run_id: str, keys: Sequence[str] | None, start: int | None, end: int | None,
           buckets: int | None, limit: int) -> RunMetrics:
    keys = list(keys) if keys else keys_of(session, run_id=run_id)
    where: list[ColumnElement[bool]] = [col(Metric.run_id) == run_id, col(Metric.key).in_(keys)]
    if start is not None:
        where.append(col(Metric.step) >= start)
    if end is not None:
        where.append(col(Metric.step) <= end)
    lo, hi = session.exec(select(func.min(Metric.step), func.max(Metric.step)).where(*where)).one()
    if lo is None or hi is None:
        return RunMetrics(run_id=run_id, buckets=buckets, bucket_width=None, start=start, end=end,
                          series=[MetricSeries(key=k, step=[], value=[]) for k in keys])
    lo = start if start is not None else int(lo)
    hi = end if end is not None else int(hi)
    if buckets is None:
        return _full(session, run_id, keys, where, lo, hi, limit)
    width = max(1, math.ceil((hi - lo + 1) / buckets))
    bucket = (col(Metric.step) - bindparam("lo", lo, type_=Integer)) // bindparam("w", width, type_=Integer)
    agg = (sa_select(col(Metric.key).label("key"), bucket.label("bucket"), func.min(Metric.value).label("vmin"),
                  func.max(Metric.value).label("vmax"), func.count().label("n"), func.max(Metric.step).label("last"))
           .where(*where).group_by(col(Metric.key), literal_column("bucket")).subquery())
    last = Metric.__table__.alias("last_point")  # type: ignore[attr-defined]
    rows = session.connection().execute(
        sa_select(agg.c.key, agg.c.last, last.c.value, agg.c.vmin, agg.c.vmax, agg.c.n)
        .join(last, and_(last.c.run_id == run_id, last.c.key == agg.c.key, last.c.step == agg.c.last))
        .order_by(agg.c.key, agg.c.last)).all()
    out = {k: MetricSeries(key=k, step=[], value=[], min=[], max=[], count=[]) for k in keys}
    for key, step, value, vmin, vmax, n in rows:
        s = out[key]
        s.step.append(int(step))
        s.value.append(encode(value))
        s.min.append(encode(vmin))  # type: ignore[union-attr]
        s.max.append(encode(vmax))  # type: ignore[union-attr]
        s.count.append(int(n))  # type: ignore[union-attr]
    return RunMetrics(run_id=run_id, buckets=buckets, bucket_width=width, start=lo, end=hi, series=list(out.values()))


def _full(session: Session, run_id: str, keys: list[str], where: list[ColumnElement[bool]], lo: int, hi: int,
          limit: int) -> RunMetrics:
    rows = session.exec(select(Metric.key, Metric.step, Metric.value).where(*where)
                        .order_by(col(Metric.key), col(Metric.step)).limit(limit + 1)).all()
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
    writer.writerow(["step", *keys])
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
