"""Lineage and self-healing on the live stack (`mocolab up`'s embedded Redis, server, one real worker training
fmnist_tiny on SQLite), one stack shared by the module: a fork of a finished run's checkpoint with another lr
continues from the parent's step; a run whose stability policy rolls back shows the branch with the curve it
abandoned; a run that hangs with its heartbeat alive raises a `stall` alert and, with stall_policy restart, is
killed, restarted from its checkpoint and finishes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mocolab.client import Client
from mocolab.stack import Stack

from stack_fixture import running_stack, wait_for

pytestmark = [pytest.mark.fmnist, pytest.mark.slow]

TERMINAL = {"succeeded", "failed", "cancelled"}
# 32 steps of the smallest ViT, a checkpoint every 8 (all kept, so any can be forked)
TINY = {"data.limit": 512, "optim.batch_size": 32, "optim.epochs": 2, "train.log_every": 2, "train.ckpt_every": 8,
        "train.keep_checkpoints": 10, "monitor.knn_every": 0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as monkeypatch, \
            running_stack(tmp_path_factory.mktemp("lineage"), monkeypatch) as s:
        yield s


@pytest.fixture
def c(stack: Stack) -> Client:
    return Client(stack.url, stack.token)


def finished(c: Client, run_id: str, timeout: float = 300.0) -> dict[str, Any]:
    run: dict[str, Any] = wait_for(lambda: (r := c.run(run_id))["status"] in TERMINAL and r, f"run {run_id} to end",
                                   timeout=timeout)
    assert run["status"] == "succeeded", run
    return run


def series(c: Client, path: str, key: str) -> dict[int, Any]:
    body = c.get(f"/runs/{path}", keys=key)["series"][0]
    return dict(zip(body["step"], body["value"], strict=True))


def test_a_fork_of_a_finished_run_continues_from_its_step_with_another_lr(c: Client) -> None:
    parent = c.submit({"preset": "fmnist_tiny", "name": "parent", "overrides": TINY})
    done = finished(c, parent["id"])
    assert done["step"] == 32
    assert [ck["step"] for ck in c.get(f"/runs/{parent['id']}/checkpoints")] == [8, 16, 24, 32]
    lr = parent["spec"]["optim"]["base_lr"] / 10
    fork = c.post(f"/runs/{parent['id']}/fork", {"checkpoint_step": 16, "overrides": {"optim.base_lr": lr}})
    assert fork["parent_step"] == 16 and fork["spec"]["fork_from"].endswith("step_0000016.pt")
    forked = finished(c, fork["id"])
    assert forked["step"] == 32 and forked["parent_run_id"] == parent["id"]
    loss = series(c, f"{fork['id']}/metrics", "loss")
    assert sorted(loss) == list(range(16, 32)), "the fork trained other steps than 16..31"
    mine, theirs = series(c, f"{fork['id']}/metrics", "lr"), series(c, f"{parent['id']}/metrics", "lr")
    assert all(mine[s] < theirs[s] for s in range(16, 32)), "the fork's lr is not its own"
    lineage = c.get(f"/runs/{parent['id']}/lineage")
    assert lineage["forks"] == [{"id": fork["id"], "name": fork["name"], "status": "succeeded", "step": 16}]
    assert c.get(f"/runs/{fork['id']}/lineage")["parent"] == {"id": parent["id"], "name": "parent", "step": 16}


def test_a_rolled_back_run_shows_its_branch_with_the_abandoned_curve(c: Client) -> None:
    run = c.submit({"preset": "fmnist_tiny", "name": "rollback", "overrides": {
        **TINY, "faults.spike_at_step": 20, "faults.spike_scale": 1000, "monitor.policy": "rollback"}})
    finished(c, run["id"])
    (branch,) = c.get(f"/runs/{run['id']}/lineage")["branches"]
    assert branch["branch"] == 1 and branch["to_step"] == 16 and branch["from_step"] > 20
    assert branch["alert_kind"] and branch["alert_step"] >= 20 and branch["lr_scale"] < 1
    abandoned = series(c, f"{run['id']}/branches/1/metrics", "grad_norm")
    main = series(c, f"{run['id']}/metrics", "grad_norm")
    assert set(range(16, 21)) <= set(abandoned) and set(abandoned) <= set(range(16, branch["from_step"] + 1))
    # the spike lives on in the abandoned curve only: the replay trained step 20 again without the fault
    assert isinstance(abandoned[20], float) and abandoned[20] > 10 * main[20]
    assert sorted(main) == list(range(32))


def test_a_hung_run_raises_a_stall_alert_and_is_restarted_from_its_checkpoint(c: Client) -> None:
    run = c.submit({"preset": "fmnist_tiny", "name": "hang", "overrides": {
        **TINY, "faults.hang_at_step": 20, "monitor.stall_policy": "restart", "monitor.stall_min_s": 15}})
    done = finished(c, run["id"], timeout=400)
    assert done["attempt"] >= 2 and done["alert_count"] >= 1 and done["step"] == 32
    stalls = [a for a in c.get(f"/runs/{run['id']}/alerts") if a["kind"] == "stall"]
    assert len(stalls) == 1 and stalls[0]["seq"] < 0 and stalls[0]["step"] is not None
    assert "restarted from its latest checkpoint" in stalls[0]["remedy"]
    loss = series(c, f"{run['id']}/metrics", "loss")
    assert sorted(loss) == list(range(32)), "a step is missing from the restarted run's curve"
