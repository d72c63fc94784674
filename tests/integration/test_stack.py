"""The whole service on this machine, as `mocolab up` runs it: an embedded redis-server, the server
(uvicorn, ingest, watchdog) and real worker processes training real runs on Fashion-MNIST; SQLite, and
PostgreSQL where TEST_DATABASE_URL points at one. Faults are injected for real: SIGKILL of a worker,
Redis stopped and restarted, the server stopped and restarted. Nothing may be lost or duplicated."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mocolab.client import Client
from mocolab.stack import Stack
from server.embedded_redis import free_port

from stack_fixture import running_stack, wait_for

pytestmark = [pytest.mark.fmnist, pytest.mark.slow]

# a lost run is re-queued by the watchdog (it may be seen as lost for an instant): not an end
TERMINAL = {"succeeded", "failed", "cancelled"}
# 128 steps of the smallest ViT: long enough to hurt mid-run, short enough for CI
SPEC = {"kind": "pretrain", "preset": "fmnist_tiny", "name": "integration",
        "overrides": {"data.limit": 2048, "optim.epochs": 4, "monitor.knn_every": 0, "train.ckpt_every": 16,
                      "train.log_every": 2}}


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as con:
        con.execute(sa.text("DROP SCHEMA public CASCADE"))
        con.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def stack(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    if database_url.startswith("postgresql"):
        _reset_postgres(database_url)
    # a killed worker's run is re-queued after 8 s of silence
    with running_stack(tmp_path, monkeypatch, database_url, LOST_AFTER_S="8") as s:
        yield s


def client(stack: Stack) -> Client:
    return Client(stack.url, stack.token)


def step_of(c: Client, run_id: str) -> int:
    return int(c.run(run_id).get("step") or 0)


def all_events(c: Client, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = -1
    while True:
        page = c.events(run_id, after_seq=after)
        if not page:
            return out
        out += page
        after = page[-1]["seq"]


def assert_complete(c: Client, run_id: str) -> dict[str, Any]:
    """Succeeded; every event stored once, in order, no gap in seq; one loss point per step, no step missing."""
    run = wait_for(lambda: (r := c.run(run_id))["status"] in TERMINAL and r, "the run to end")
    assert run["status"] == "succeeded", run
    events = all_events(c, run_id)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(len(seqs))), "gap or duplicate in seq"
    loss = c._call("GET", f"/runs/{run_id}/metrics", params={"keys": "loss"})["series"][0]
    total = run["total_steps"]
    assert loss["step"] == list(range(total)), "a step is missing or doubled in the loss curve"
    return run


def test_run_goes_queued_running_succeeded_with_every_event_once(stack: Stack) -> None:
    c = client(stack)
    run = c.submit(SPEC)
    assert run["status"] == "queued"
    wait_for(lambda: c.run(run["id"])["status"] == "running", "running")
    assert_complete(c, run["id"])


def test_sse_delivers_live_events_and_resumes_after_a_disconnect(stack: Stack) -> None:
    c = client(stack)
    run = c.submit(SPEC)
    got: list[int] = []
    for event in c.stream(run["id"]):
        got.append(event["seq"])
        if len(got) == 20:
            break  # a forced disconnect
    for event in c.stream(run["id"], last_event_id=got[-1]):
        got.append(event["seq"])
        if event["type"] == "status" and event["payload"].get("final"):
            break
    assert got == list(range(len(got))), "the resumed stream skipped or repeated events"
    stored = [e["seq"] for e in all_events(c, run["id"])]
    assert got == stored[: len(got)]


def test_cancel_ends_the_run_with_a_checkpoint(stack: Stack) -> None:
    c = client(stack)
    run = c.submit(SPEC)
    wait_for(lambda: step_of(c, run["id"]) >= 20, "step 20")
    t0 = time.monotonic()
    c.cancel(run["id"])
    final = wait_for(lambda: (r := c.run(run["id"]))["status"] in TERMINAL and r, "cancelled", timeout=30)
    assert final["status"] == "cancelled" and time.monotonic() - t0 < 15
    assert c._call("GET", f"/runs/{run['id']}/checkpoints"), "no checkpoint kept"


def test_worker_killed_mid_run_resumes_on_a_new_worker(stack: Stack) -> None:
    c = client(stack)
    run = c.submit(SPEC)
    wait_for(lambda: step_of(c, run["id"]) >= 40, "step 40")
    stack.kill("worker", signal.SIGKILL)
    stack.start_worker("worker2")
    final = assert_complete(c, run["id"])
    assert final["id"] == run["id"] and final["attempt"] >= 2


def test_redis_stopped_and_restarted_mid_run_loses_nothing(stack: Stack) -> None:
    c = client(stack)
    run = c.submit(SPEC)
    wait_for(lambda: step_of(c, run["id"]) >= 30, "step 30")
    assert stack.redis is not None
    stack.redis.stop()
    time.sleep(4)
    stack.redis.start()
    assert_complete(c, run["id"])


def test_server_stopped_and_restarted_mid_run_catches_up(stack: Stack) -> None:
    c = client(stack)
    run = c.submit(SPEC)
    wait_for(lambda: step_of(c, run["id"]) >= 30, "step 30")
    stack.kill("server", signal.SIGTERM)
    time.sleep(5)  # the worker goes on; its events wait in the stream
    stack.start_server()
    assert_complete(c, run["id"])


def mocolab(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("mocolab")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_cli_submit_runs_show_logs_and_bad_input(stack: Stack) -> None:
    env = {**os.environ, "MOCOLAB_URL": stack.url, "MOCOLAB_TOKEN": stack.token or ""}
    out = mocolab("submit", "--preset", "fmnist_tiny", "--set", "train.max_steps=6", "--set", "data.limit=256",
                  "--set", "monitor.knn_every=0", "--tag", "cli", "--wait", env=env)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[0]
    assert "succeeded" in out.stdout
    assert "6/6" in out.stderr and "loss " in out.stderr  # the progress bar, fed by the run's events
    listed = mocolab("runs", "--tag", "cli", env=env)
    assert run_id in listed.stdout and "(1 runs)" in listed.stdout
    shown = json.loads(mocolab("show", run_id, env=env).stdout)
    assert shown["status"] == "succeeded" and shown["spec"]["optim"]["batch_size"] == 64
    logs = mocolab("logs", run_id, env=env).stdout
    assert "step 5:" in logs
    bad = mocolab("submit", "--preset", "fmnist_tiny", "--set", "optim.base_lr=-1", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "optim.base_lr" in bad.stderr
    unreachable = mocolab("runs", env={**env, "MOCOLAB_URL": "http://127.0.0.1:9"})
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr


def test_demo_exit_when_done_prints_results(tmp_path: Path) -> None:
    env = {**os.environ, "MOCOLAB_CONFIG": str(tmp_path / "client.json")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    out = mocolab("demo", "--exit-when-done", "--state", str(tmp_path / "state"), "--port", str(free_port()),
                  "--preset", "fmnist_tiny", "--set", "train.max_steps=20", "--set", "monitor.knn_every=0", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "/login?code=" in out.stdout
    assert "knn" in out.stdout and "linear" in out.stdout and "%" in out.stdout
    # a progress bar per run on stderr meanwhile: the pretraining's last step, then each evaluation's
    assert "20/20" in out.stderr and "img/s" in out.stderr, out.stderr
    assert "knn evaluation" in out.stderr and "linear evaluation" in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_up_stops_every_part_on_sigterm_or_sigint(tmp_path: Path, sig: int) -> None:
    port = free_port()
    env = {**os.environ, "MOCOLAB_CONFIG": str(tmp_path / "client.json")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    # started the way a shell starts a background job: SIGINT ignored, which the stack must undo
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mocolab"), "up", "--port", str(port), "--state",
                             str(tmp_path / "state")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    children: list[str] = []
    try:
        c = Client(f"http://127.0.0.1:{port}", None)
        assert proc.stdout is not None
        for line in proc.stdout:  # the banner comes once every part has started
            if line.startswith(b"mocolab is up"):
                break
        assert _answers(c)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 3  # redis-server, the server and the worker
        proc.send_signal(sig)
        assert proc.wait(timeout=90) == 0
        assert not _answers(c)
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        for pid in [proc.pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _answers(c: Client) -> bool:
    try:
        c.http.get("/health", timeout=1.0)
        return True
    except Exception:
        return False
