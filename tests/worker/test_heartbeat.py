"""The heartbeat on a real Redis: payload fields (CPU-only here: no GPUs), the worker hash and its TTL, the
heartbeat events, the lock refresh of the run a live process executes, and beats through an outage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import mocov3_core
from server.embedded_redis import EmbeddedRedis
from worker import Heartbeat, RunLock, Settings, Telemetry, WorkerDir, protocol
from worker._redis import Redis, connect

from worker_helpers import stream_events, wait_for


@pytest.fixture
def cpu_only() -> None:
    if Telemetry().has_nvml:
        pytest.skip("this machine has NVML: the CPU-only payload is not what it reports")


def test_heartbeat_payload_hash_ttl_and_event(settings: Settings, r: Redis, cpu_only: None) -> None:
    hb = Heartbeat(settings, ttl=30)
    payload = hb.beat()
    hb.beat()
    assert payload is not None
    assert payload["worker_id"] == settings.worker_id and payload["queue"] == settings.queue
    assert payload["version"] == mocov3_core.__version__
    assert payload["host"] and payload["pid"] == os.getpid()
    assert payload["state"] == "idle" and payload["run_id"] is None and payload["step"] is None
    assert payload["gpus"] == [] and payload["gpu"] == "none"
    assert 0 <= payload["cpu_percent"] <= 100 * (psutil.cpu_count() or 1)
    assert 0 < payload["memory_used"] < payload["memory_total"]
    key = protocol.worker_key(settings.worker_id)
    assert json.loads(r.hget(key, "hb") or "{}")["worker_id"] == settings.worker_id
    assert 0 < r.pttl(key) <= 30_000
    hb.sink.flush(5)
    beats = stream_events(r, protocol.worker_run_id(settings.worker_id))
    assert [e["type"] for e in beats] == ["heartbeat", "heartbeat"]
    assert beats[0]["seq"] < beats[1]["seq"]
    hb.stop()
    assert r.exists(key) == 0  # a clean stop removes the worker at once
    last = stream_events(r, protocol.worker_run_id(settings.worker_id))[-1]
    assert last["payload"]["state"] == "stopped"


def test_heartbeat_seq_keeps_rising_across_restarts(settings: Settings, r: Redis) -> None:
    first = Heartbeat(settings)
    first.beat()
    first.stop()
    second = Heartbeat(settings)  # the same worker id, restarted
    second.beat()
    second.stop()
    seqs = [e["seq"] for e in stream_events(r, protocol.worker_run_id(settings.worker_id))]
    assert len(seqs) == 4 and seqs == sorted(set(seqs))


def test_heartbeat_reports_and_relocks_the_run_of_a_live_process(settings: Settings, r: Redis, run_id: str) -> None:
    workdir = WorkerDir(settings.spool_dir, settings.worker_id)
    workdir.write_progress(run_id, 41)
    lock = RunLock(r, run_id, settings.worker_id, ttl=2)
    assert lock.acquire()
    hb = Heartbeat(settings)
    payload = hb.beat()
    assert payload is not None
    assert (payload["state"], payload["run_id"], payload["step"]) == ("busy", run_id, 41)
    assert r.pttl(lock.key) > 2000  # refreshed to the full LOCK_TTL_S
    hb.stop()


def test_heartbeat_ignores_runs_of_dead_processes(settings: Settings, r: Redis, run_id: str) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    workdir = WorkerDir(settings.spool_dir, settings.worker_id)
    workdir.dir.mkdir(parents=True)
    workdir.progress_path(dead_pid).write_text(json.dumps({"run_id": run_id, "step": 3, "pid": dead_pid}))
    lock = RunLock(r, run_id, settings.worker_id, ttl=2)
    assert lock.acquire()
    hb = Heartbeat(settings)
    payload = hb.beat()
    assert payload is not None and payload["run_id"] is None
    assert r.pttl(lock.key) <= 2000  # a SIGKILLed run's lock is left to expire
    assert not workdir.progress_path(dead_pid).exists()
    hb.stop()


def test_heartbeat_survives_a_redis_outage(tmp_path: Path, own_redis: EmbeddedRedis) -> None:
    settings = Settings(redis_url=own_redis.url, storage=tmp_path / "s", worker_id="hb-outage",
                        spool_dir=tmp_path / "spool")
    hb = Heartbeat(settings, interval=0.05).start()
    client = connect(own_redis.url)
    assert wait_for(lambda: client.exists(protocol.worker_key("hb-outage")), timeout=10)
    own_redis.stop()
    beats = hb.beats
    assert wait_for(lambda: hb.beats >= beats + 3, timeout=10)  # the thread keeps beating
    own_redis.start()
    assert wait_for(lambda: client.exists(protocol.worker_key("hb-outage")), timeout=10)
    hb.stop()
    seqs = [e["seq"] for e in stream_events(client, protocol.worker_run_id("hb-outage"))]
    assert len(seqs) == hb.beats and seqs == sorted(set(seqs))  # beats during the outage came from the spool
