"""The server as the benchmarks run it: an embedded redis-server, the database at `db_url`, the local admin's
token, and uvicorn as a subprocess (its ingest loop and SSE included), stopped with everything else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.embedded_redis import EmbeddedRedis, free_port  # noqa: E402


@dataclass
class BenchServer:
    url: str  # http://127.0.0.1:<port>
    token: str
    redis_url: str
    api: httpx.Client  # /api/v1 with the token


@contextmanager
def bench_server(tmp: Path, db_url: str, *, appendonly: bool = False, timeout: float = 60.0,
                 ready_s: float = 60.0) -> Iterator[BenchServer]:
    from server.admin import admin_session, ensure_local_admin
    from server.core.config import Settings

    redis = EmbeddedRedis(tmp / "redis", appendonly=appendonly).start()
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis.url, "DATABASE_URL": db_url, "MOCOLAB_STATE": str(tmp),
           "MOCOLAB_HOST": "127.0.0.1"}
    with admin_session(Settings(database_url=db_url, state_dir=tmp)) as session:
        token = ensure_local_admin(session)
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "server.main:create_app", "--factory", "--host",
                               "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    try:
        deadline = time.monotonic() + ready_s
        while True:
            try:
                if api.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {url}")
            time.sleep(0.1)
        yield BenchServer(url, token, redis.url, api)
    finally:
        api.close()
        server.terminate()
        server.wait(20)
        redis.stop()
