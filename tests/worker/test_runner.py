"""execute_run end to end on a real Redis and the real engine (fmnist_tiny, a few steps on the CPU): events in
seq order without a gap, cancel, resume with continuing seq, the run lock, bad specs and engine errors."""

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mocov3_core import build_spec
from worker import RunLock, Settings, execute_run, last_seq, protocol
from worker._redis import Redis

from worker_helpers import metrics_event, stream_events, wait_for


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    base = {"train.max_steps": 4, "data.limit": 256, "monitor.knn_every": 0}
    return build_spec("pretrain", "fmnist_tiny", {**base, **overrides}).model_dump()


def worker_status(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker's own status events (they carry worker_id), payloads only."""
    return [e["payload"] for e in events if e["type"] == "status" and "worker_id" in e["payload"]]


def assert_gapless(events: list[dict[str, Any]], start: int = 0) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(start, start + len(seqs))), f"seqs out of order, repeated or missing: {seqs}"


@pytest.mark.fmnist
def test_pretrain_run_succeeds_with_every_event_in_seq_order(settings: Settings, r: Redis, run_id: str) -> None:
    assert execute_run(run_id, "pretrain", tiny_spec(), 1, settings) == "succeeded"
    events = stream_events(r, run_id)
    assert_gapless(events)
    statuses = worker_status(events)
    assert statuses[0]["state"] == "running" and not statuses[0]["final"]
    final = events[-1]
    assert final["type"] == "status" and final["payload"]["final"] is True
    assert {k: final["payload"][k] for k in ("state", "worker_id", "attempt", "message", "step")} == {
        "state": "succeeded", "worker_id": settings.worker_id, "attempt": 1, "message": "finished at step 4", "step": 4}
    assert [e["payload"]["step"] for e in events if e["type"] == "metrics"] == [0, 1, 2, 3]
    assert Path(final["payload"]["checkpoint"]).is_file()
    assert last_seq(r, run_id) == final["seq"]
    assert RunLock(r, run_id, settings.worker_id).holder() is None  # released


@pytest.mark.fmnist
def test_cancel_stops_at_a_checkpoint_and_a_restart_resumes_with_seq_continuing(settings: Settings, r: Redis,
                                                                               run_id: str) -> None:
    spec = tiny_spec(**{"train.max_steps": 200, "optim.epochs": 100})  # far more than it runs before the cancel
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(execute_run(run_id, "pretrain", spec, 1, settings)))
    thread.start()
    assert wait_for(lambda: any(e["type"] == "metrics" for e in stream_events(r, run_id)), timeout=120)
    r.set(protocol.cancel_key(run_id), "1")
    thread.join(120)
    assert outcome == ["cancelled"]
    first = stream_events(r, run_id)
    final = worker_status(first)[-1]
    assert final["state"] == "cancelled" and "checkpoint at step" in final["message"]
    stopped_at = final["step"]
    assert 0 < stopped_at < 200 and Path(final["checkpoint"]).is_file()
    assert r.exists(protocol.cancel_key(run_id)) == 0  # cleared for a later resume

    spec = tiny_spec(**{"train.max_steps": stopped_at + 2, "optim.epochs": 100})
    assert execute_run(run_id, "pretrain", spec, 2, settings) == "succeeded"
    events = stream_events(r, run_id)
    assert_gapless(events)  # the restart continued the numbering: nothing reused, nothing skipped
    second = events[len(first):]
    assert second[0]["seq"] == first[-1]["seq"] + 1
    assert any(e["type"] == "log" and f"at step {stopped_at}" in e["payload"]["message"] for e in second)
    assert [e["payload"]["step"] for e in second if e["type"] == "metrics"] == [stopped_at, stopped_at + 1]
    assert worker_status(second)[-1]["attempt"] == 2


@pytest.mark.fmnist
def test_knn_evaluation_writes_its_result(settings: Settings, r: Redis, run_id: str) -> None:
    spec = {"features": "pixels", "k": 20, "data": {"dataset": "fashion_mnist", "crop_size": 28, "limit": 256}}
    assert execute_run(run_id, "knn", spec, 1, settings) == "succeeded"
    events = stream_events(r, run_id)
    assert_gapless(events)
    result = json.loads((settings.run_dir(run_id) / "result.json").read_text())
    assert result["protocol"] == "knn" and 10 < result["top1"] <= 100
    assert [e["payload"]["top1"] for e in events if e["type"] == "eval_result"] == [result["top1"]]
    assert worker_status(events)[-1]["state"] == "succeeded"


def test_a_run_whose_lock_is_held_by_a_live_worker_is_a_duplicate(settings: Settings, r: Redis, run_id: str) -> None:
    other = RunLock(r, run_id, "other-worker")
    assert other.acquire()
    r.hset(protocol.worker_key("other-worker"), "hb", "{}")  # it heart-beats
    r.pexpire(other.key, 10_000)  # even with a lock close to expiry
    assert execute_run(run_id, "pretrain", tiny_spec(), 1, settings) == "duplicate"
    assert stream_events(r, run_id) == [] and last_seq(r, run_id) is None
    assert other.holder() == "other-worker"  # untouched
    r.delete(protocol.worker_key("other-worker"))


def test_the_lock_of_a_worker_that_stopped_beating_is_taken(settings: Settings, r: Redis, run_id: str) -> None:
    dead = RunLock(r, run_id, "dead-worker")
    assert dead.acquire()
    r.pexpire(dead.key, int(protocol.LOCK_TTL_S * 1000 / 3))  # no heartbeat key, no refresh for a while
    assert execute_run(run_id, "pretrain", {"bad": 1}, 1, settings) == "failed"  # it ran
    assert stream_events(r, run_id)[-1]["payload"]["worker_id"] == settings.worker_id


def test_invalid_spec_fails_with_the_field_path(settings: Settings, r: Redis, run_id: str) -> None:
    assert execute_run(run_id, "pretrain", {"optim": {"batch_size": -1}}, 1, settings) == "failed"
    (event,) = stream_events(r, run_id)
    assert event["seq"] == 0 and event["type"] == "status"
    assert event["payload"]["state"] == "failed" and event["payload"]["field"] == "optim.batch_size"
    assert event["payload"]["message"].startswith("invalid spec: optim.batch_size")
    assert execute_run(run_id, "bogus", {}, 2, settings) == "failed"
    assert stream_events(r, run_id)[-1]["payload"]["field"] == "kind"


def test_a_finished_attempt_redelivered_is_not_run_again(settings: Settings, r: Redis, run_id: str) -> None:
    assert execute_run(run_id, "pretrain", {"bad": 1}, 1, settings) == "failed"
    assert execute_run(run_id, "pretrain", {"bad": 1}, 1, settings) == "duplicate"
    assert len(stream_events(r, run_id)) == 1
    assert execute_run(run_id, "pretrain", {"bad": 1}, 2, settings) == "failed"  # a new attempt runs
    assert_gapless(stream_events(r, run_id))


def test_a_cancel_before_the_start_ends_cancelled_without_running(settings: Settings, r: Redis, run_id: str) -> None:
    r.set(protocol.cancel_key(run_id), "1")
    assert execute_run(run_id, "pretrain", tiny_spec(), 1, settings) == "cancelled"
    (event,) = stream_events(r, run_id)
    assert event["payload"]["state"] == "cancelled" and not settings.run_dir(run_id).joinpath("checkpoints").exists()
    assert r.exists(protocol.cancel_key(run_id)) == 0


def test_our_own_stale_lock_is_taken_over(settings: Settings, r: Redis, run_id: str) -> None:
    """A pool process of this worker died holding the lock: the redelivered run must not wait for expiry."""
    assert RunLock(r, run_id, settings.worker_id).acquire()
    assert execute_run(run_id, "pretrain", {"bad": 1}, 1, settings) == "failed"
    assert RunLock(r, run_id, settings.worker_id).holder() is None


def test_spooled_events_of_a_dead_process_go_first_and_numbering_continues(settings: Settings, r: Redis,
                                                                           run_id: str) -> None:
    settings.spool_dir.mkdir(parents=True)
    spool = settings.spool_dir / "00000000000000000001-4242-deadbeef.jsonl"  # unlocked: its sink is gone
    spool.write_text("".join(metrics_event(run_id, i).to_json() + "\n" for i in range(5)))
    assert execute_run(run_id, "pretrain", {"bad": 1}, 1, settings) == "failed"
    events = stream_events(r, run_id)
    assert_gapless(events)
    assert [e["type"] for e in events] == ["metrics"] * 5 + ["status"]
    assert not spool.exists()


def test_an_engine_error_fails_the_run_with_its_traceback_logged(settings: Settings, r: Redis, run_id: str,
                                                                 tmp_path: Path) -> None:
    # inside the worker's dataset roots (the default: <storage>/datasets), so that the engine gets to fail on it
    spec = tiny_spec(**{"data.root": str(settings.storage / "datasets" / "no-such-dataset")})
    assert execute_run(run_id, "pretrain", spec, 1, settings) == "failed"
    events = stream_events(r, run_id)
    assert_gapless(events)
    log = [e["payload"] for e in events if e["type"] == "log"]
    assert log and "Traceback" in log[-1]["traceback"] and log[-1]["level"] == "error"
    final = events[-1]["payload"]
    assert final["state"] == "failed" and final["final"] and "\n" not in final["message"]


SIGTERM_SCRIPT = """
import sys
from worker import Settings, execute_run
import json
settings = Settings(**json.loads(sys.argv[1]))
print("STATE", execute_run(sys.argv[2], "pretrain", json.loads(sys.argv[3]), 1, settings), flush=True)
"""


@pytest.mark.fmnist
def test_sigterm_stops_at_a_checkpoint_and_sends_the_run_back_to_the_queue(settings: Settings, r: Redis,
                                                                           run_id: str) -> None:
    """A SIGTERM with no cancel key (a worker shutdown, or Celery cancelling on a broker connection loss)."""
    spec = tiny_spec(**{"train.max_steps": 200, "optim.epochs": 100})
    conf = {"redis_url": settings.redis_url, "storage": str(settings.storage), "worker_id": settings.worker_id,
            "spool_dir": str(settings.spool_dir)}
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, json.dumps(conf), run_id, json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(e["type"] == "metrics" for e in stream_events(r, run_id)), timeout=120)
        proc.terminate()
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "STATE queued" in out
    events = stream_events(r, run_id)
    assert_gapless(events)
    final = worker_status(events)[-1]
    assert final["state"] == "queued" and Path(final["checkpoint"]).is_file()


class WritesMarker:
    """Unpickling this calls open(marker, 'w'): if the marker appears, the file's code ran on the worker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "config": WritesMarker(marker)}, path)
    return path


def refused_field(r: Redis, run_id: str) -> str:
    events = stream_events(r, run_id)
    assert [e["payload"]["state"] for e in events] == ["failed"]  # refused before "running": the engine never ran
    return str(events[0]["payload"]["field"])


def test_paths_outside_the_storage_and_dataset_roots_are_refused_before_the_engine(settings: Settings, r: Redis,
                                                                                   tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    outside = crafted_checkpoint(tmp_path / "elsewhere" / "evil.pt", marker)
    (settings.storage / "runs").mkdir(parents=True)
    (settings.storage / "runs" / "link.pt").symlink_to(outside)
    for n, checkpoint in enumerate([str(outside), "../elsewhere/evil.pt", "runs/../../elsewhere/evil.pt",
                                    "runs/link.pt"]):
        run_id = f"ckpt-{n}"
        assert execute_run(run_id, "knn", {"checkpoint": checkpoint}, 1, settings) == "failed", checkpoint
        assert refused_field(r, run_id) == "checkpoint", checkpoint
    datasets = settings.storage / "datasets"
    datasets.mkdir()
    (datasets / "escape").symlink_to(tmp_path / "elsewhere")
    for n, root in enumerate([str(tmp_path / "elsewhere"), str(datasets / ".." / ".."), str(datasets / "escape")]):
        run_id = f"data-{n}"
        spec = tiny_spec(**{"data.dataset": "cifar10", "data.root": root})
        assert execute_run(run_id, "pretrain", spec, 1, settings) == "failed", root
        assert refused_field(r, run_id) == "data.root", root
    assert not marker.exists()


def test_a_fork_from_outside_the_storage_is_refused_before_the_engine(settings: Settings, r: Redis,
                                                                     tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    outside = crafted_checkpoint(tmp_path / "elsewhere" / "evil.pt", marker)
    (settings.storage / "runs").mkdir(parents=True)
    (settings.storage / "runs" / "link.pt").symlink_to(outside)
    for n, fork_from in enumerate([str(outside), "../elsewhere/evil.pt", "runs/../../elsewhere/evil.pt",
                                   "runs/link.pt"]):
        run_id = f"fork-{n}"
        assert execute_run(run_id, "pretrain", tiny_spec(fork_from=fork_from), 1, settings) == "failed", fork_from
        assert refused_field(r, run_id) == "fork_from", fork_from
    assert not marker.exists()


@pytest.mark.fmnist
def test_a_relative_fork_from_is_the_storages_and_the_fork_continues_at_its_step(settings: Settings, r: Redis,
                                                                                  run_id: str) -> None:
    parent = f"{run_id}-parent"
    assert execute_run(parent, "pretrain", tiny_spec(), 1, settings) == "succeeded"
    relative = f"runs/{parent}/checkpoints/step_0000004.pt"
    assert execute_run(run_id, "pretrain", tiny_spec(**{"train.max_steps": 6, "fork_from": relative}), 1,
                       settings) == "succeeded"
    events = stream_events(r, run_id)
    assert_gapless(events)
    assert [e["payload"]["step"] for e in events if e["type"] == "metrics"] == [4, 5]
    assert any(e["type"] == "log" and f"forked from {settings.storage / relative}" in e["payload"]["message"]
               for e in events)
    missing = f"{run_id}-missing"
    spec = tiny_spec(fork_from=f"runs/{parent}/checkpoints/step_0000099.pt")
    assert execute_run(missing, "pretrain", spec, 1, settings) == "failed"
    final = worker_status(stream_events(r, missing))[-1]
    assert final["state"] == "failed" and final["message"].startswith("ForkError: fork_from: checkpoint not found")


def test_a_crafted_checkpoint_inside_the_storage_fails_the_run_without_running_its_code(
        settings: Settings, r: Redis, run_id: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    crafted_checkpoint(settings.storage / "runs" / "old" / "checkpoints" / "step_0000001.pt", marker)
    spec = {"checkpoint": "runs/old/checkpoints/step_0000001.pt"}
    assert execute_run(run_id, "knn", spec, 1, settings) == "failed"
    final = worker_status(stream_events(r, run_id))[-1]
    assert final["state"] == "failed" and "refused, it would import io.open" in final["message"]
    assert not marker.exists()


def test_a_run_whose_process_died_max_deliveries_times_fails_with_the_reason(settings: Settings, r: Redis,
                                                                              run_id: str) -> None:
    """Celery gives the message of a dead process back, for ever: the worker counts those deliveries."""
    r.set(protocol.deliveries_key(run_id, 1), settings.max_deliveries)  # as left by N processes that died
    assert execute_run(run_id, "pretrain", tiny_spec(), 1, settings) == "failed"
    (event,) = stream_events(r, run_id)  # the engine never started: no 'running'
    final = event["payload"]
    assert final["state"] == "failed" and final["final"] and final["attempt"] == 1
    assert final["message"].startswith(f"gave up: the process running attempt 1 died {settings.max_deliveries} ")
    assert execute_run(run_id, "pretrain", tiny_spec(), 1, settings) == "duplicate"  # this attempt has ended
    assert not settings.run_dir(run_id).joinpath("checkpoints").exists()


def test_a_delivery_that_comes_back_from_the_engine_is_not_counted(settings: Settings, r: Redis,
                                                                   run_id: str) -> None:
    r.set(protocol.deliveries_key(run_id, 1), settings.max_deliveries - 1)
    assert execute_run(run_id, "pretrain", {"bad": 1}, 1, settings) == "failed"
    assert r.get(protocol.deliveries_key(run_id, 1)) == str(settings.max_deliveries - 1)
    assert "invalid spec" in stream_events(r, run_id)[-1]["payload"]["message"]


@pytest.mark.fmnist
def test_a_process_killed_in_the_engine_counts_and_the_next_delivery_gives_up(settings: Settings, r: Redis,
                                                                              run_id: str) -> None:
    """A real death: SIGKILL (what the OOM killer sends) while the engine trains."""
    spec = tiny_spec(**{"train.max_steps": 200, "optim.epochs": 100})
    conf = {"redis_url": settings.redis_url, "storage": str(settings.storage), "worker_id": settings.worker_id,
            "spool_dir": str(settings.spool_dir), "max_deliveries": 1}
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, json.dumps(conf), run_id, json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(e["type"] == "metrics" for e in stream_events(r, run_id)), timeout=120)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert r.get(protocol.deliveries_key(run_id, 1)) == "1"
    once_more = Settings(**{**conf, "storage": settings.storage, "spool_dir": settings.spool_dir})
    assert execute_run(run_id, "pretrain", spec, 1, once_more) == "failed"
    final = worker_status(stream_events(r, run_id))[-1]
    assert final["state"] == "failed" and "died 1 time(s)" in final["message"]
