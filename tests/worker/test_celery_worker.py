"""A real worker process (`python -m worker --queue test-<random>`) taking runs from a real Redis broker:
a run sent with `send_task` ends succeeded; revoke(terminate=True) ends a run cancelled; a warm shutdown
sends the running run back to the queue, and the next worker resumes it."""

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from mocov3_core import build_spec
from worker import protocol
from worker._redis import Redis, connect
from worker.celery_app import make_app

from worker_helpers import stream_events, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.fmnist


class WorkerProcess:
    def __init__(self, redis_url: str, queue: str, tmp: Path) -> None:
        """A worker on `queue` with its storage in tmp/storage (shared by the workers of a test) and its own spool."""
        self.worker_id = f"w-{uuid.uuid4().hex[:6]}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = (tmp / f"{self.worker_id}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "--queue", queue, "--redis-url", redis_url, "--storage",
             str(tmp / "storage"), "--spool-dir", str(tmp / f"spool-{self.worker_id}"), "--worker-id", self.worker_id,
             "--loglevel", "INFO"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def queue() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def producer(redis_url: str) -> Celery:
    return make_app(redis_url)


@pytest.fixture(scope="module")
def celery_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("celery")


@pytest.fixture(scope="module")
def worker_proc(redis_url: str, queue: str, celery_tmp: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(redis_url, queue, celery_tmp)
    client = connect(redis_url)
    assert wait_for(lambda: client.exists(protocol.worker_key(proc.worker_id)), timeout=60), "no heartbeat"
    yield proc
    proc.stop()


def spec(max_steps: int) -> dict[str, Any]:
    return build_spec("pretrain", "fmnist_tiny", {"train.max_steps": max_steps, "data.limit": 256, "optim.epochs": 100,
                                                  "monitor.knn_every": 0}).model_dump()


def final_status(r: Redis, run_id: str) -> dict[str, Any] | None:
    for event in reversed(stream_events(r, run_id)):
        if event["type"] == "status" and event["payload"].get("final"):
            return dict(event["payload"])
    return None


def test_a_sent_run_is_executed_to_succeeded(worker_proc: WorkerProcess, producer: Celery, queue: str, r: Redis
                                             ) -> None:
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    producer.send_task(protocol.TASK_RUN, args=[run_id, "pretrain", spec(3), 1], queue=queue)
    final = wait_for(lambda: final_status(r, run_id), timeout=180, every=0.5)
    assert final is not None and final["state"] == "succeeded", final
    assert final["worker_id"] == worker_proc.worker_id
    seqs = [e["seq"] for e in stream_events(r, run_id)]
    assert seqs == list(range(len(seqs)))
    hb = r.hget(protocol.worker_key(worker_proc.worker_id), "hb")
    assert hb is not None and f'"queue": "{queue}"' in hb


def test_revoke_with_terminate_ends_the_run_cancelled(worker_proc: WorkerProcess, producer: Celery, queue: str,
                                                      r: Redis) -> None:
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    task = producer.send_task(protocol.TASK_RUN, args=[run_id, "pretrain", spec(200), 1], queue=queue)
    assert wait_for(lambda: any(e["type"] == "metrics" for e in stream_events(r, run_id)), timeout=180, every=0.2)
    producer.control.revoke(task.id, terminate=True, signal="SIGTERM")
    final = wait_for(lambda: final_status(r, run_id), timeout=120, every=0.5)
    assert final is not None and final["state"] == "cancelled", final
    assert final["step"] < 200 and Path(final["checkpoint"]).is_file()


def test_a_warm_shutdown_requeues_the_run_and_the_next_worker_resumes_it(
        worker_proc: WorkerProcess, producer: Celery, queue: str, r: Redis, redis_url: str, celery_tmp: Path) -> None:
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    producer.send_task(protocol.TASK_RUN, args=[run_id, "pretrain", spec(60), 1], queue=queue)
    assert wait_for(lambda: any(e["type"] == "metrics" for e in stream_events(r, run_id)), timeout=180, every=0.2)
    assert worker_proc.stop() == 0
    interrupted = final_status(r, run_id)
    assert interrupted is not None and interrupted["state"] == "queued", interrupted
    assert r.exists(protocol.worker_key(worker_proc.worker_id)) == 0  # its heartbeat key went with it
    assert r.llen(queue) == 1  # the message is back in the queue

    nxt = WorkerProcess(redis_url, queue, celery_tmp)
    try:
        final = wait_for(lambda: (s := final_status(r, run_id)) and s["state"] != "queued" and s, timeout=180,
                         every=0.5)
    finally:
        nxt.stop()
    assert final and final["state"] == "succeeded" and final["worker_id"] == nxt.worker_id, final
    events = stream_events(r, run_id)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert any(e["type"] == "log" and f"at step {interrupted['step']}" in e["payload"]["message"] for e in events)
    # resumed from the checkpoint where the first worker stopped: one curve, no step twice, none missing
    assert [e["payload"]["step"] for e in events if e["type"] == "metrics"] == list(range(60))
