"""Run page: time from opening it to its first drawn chart, for a run with 10^6 stored points per metric
against the same page for a run with 10^3 points, in one run of this script.

Set-up (all real, all on this machine): an embedded redis-server, a SQLite (WAL) database, the server
(uvicorn, serving the built web/dist) as a subprocess; two runs created through the API on a queue no worker
reads; their metrics written straight into `metrics` with the DB-API (executemany) under the keys the engine
emits (mocov3_core/train/loop.py), a smooth curve with a few one-step spikes each, and the run's rollups
rebuilt with the server's own `rebuild_rollups` (what the ingest keeps up to date as points arrive).

Measurement: Debian's headless Chromium (Playwright), signed in through the login URL; after one warm-up
per run, N times: a fresh page, `page.goto(run page)`, until the first chart container has
`data-drawn="1"` (set by the UI once uPlot has drawn data). Targets (issue 4): the 10^6-point run under
1 s, and within 3x of the 10^3-point run.

    python bench/ui.py                  # 10^6 and 10^3 steps x 6 keys, 10 openings each
    python bench/ui.py --big 100000 --repeat 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _server import ROOT, bench_server  # bench/_server.py: also puts the repository on sys.path

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
# what the engine emits every step (loop.py METRIC_KEYS, lr, momentum) and the kNN monitor's accuracy: the
# run page draws them as its usual charts (loss, lr, momentum, patch projection vs last block, kNN)
KEYS = ("loss", "lr", "momentum", "grad_norm/patch_proj", "grad_norm/last_block", "knn_top1")
DRAWN = '[data-testid^="chart-"][data-drawn="1"]'
CHUNK = 200_000


def curve(key: str, steps: int, rng: random.Random) -> list[float]:
    """A plausible training curve over `steps`, with one-step spikes at 5 random steps."""
    out: list[float] = []
    warm = max(1, steps // 25)
    for s in range(steps):
        t = s / max(1, steps - 1)
        if key == "loss":
            v = 3.0 + 6.0 * math.exp(-8 * t) + 0.05 * rng.random()
        elif key == "lr":
            v = 1.5e-4 * (s / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
        elif key == "momentum":
            v = 1 - 0.01 * 0.5 * (1 + math.cos(math.pi * t))
        elif key == "knn_top1":
            v = 10 + 70 * (1 - math.exp(-5 * t)) + rng.random()
        else:
            v = 0.5 + math.exp(-3 * t) + 0.1 * rng.random()
        out.append(v)
    for s in rng.sample(range(steps), k=min(5, steps)):
        out[s] *= 20  # a spike the downsampled view must keep
    return out


def rows(run_id: str, key: str, values: list[float]) -> Iterator[list[tuple[str, str, int, float]]]:
    for lo in range(0, len(values), CHUNK):
        yield [(run_id, key, s, values[s]) for s in range(lo, min(lo + CHUNK, len(values)))]


def seed(engine: sa.Engine, run_id: str, steps: int, rng: random.Random) -> float:
    """Write `steps` points per key with the DB-API, then the run's rollups; -> seconds taken."""
    from sqlmodel import Session

    from server.runs.metrics import rebuild_rollups

    t0 = time.perf_counter()
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for key in KEYS:
            for chunk in rows(run_id, key, curve(key, steps, rng)):
                cur.executemany(f"INSERT INTO metrics (run_id, key, step, value) VALUES ({mark}, {mark}, {mark}, "
                                f"{mark})", chunk)
            raw.commit()
        cur.close()
    finally:
        raw.close()
    with Session(engine) as session:
        rebuild_rollups(session, run_id=run_id)
        session.commit()
    return time.perf_counter() - t0


def open_times(page_factory: Any, url: str, repeat: int) -> tuple[list[float], list[float]]:
    """-> (seconds from goto to the first drawn chart, seconds of the page's metrics request), per opening."""
    times: list[float] = []
    fetches: list[float] = []
    for i in range(repeat + 1):  # the first is a warm-up
        page = page_factory()
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_selector(DRAWN, timeout=60_000)
        elapsed = time.perf_counter() - t0
        fetch = page.evaluate("""() => performance.getEntriesByType('resource')
            .filter((e) => /\\/metrics\\?/.test(e.name)).map((e) => e.duration / 1000)[0] ?? null""")
        page.close()
        if i > 0:
            times.append(elapsed)
            if fetch is not None:
                fetches.append(float(fetch))
    return times, fetches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", type=int, default=1_000_000, help="steps per key of the big run")
    ap.add_argument("--small", type=int, default=1_000, help="steps per key of the small run")
    ap.add_argument("--repeat", type=int, default=10, help="openings of each page (after one warm-up)")
    ap.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if not (ROOT / "web" / "dist" / "index.html").is_file():
        sys.exit("bench/ui.py: web/dist is not built (cd web && npm ci && npm run build)")
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"bench/ui.py: {CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="mocolab-bench-ui-"))
    db_url = args.database_url or f"sqlite:///{tmp / 'mocolab.db'}"
    result: dict[str, Any] = {}
    with bench_server(tmp, db_url) as srv:
        base, token, api = srv.url, srv.token, srv.api
        engine = sa.create_engine(db_url)
        rng = random.Random(0)
        runs: dict[str, tuple[str, int]] = {}
        for name, steps in (("big", args.big), ("small", args.small)):
            resp = api.post("/runs", json={"kind": "pretrain", "preset": "fmnist_tiny", "queue": "bench-nobody",
                                           "name": f"bench ui: {steps:,} steps"})
            resp.raise_for_status()
            run_id = resp.json()["id"]
            took = seed(engine, run_id, steps, rng)
            print(f"seeded {name} run {run_id}: {steps:,} steps x {len(KEYS)} keys in {took:.1f} s", flush=True)
            runs[name] = (run_id, steps)
        engine.dispose()

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
            ctx = browser.new_context(viewport={"width": 1366, "height": 768})
            login = ctx.new_page()
            login.goto(f"{base}/login?token={token}")
            login.wait_for_selector('[data-testid="whoami"]', timeout=30_000)
            login.close()
            for name, (run_id, steps) in runs.items():
                times, fetches = open_times(ctx.new_page, f"{base}/runs/{run_id}", args.repeat)
                result[name] = {"run_id": run_id, "steps_per_key": steps, "keys": len(KEYS), "open_s": times,
                                "p50_s": statistics.median(times), "max_s": max(times),
                                "metrics_request_p50_s": statistics.median(fetches) if fetches else None}
            browser.close()

    big, small = result["big"], result["small"]
    ratio = big["p50_s"] / small["p50_s"]
    print(f"bench/ui.py: run page, goto -> first drawn chart; {args.repeat} openings each after a warm-up; "
          f"{len(KEYS)} keys; {db_url.split(':')[0]}; headless Chromium 1366x768; {os.cpu_count()} cores")
    for label, r in (("big  ", big), ("small", small)):
        fetch = r["metrics_request_p50_s"]
        fetch_txt = f"   (its /metrics request: p50 {fetch * 1000:.0f} ms)" if fetch is not None else ""
        print(f"  {label} run, {r['steps_per_key']:>9,} points/key: p50 {r['p50_s'] * 1000:5.0f} ms   "
              f"max {r['max_s'] * 1000:5.0f} ms{fetch_txt}")
    print(f"  ratio big/small (p50)              : {ratio:5.2f}x")
    ok_time, ok_ratio = big["p50_s"] < 1.0, ratio <= 3.0
    print(f"  targets: big < 1 s: {'met' if ok_time else 'MISSED'}; within 3x of small: "
          f"{'met' if ok_ratio else 'MISSED'}")
    if args.json:
        out = {"setup": {"keys": list(KEYS), "repeat": args.repeat, "database": db_url.split(":")[0],
                         "cores": os.cpu_count()}, "big": big, "small": small, "ratio_p50": ratio,
               "targets_met": ok_time and ok_ratio}
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
