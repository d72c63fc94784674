"""The agent's side without torchrun: its devices, its heartbeat's `agent` part, a node task that finds its gang
gone, already joined, or never formed, and a rank's own error travelling to the run's log with rank and host.
Real Redis (the session's), real files; the one process started is a rank that fails on purpose."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker import gang, protocol
from worker._redis import Redis, connect
from worker.agent import NodeTask, agent_info, parse_devices
from worker.rank import _other_rank
from worker.settings import Settings


@pytest.fixture
def r(redis_url: str) -> Iterator[Redis]:
    client = connect(redis_url)
    yield client
    client.close()


def settings_for(redis_url: str, tmp_path: Path, worker_id: str, devices: str = "cpu:2") -> Settings:
    return Settings.from_env({"REDIS_URL": redis_url, "MOCOLAB_STORAGE": str(tmp_path / "storage"),
                              "MOCOLAB_DATASET_ROOTS": str(tmp_path / "datasets"),
                              "MOCOLAB_SPOOL_DIR": str(tmp_path / "spool"), "MOCOLAB_WORKER_ID": worker_id,
                              "MOCOLAB_AGENT_DEVICES": devices})


def placement(token: str, members: list[str], form_timeout_s: float = 5.0) -> dict[str, Any]:
    return {"gang": token, "members": members, "hosts": {m: "127.0.0.1" for m in members},
            "devices": {m: [0] for m in members}, "gpus_per_node": 1, "form_timeout_s": form_timeout_s}


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def test_devices_from_the_command_line() -> None:
    assert parse_devices("all", detected=4) == ("gpu", [0, 1, 2, 3])
    assert parse_devices("3,1,1") == ("gpu", [1, 3])
    assert parse_devices("cpu:2") == ("cpu", [0, 1])
    for bad in ("", "x", "0,a", "cpu:0", "cpu:x", "cpu:999"):
        with pytest.raises(ValueError, match="--gpus"):
            parse_devices(bad, detected=4)
    with pytest.raises(ValueError, match="no GPU"):
        parse_devices("all", detected=0)


def test_settings_read_the_agents_devices(tmp_path: Path) -> None:
    s = Settings.from_env({"MOCOLAB_AGENT_DEVICES": "0,2"})
    assert s.agent_devices == (0, 2) and s.agent_kind == "gpu"
    s = Settings.from_env({"MOCOLAB_AGENT_DEVICES": "cpu:3"})
    assert s.agent_devices == (0, 1, 2) and s.agent_kind == "cpu"
    assert Settings.from_env({}).agent_devices == ()
    with pytest.raises(ValueError, match="MOCOLAB_AGENT_DEVICES"):
        Settings.from_env({"MOCOLAB_AGENT_DEVICES": "gpu0"})


def test_the_heartbeat_says_which_run_holds_which_device(r: Redis, redis_url: str, tmp_path: Path) -> None:
    me = unique("hb")
    s = settings_for(redis_url, tmp_path, me)
    token = gang.token("run7", 2)
    assert gang.reserve(r, token, {me: [1]})
    info = agent_info(s, r)
    assert info is not None
    assert info["devices"] == [0, 1] and info["device_kind"] == "cpu" and info["node_queue"] == gang.node_queue(me)
    assert info["slots"] == [{"device": 0, "run_id": None, "attempt": None},
                             {"device": 1, "run_id": "run7", "attempt": 2}]
    assert agent_info(Settings.from_env({}), r) is None  # a one-GPU worker has no `agent` part
    r.delete(gang.slots_key(me))


def test_the_command_joins_member_zeros_rendezvous(redis_url: str, tmp_path: Path) -> None:
    token = gang.token("runc", 1)
    first = NodeTask("runc", "pretrain", {}, 1, placement(token, ["a", "b"]), settings_for(redis_url, tmp_path, "a"))
    second = NodeTask("runc", "pretrain", {}, 1, placement(token, ["a", "b"]), settings_for(redis_url, tmp_path, "b"))
    job = tmp_path / "job.json"
    for task, host in ((first, 1), (second, 0)):
        cmd = task.command(29500, job)
        assert cmd[1:3] == ["-m", "torch.distributed.run"]
        assert "--nnodes=2" in cmd and "--nproc-per-node=1" in cmd and "--rdzv-backend=c10d" in cmd
        assert "--rdzv-endpoint=127.0.0.1:29500" in cmd and f"--rdzv-id={token}" in cmd
        assert f"--rdzv-conf=is_host={host},join_timeout=5" in cmd
        assert cmd[-3:] == ["-m", "worker.rank", str(job)]
    assert first.environment()["CUDA_VISIBLE_DEVICES"] == ""  # CPU slots: no GPU for the ranks
    gpu = NodeTask("runc", "pretrain", {}, 1, {**placement(token, ["a"]), "devices": {"a": [2, 3]}},
                   settings_for(redis_url, tmp_path, "a", devices="0,1,2,3"))
    assert gpu.environment()["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_a_node_task_of_a_gang_that_is_gone_or_already_joined_starts_nothing(r: Redis, redis_url: str,
                                                                           tmp_path: Path) -> None:
    me = unique("stale")
    token = gang.token("runs", 1)
    task = NodeTask("runs", "pretrain", {}, 1, placement(token, [me]), settings_for(redis_url, tmp_path, me))
    assert task.execute() == "stale"  # no gang hash: the scheduler moved on
    gang.create_gang(r, token, members=[me], devices={me: [0]}, gpus_per_node=1, queue="gpu")
    r.hset(gang.gang_key(token), f"joined:{me}", time.time())  # a delivery before this one joined
    assert task.execute() == "duplicate"
    gang.abort(r, token, "test")
    assert task.execute() == "stale"
    r.delete(gang.gang_key(token))


def test_a_gang_that_does_not_form_is_aborted_and_the_devices_go_back(r: Redis, redis_url: str,
                                                                     tmp_path: Path) -> None:
    me, other = unique("form"), unique("never")
    token = gang.token("runf", 1)
    assert gang.reserve(r, token, {me: [0], other: [0]})
    gang.create_gang(r, token, members=[me, other], devices={me: [0], other: [0]}, gpus_per_node=1, queue="gpu")
    task = NodeTask("runf", "pretrain", {}, 1, placement(token, [me, other], form_timeout_s=0.5),
                    settings_for(redis_url, tmp_path, me))
    assert task.execute() == "stale"
    formed = gang.read_gang(r, token)
    assert formed is not None and formed.rdzv_port  # member 0 published its port
    assert formed.abort and other in formed.abort and "never joined" in formed.abort
    assert formed.exits == {me: -1}  # ended without starting torchrun
    assert r.hgetall(gang.slots_key(me)) == {}  # its own device given back
    assert r.hgetall(gang.slots_key(other)) == {"0": token}  # the other's is the scheduler's to give back
    r.delete(gang.gang_key(token), gang.slots_key(other))


@pytest.mark.fmnist
def test_a_ranks_own_error_reaches_the_runs_log_with_rank_and_host(r: Redis, redis_url: str, tmp_path: Path) -> None:
    me = unique("err")
    run_id = unique("runerr").replace("-", "")
    token = gang.token(run_id, 1)
    gang.create_gang(r, token, members=[me], devices={me: [0]}, gpus_per_node=1, queue="gpu")
    s = settings_for(redis_url, tmp_path, me)
    from mocov3_core.presets import build_spec

    spec = build_spec("pretrain", "fmnist_tiny", {"data.root": str(tmp_path / "datasets" / "no-such-dataset"),
                                                  "train.device": "cpu"}).model_dump(mode="json")
    job = {"run_id": run_id, "kind": "pretrain", "gang": token, "agent": me, "attempt": 1, "spec": spec}
    with pytest.raises(Exception):  # noqa: B017 (whatever the engine raises for missing data)
        _other_rank(job, s, rank=3)
    current = gang.read_gang(r, token)
    assert current is not None
    report = current.errors[f"{me}:3"]
    assert report["rank"] == 3 and report["host"] == socket.gethostname() and report["message"]
    # the node task, once its processes are gone, puts it into the run's log (one event, seq after the last)
    r.set(protocol.seq_key(run_id), 41)
    task = NodeTask(run_id, "pretrain", {}, 1, placement(token, [me]), s)
    task._report_rank_errors()
    task._report_rank_errors()  # reported once only
    events = [json.loads(e) for _, fields in r.xrange(protocol.EVENTS_STREAM) for e in [fields["b"]]]
    logs = [ev for batch in events for ev in batch if ev["run_id"] == run_id and ev["type"] == "log"]
    assert len(logs) == 1
    assert logs[0]["seq"] == 42 and logs[0]["payload"]["rank"] == 3
    assert logs[0]["payload"]["message"].startswith(f"rank 3 on {socket.gethostname()}: ")
    r.delete(gang.gang_key(token))


def test_a_rank_other_than_zero_opens_no_path_outside_the_roots(r: Redis, redis_url: str, tmp_path: Path) -> None:
    """A spec pointing data.root at a hostile place: the rank trains nothing and reports nothing (rank 0
    fails the run with the field's name); nothing is read there, nothing is written to the gang."""
    from mocov3_core.presets import build_spec

    me = unique("hostile")
    token = gang.token("runh", 1)
    gang.create_gang(r, token, members=[me], devices={me: [0]}, gpus_per_node=1, queue="gpu")
    s = settings_for(redis_url, tmp_path, me)
    for root in ("/etc", str(tmp_path / "datasets" / ".." / "elsewhere"), "../elsewhere", "datasets/../../x"):
        spec = build_spec("pretrain", "fmnist_tiny", {"data.root": root, "train.device": "cpu"}).model_dump(mode="json")
        job = {"run_id": "runh", "kind": "pretrain", "gang": token, "agent": me, "attempt": 1, "spec": spec}
        assert _other_rank(job, s, rank=1) == 0
    current = gang.read_gang(r, token)
    assert current is not None and current.errors == {}
    assert not (tmp_path / "storage" / "runs" / "runh").exists()
    r.delete(gang.gang_key(token))
