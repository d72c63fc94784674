"""`mocolab fork` against a live server: it prints the fork's id, sends the changes and the step, follows the fork
with the progress bar until it ends (--wait), and a refusal of the server is one line on stderr with exit status
2. The worker's part is played by pushing the fork's events into the stream once it is queued."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import redis

from mocolab import cli
from server.core.config import Settings

from server_factories import LiveServer, Member, cli_member, ev, metrics_ev, push

API = "/api/v1"


@pytest.fixture
def member(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Member:
    return cli_member(live, monkeypatch)


def parent_with_checkpoints(live: LiveServer, member: Member, redis_client: redis.Redis, settings: Settings) -> str:
    response = httpx.post(f"{live.url}{API}/runs", headers=member.headers,
                          json={"preset": "fmnist_tiny", "queue": "testq", "name": "base"})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    ckpts = settings.storage_root / "runs" / run_id / "checkpoints"
    push(redis_client, [ev(run_id, i, "checkpoint", step=s, path=str(ckpts / f"step_{s:07d}.pt"))
                        for i, s in enumerate((16, 32))])
    for _ in range(200):  # the live server's own ingest stores them
        if len(httpx.get(f"{live.url}{API}/runs/{run_id}/checkpoints", headers=member.headers).json()) == 2:
            return run_id
        time.sleep(0.05)
    raise AssertionError("the checkpoints were not ingested")


def test_fork_prints_the_new_run_and_sends_step_and_changes(
        live: LiveServer, member: Member, redis_client: redis.Redis, settings: Settings,
        capsys: pytest.CaptureFixture[str]) -> None:
    parent = parent_with_checkpoints(live, member, redis_client, settings)
    assert cli.run(["fork", parent, "--step", "16", "--set", "optim.base_lr=1e-4", "--name", "lower",
                    "--tag", "x"]) == 0
    out, err = capsys.readouterr()
    child = httpx.get(f"{live.url}{API}/runs/{out.strip()}", headers=member.headers).json()
    assert child["parent_run_id"] == parent and child["parent_step"] == 16 and child["name"] == "lower"
    assert child["spec"]["optim"]["base_lr"] == 1e-4 and child["tags"] == ["x"]
    assert f"forked from {parent} at step 16" in err


def test_fork_wait_follows_the_fork_until_it_ends(live: LiveServer, member: Member, redis_client: redis.Redis,
                                                  settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    parent = parent_with_checkpoints(live, member, redis_client, settings)

    def worker() -> None:
        for _ in range(400):
            forks = httpx.get(f"{live.url}{API}/runs", params={"parent_run_id": parent},
                              headers=member.headers).json()["data"]
            if forks:
                run_id = forks[0]["id"]
                push(redis_client, [ev(run_id, 0, "status", state="running", step=32, total_steps=40)]
                     + [metrics_ev(run_id, i + 1, s, loss=0.5) for i, s in enumerate(range(32, 40))]
                     + [ev(run_id, 9, "status", state="succeeded", step=40, worker_id="w", attempt=1, final=True)])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert cli.run(["fork", parent, "--wait"]) == 0
    thread.join(timeout=10)
    out, _ = capsys.readouterr()
    assert "succeeded" in out and "step 40/40" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--set", "optim.nope=1"], "optim.nope"),
    (["--step", "20"], "has no checkpoint at step 20"),
    (["--set", "fork_from=/etc/passwd"], "fork_from"),
])
def test_a_refusal_is_one_line_and_status_2(live: LiveServer, member: Member, redis_client: redis.Redis,
                                            settings: Settings, capsys: pytest.CaptureFixture[str], argv: list[str],
                                            message: str) -> None:
    parent = parent_with_checkpoints(live, member, redis_client, settings)
    with pytest.raises(SystemExit) as exited:
        cli.main(["fork", parent, *argv])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and message in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exited:
        cli.main(["fork", "nosuchrun"])
    assert exited.value.code == 2 and "not found" in capsys.readouterr().err
