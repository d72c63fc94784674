"""Event ingest: metric points per second from simulated workers through Redis to SQL, and the delay from
an event's emission to its arrival at an SSE client, against a naive baseline measured in the same run.

Set-up (all real, all on this machine): an embedded redis-server, a SQLite (WAL) database, the server
(uvicorn, with its ingest loop and SSE) as a subprocess, W worker processes each emitting `metrics` events
(K values each) for its own run through the workers' RedisStreamSink, as fast as they can; one SSE client
on run 0 records now - event.time for every event it receives.

Baseline: the naive ingestion of a tracker that writes each event as it comes: one INSERT per metric
point and a commit per event, into the same SQLite file, for the same events (in-process, no Redis).

    python bench/ingest.py                  # 4 workers x 10,000 events x 10 values = 400,000 points
    python bench/ingest.py --database-url postgresql+psycopg://root@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from _server import bench_server  # bench/_server.py: also puts the repository on sys.path


def _values(k: int, step: int) -> dict[str, float]:
    return {f"m{i}": 1.0 / (1 + step) + i for i in range(k)}


def _emit(redis_url: str, run_id: str, events: int, k: int, spool: str, rate: float) -> None:
    """One simulated worker: `events` metrics events through the workers' sink; rate events/s (0 = flat out)."""
    from mocov3_core.events import Emitter
    from worker.sink import RedisStreamSink

    sink = RedisStreamSink(redis_url, spool_dir=spool)
    em = Emitter(run_id, [sink])
    t0 = time.perf_counter()
    for step in range(events):
        if rate > 0:
            time.sleep(max(0.0, t0 + step / rate - time.perf_counter()))
        em.emit("metrics", step=step, values=_values(k, step))
    sink.close()


def naive_baseline(path: Path, events: int, k: int) -> float:
    """Points/s of one INSERT per point and a commit per event (SQLite WAL)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS naive (run TEXT, key TEXT, step INT, value REAL)")
    t0 = time.perf_counter()
    for step in range(events):
        for key, value in _values(k, step).items():
            con.execute("INSERT INTO naive VALUES (?, ?, ?, ?)", ("r", key, step, value))
        con.commit()
    elapsed = time.perf_counter() - t0
    con.close()
    return events * k / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--events", type=int, default=10_000, help="metrics events per worker")
    ap.add_argument("--values", type=int, default=10, help="metric values per event")
    ap.add_argument("--paced-rate", type=float, default=10_000, help="points/s of the latency phase (all workers)")
    ap.add_argument("--paced-seconds", type=float, default=10.0)
    ap.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mocolab-bench-ingest-"))
    db_url = args.database_url or f"sqlite:///{tmp / 'mocolab.db'}"
    total_points = args.workers * args.events * args.values

    with bench_server(tmp, db_url, appendonly=True, timeout=30) as srv:
        api = srv.api
        engine = sa.create_engine(db_url)

        def phase(events: int, rate: float, tag: str) -> tuple[float, int, list[float]]:
            """W workers emit `events` each; -> (seconds from first to last point stored, points, SSE delays)."""
            runs = [api.post("/runs", json={"kind": "pretrain", "preset": "fmnist_tiny", "queue": "bench-nobody",
                                            "name": f"bench {tag} {i}"}).json()["id"] for i in range(args.workers)]
            delays: list[float] = []
            ready = threading.Event()

            def listen() -> None:
                with httpx.stream("GET", f"{srv.url}/api/v1/runs/{runs[0]}/stream",
                                  headers={"Authorization": f"Bearer {srv.token}"}, timeout=None) as resp:
                    ready.set()
                    for line in resp.iter_lines():
                        if line.startswith("data:"):
                            event = json.loads(line[5:])
                            if event.get("type") == "metrics":
                                delays.append(time.time() - float(event["time"]))
                                if len(delays) >= events:
                                    return

            listener = threading.Thread(target=listen, daemon=True)
            listener.start()
            ready.wait(10)
            time.sleep(0.5)
            with engine.connect() as con:
                before = con.execute(sa.text("SELECT count(*) FROM metrics")).scalar_one()
            goal = before + args.workers * events * args.values
            procs = [mp.get_context("spawn").Process(target=_emit, args=(srv.redis_url, r, events, args.values,
                                                                          str(tmp / f"spool-{tag}{i}"), rate))
                     for i, r in enumerate(runs)]
            for p in procs:
                p.start()
            stored, first, last = before, None, None
            deadline = time.monotonic() + 600
            while stored < goal and time.monotonic() < deadline:
                time.sleep(0.05)
                with engine.connect() as con:
                    stored = con.execute(sa.text("SELECT count(*) FROM metrics")).scalar_one()
                if first is None and stored > before:
                    first = (time.perf_counter(), stored)
            last = (time.perf_counter(), stored)
            for p in procs:
                p.join()
            listener.join(timeout=10)
            assert first is not None, "nothing was ingested"
            return last[0] - first[0], last[1] - first[1], delays

        elapsed, stored, _ = phase(args.events, 0.0, "burst")
        paced_events = int(args.paced_seconds * args.paced_rate / args.workers / args.values)
        _, _, delays = phase(paced_events, args.paced_rate / args.workers / args.values, "paced")
        engine.dispose()
    rate = stored / elapsed
    base = naive_baseline(tmp / "naive.db", min(args.events, 2000), args.values)
    p50 = statistics.median(delays) if delays else float("nan")
    p95 = statistics.quantiles(delays, n=20)[-1] if len(delays) >= 20 else float("nan")
    what = f"{args.workers} workers x {args.events} events x {args.values} values, {db_url.split(':')[0]}"
    print(f"bench/ingest.py: {what}, {os.cpu_count()} cores")
    print(f"  burst: {total_points:,} points emitted flat out; from the first to the last point stored: "
          f"{stored:,} points in {elapsed:.2f} s")
    print(f"  mocolab ingest (Redis stream -> SQL)  : {rate:12,.0f} points/s sustained")
    print(f"  naive (INSERT per point, commit/event): {base:12,.0f} points/s")
    print(f"  ratio                                 : {rate / base:12.2f}x   (target: 50,000 points/s)")
    print(f"  emission -> SSE client at {args.paced_rate:,.0f} points/s paced load: p50 {p50 * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms over {len(delays)} events (target p95 < 1 s)")
    if args.json:
        out: dict[str, Any] = {"setup": what, "points": stored, "seconds": elapsed, "points_per_s": rate,
                               "naive_points_per_s": base, "sse_p50_s": p50, "sse_p95_s": p95}
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
