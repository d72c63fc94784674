"""One run on several machines through the service: agents on loopback, each owning CPU "GPUs" (processes),
stand in for GPU machines; torchrun's c10d rendezvous and gloo join them as they would join real ones.

One live stack (embedded Redis, SQLite, the server with its scheduler every 0.2 s) is shared by the scenarios;
each scenario starts the agents it needs and stops them at its end.
"""

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

import psutil
import pytest

from mocolab.client import Client
from mocolab.stack import Stack
from server.embedded_redis import free_port
from worker import gang

from stack_fixture import wait_for

pytestmark = [pytest.mark.fmnist, pytest.mark.slow]

TERMINAL = {"succeeded", "failed", "cancelled"}
# 32 steps at global batch 64 (2 processes x 32), the smallest ViT
OVERRIDES = {"data.limit": 1024, "optim.epochs": 2, "optim.batch_size": 64, "monitor.knn_every": 0,
             "train.ckpt_every": 4, "train.log_every": 1, "train.device": "cpu", "train.threads": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("multinode")
    env = {"WATCHDOG_EVERY_S": "1", "SCHEDULE_EVERY_S": "0.2", "GANG_FORM_TIMEOUT_S": "6",
           "MOCOLAB_CONFIG": str(tmp / "client.json")}
    saved = {k: os.environ.get(k) for k in [*env, "DATABASE_URL", "REDIS_URL"]}
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.update(env)
    s = Stack(tmp / "state", "127.0.0.1", free_port(), worker=False)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Agents:
    """Agents started for one scenario (`mocolab worker --gpus cpu:N`), stopped at its end."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.names: list[str] = []

    def start(self, name: str, slots: int = 1) -> str:
        worker_id = f"{name}-{os.getpid()}"
        self.stack._spawn(name, [sys.executable, "-m", "worker", "--gpus", f"cpu:{slots}", "--worker-id", worker_id,
                                 "--spool-dir", str(self.stack.state / "spool" / name)])
        self.names.append(name)
        wait_for(lambda: worker_id in {a.worker_id for a in self.live()}, f"agent {name} to register", 60)
        return worker_id

    def live(self) -> list[gang.Agent]:
        from worker._redis import connect

        return gang.live_agents(connect(self.stack.env["REDIS_URL"]))

    def kill_machine(self, name: str) -> None:
        """A machine lost: its agent and every process under it (torchrun, ranks) SIGKILLed at once."""
        proc = self.stack.procs.pop(name)
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.names.remove(name)

    def stop(self) -> None:
        for name in list(self.names):
            if name in self.stack.procs:
                self.stack.kill(name, signal.SIGTERM, timeout=60)
        self.names.clear()


@pytest.fixture
def agents(stack: Stack) -> Iterator[Agents]:
    a = Agents(stack)
    try:
        yield a
    finally:
        a.stop()


def client(stack: Stack) -> Client:
    return Client(stack.url, stack.token)


def losses(c: Client, run_id: str) -> dict[int, float]:
    series = c._call("GET", f"/runs/{run_id}/metrics", params={"keys": "loss"})["series"][0]
    return dict(zip(series["step"], series["value"], strict=True))


def submit(c: Client, nodes: int, gpus: int, **extra: Any) -> dict[str, Any]:
    body = {"kind": "pretrain", "preset": "fmnist_tiny", "name": f"{nodes}x{gpus}",
            "overrides": {**OVERRIDES, **extra}, "resources": {"nodes": nodes, "gpus_per_node": gpus}}
    return c.submit(body)


def ended(c: Client, run_id: str, timeout: float = 400.0) -> dict[str, Any]:
    return wait_for(lambda: (r := c.run(run_id))["status"] in TERMINAL and r, f"run {run_id} to end", timeout)


def test_two_machine_run_trains_like_one_process_at_the_same_global_batch(stack: Stack, agents: Agents,
                                                                        tmp_path: Path) -> None:
    agents.start("m1")
    agents.start("m2")
    c = client(stack)
    run = submit(c, 2, 1)
    done = ended(c, run["id"])
    assert done["status"] == "succeeded", done
    assert {p["worker_id"] for p in done["placement"]} == {a for a in (f"m1-{os.getpid()}", f"m2-{os.getpid()}")}
    served = losses(c, run["id"])
    assert sorted(served) == list(range(done["total_steps"]))  # one curve: rank 0 alone reports
    # the same spec in one process holding the whole global batch
    out = tmp_path / "single"
    spec = ["--set", *[f"{k}={v}" for k, v in OVERRIDES.items()]]
    args = [sys.executable, "-m", "mocov3_core", "pretrain", "--preset", "fmnist_tiny", "--out", str(out),
            "--no-progress"]
    for item in spec[1:]:
        args += ["--set", item]
    subprocess.run(args, check=True, capture_output=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    single = {e["payload"]["step"]: e["payload"]["values"]["loss"] for e in events if e["type"] == "metrics"
              and "loss" in e["payload"].get("values", {})}
    assert sorted(single) == sorted(served)
    # Same images in every global batch and the keys gathered from both ranks: the loss at step 0 is the
    # single process's to well under 1% (each rank draws its own augmentations, so not to the bit). Keys left
    # ungathered (a contrastive batch of 32, not 64) or a per-GPU batch of 64 would be ~10% off (ln 32 vs ln 64).
    assert served[0] == pytest.approx(single[0], rel=0.01)
    drift = sum(abs(served[s] - single[s]) / single[s] for s in single) / len(single)
    assert drift < 0.03, f"mean relative difference {drift:.4f} over {len(single)} steps"
    # with only agents serving the queue, a one-device evaluation goes through them too
    knn = c.evaluate(run["id"], {"kind": "knn", "overrides": {"data.limit": 1024, "train.device": "cpu"}})
    evaluated = ended(c, knn["id"], 300)
    assert evaluated["status"] == "succeeded", evaluated
    assert evaluated["placement"] and len(evaluated["placement"][0]["devices"]) == 1


def test_an_agent_shutting_down_hands_its_run_back_and_the_run_goes_on_elsewhere(stack: Stack,
                                                                              agents: Agents) -> None:
    ids = {"h1": agents.start("h1"), "h2": agents.start("h2")}
    c = client(stack)
    run = submit(c, 2, 1, **{"optim.epochs": 4})
    wait_for(lambda: int(c.run(run["id"]).get("step") or 0) >= 6, "the run to train a few steps", 300)
    spare = agents.start("h3")
    stack.kill("h2", signal.SIGTERM, timeout=60)  # a warm stop: checkpoint, hand the run back
    agents.names.remove("h2")
    done = ended(c, run["id"], 500)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 1  # handed back, not lost
    assert {p["worker_id"] for p in done["placement"]} == {ids["h1"], spare}
    served = losses(c, run["id"])
    assert sorted(served) == list(range(done["total_steps"]))


def rank_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "worker.rank" in cmd or any("torch.distributed.run" in c for c in cmd):
            found.append(p)
    return found


def held(agents: Agents) -> dict[str, dict[int, str]]:
    return {a.worker_id: a.held for a in agents.live()}


def test_cancel_stops_every_process_on_every_machine_and_frees_the_devices(stack: Stack, agents: Agents) -> None:
    agents.start("c1")
    agents.start("c2")
    c = client(stack)
    run = submit(c, 2, 1, **{"optim.epochs": 8})
    wait_for(lambda: int(c.run(run["id"]).get("step") or 0) >= 6, "the run to train a few steps", 300)
    asked = time.monotonic()
    c.cancel(run["id"])
    done = ended(c, run["id"], 60)
    assert done["status"] == "cancelled", done
    wait_for(lambda: not rank_processes(), "every torchrun and rank process to exit", 15)
    assert time.monotonic() - asked < 15 + 1
    checkpoints = c.get(f"/runs/{run['id']}/checkpoints")
    assert checkpoints and max(ck["step"] for ck in checkpoints) >= 4
    wait_for(lambda: all(not h for h in held(agents).values()), "every device to be free", 15)


def test_a_lost_machine_resumes_the_run_as_attempt_two_with_one_continuous_curve(stack: Stack,
                                                                                agents: Agents) -> None:
    ids = [agents.start("k1"), agents.start("k2")]
    c = client(stack)
    run = submit(c, 2, 1, **{"optim.epochs": 4})
    wait_for(lambda: int(c.run(run["id"]).get("step") or 0) >= 10, "the run to pass a checkpoint", 300)
    placed = c.run(run["id"])["placement"]
    victim = "k2" if placed[1]["worker_id"] == ids[1] else "k1"
    spare = agents.start("k3")  # free machines for the next attempt
    agents.kill_machine(victim)
    again = wait_for(lambda: (r := c.run(run["id"]))["attempt"] == 2 and r, "the run's next attempt", 120, 0.1)
    assert "lost" in (again.get("message") or ""), again
    done = ended(c, run["id"], 500)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    assert spare in {p["worker_id"] for p in done["placement"]}
    served = losses(c, run["id"])
    assert sorted(served) == list(range(done["total_steps"]))  # no step lost, none doubled


def test_two_two_machine_runs_on_three_machines_both_finish(stack: Stack, agents: Agents) -> None:
    for name in ("t1", "t2", "t3"):
        agents.start(name)
    c = client(stack)
    first, second = submit(c, 2, 1), submit(c, 2, 1)
    waiting = wait_for(lambda: "waiting for 2 machines" in ((r := c.run(second["id"]))["wait_reason"] or "") and r,
                       "the second run to wait for machines", 120)
    assert waiting["status"] == "queued" and not waiting["placement"]
    for run in (first, second):
        assert ended(c, run["id"], 600)["status"] == "succeeded"
    wait_for(lambda: all(not h for h in held(agents).values()), "every device to be free", 30)


def test_a_gang_that_cannot_form_gives_its_devices_back_and_waits_again(stack: Stack, agents: Agents) -> None:
    from worker import protocol
    from worker._redis import connect

    real = agents.start("g1")
    r = connect(stack.env["REDIS_URL"])
    # a machine that registered and then hung: it beats (its heartbeat key is fresh) but takes no task
    hung = f"hung-{os.getpid()}"
    beat = {"worker_id": hung, "host": "127.0.0.1", "queue": "gpu", "state": "idle",
            "agent": {"devices": [0], "device_kind": "cpu", "storage": str((stack.state / "storage").resolve()),
                      "slots": [{"device": 0, "run_id": None, "attempt": None}]}}
    r.hset(protocol.worker_key(hung), "hb", json.dumps(beat))
    r.pexpire(protocol.worker_key(hung), 60_000)
    c = client(stack)
    try:
        run = submit(c, 2, 1)
        wait_for(lambda: c.run(run["id"])["placement"], "the run to be placed on both machines", 60)
        gave_back = wait_for(lambda: "never joined" in (c.run(run["id"]).get("message") or "") and c.run(run["id"]),
                             "the gang to time out", 60)
        assert hung in gave_back["message"] and gave_back["status"] == "queued"
    finally:
        r.delete(protocol.worker_key(hung))
    # the hung machine gone, the run cannot be placed again: it waits, and the real machine's device is free
    waiting = wait_for(lambda: (x := c.run(run["id"]))["wait_reason"] and not x["placement"]
                       and "waiting for 2 machines" in x["wait_reason"] and x, "the run to wait again", 60)
    assert waiting["status"] == "queued"
    wait_for(lambda: not r.hgetall(gang.slots_key(real)), "the real machine's device to be given back", 30)
    agents.start("g2")
    done = ended(c, run["id"], 400)
    assert done["status"] == "succeeded", done
    assert hung not in {p["worker_id"] for p in done["placement"]}


def test_a_request_no_machine_can_serve_is_refused_with_what_exists(stack: Stack, agents: Agents) -> None:
    agents.start("r1", slots=2)
    c = client(stack)
    with pytest.raises(Exception) as err:
        submit(c, 1, 4)
    text = str(err.value)
    assert "422" in text or "resources" in text
    assert "r1" in text and "2 CPU slots" in text


def test_one_agent_runs_two_one_device_runs_side_by_side_and_says_which_device_serves_which(
        stack: Stack, agents: Agents) -> None:
    me = agents.start("s1", slots=2)
    c = client(stack)
    runs = [submit(c, 1, 1, **{"optim.epochs": 8}), submit(c, 1, 1, **{"optim.epochs": 8})]
    both = wait_for(lambda: (now := [c.run(x["id"]) for x in runs]) and all(r["status"] == "running" for r in now)
                    and now, "both runs to run at once", 300)
    devices = sorted(r["placement"][0]["devices"][0] for r in both)
    assert devices == [0, 1] and {r["placement"][0]["worker_id"] for r in both} == {me}
    # the agent's heartbeat says which device serves which run (the workers page reads it)
    worker = wait_for(lambda: next((w for w in c.get("/workers")["data"] if w["id"] == me
                                    and all(s.get("run_id") for s in (w.get("agent") or {}).get("slots", []))), None),
                      "the agent's heartbeat to show both runs", 30)
    by_device = {s["device"]: s["run_id"] for s in worker["agent"]["slots"]}
    assert by_device == {r["placement"][0]["devices"][0]: r["id"] for r in both}
    for r in runs:
        c.cancel(r["id"])
    for r in runs:
        assert ended(c, r["id"], 120)["status"] == "cancelled"
