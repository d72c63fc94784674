"""The CLI's request for GPUs (`mocolab submit --gpus N [--nodes M]`): bad counts are one line and exit 2
before anything is sent; a request goes to a live server, which checks it against the agents' heartbeats in
Redis; `mocolab runs` shows the size of a run and why a queued one waits."""

from __future__ import annotations

import re

import pytest
import redis
from sqlmodel import Session

from mocolab import cli
from server.core.db import make_engine
from server.models import Run

from server_factories import LiveServer, Member, agent_beat, cli_member


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "0"], "--gpus '0': expected a whole number 1-64"),
    (["--gpus", "two"], "--gpus 'two': expected a whole number 1-64"),
    (["--gpus", "65"], "--gpus '65': expected a whole number 1-64"),
    (["--gpus", "2.5"], "--gpus '2.5': expected a whole number 1-64"),
    (["--nodes", "257"], "--nodes '257': expected a whole number 1-256"),
    (["--nodes", "2", "--gpus-per-node", "0"], "--gpus-per-node '0': expected a whole number 1-64"),
    (["--nodes", "2", "--gpus", "4", "--gpus-per-node", "8"], "--gpus 4 and --gpus-per-node 8 disagree"),
])
def test_a_bad_count_is_one_line_and_exit_2(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOCOLAB_URL", "http://127.0.0.1:9")  # nothing listens: the check comes before any request
    with pytest.raises(SystemExit) as exited:
        cli.main(["submit", "--preset", "fmnist_tiny", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_the_flags_make_the_request() -> None:
    assert cli.resources(None, None, None) is None  # the server's default, one GPU
    assert cli.resources("4", None, None) == {"nodes": 1, "gpus_per_node": 4}
    assert cli.resources(None, "2", "8") == {"nodes": 2, "gpus_per_node": 8}
    assert cli.resources("8", "2", "8") == {"nodes": 2, "gpus_per_node": 8}
    assert cli.resources(None, "3", None) == {"nodes": 3, "gpus_per_node": 1}


def test_a_run_line_shows_its_size_and_why_it_waits() -> None:
    run = {"id": "ab12", "kind": "pretrain", "status": "queued", "name": "big", "step": None, "total_steps": None}
    assert "GPU" not in cli._line(run) and "GPU" not in cli._line({**run, "nodes": 1, "gpus_per_node": 1})
    assert cli._line({**run, "nodes": 1, "gpus_per_node": 4}).endswith("step 0/? 4 GPUs")
    waiting = {**run, "nodes": 2, "gpus_per_node": 4, "wait_reason": "waiting for 2 machines with 4 free GPUs"}
    assert cli._line(waiting).endswith("step 0/? 2x4 GPUs (waiting for 2 machines with 4 free GPUs)")
    assert "waiting" not in cli._line({**waiting, "status": "running"})  # a stale reason is not shown


@pytest.fixture
def member(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Member:
    return cli_member(live, monkeypatch)


def test_submit_asks_the_server_and_runs_shows_the_answer(live: LiveServer, member: Member,
                                                          redis_client: redis.Redis,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    submit = ["submit", "--preset", "fmnist_tiny", "--queue", "cli-test", "--name", "big"]
    with pytest.raises(SystemExit) as exited:  # no agent on the queue: the server says what exists
        cli.main([*submit, "--gpus", "4"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resources: " in err and "no agent is registered on queue 'cli-test'" in err
    agent_beat(redis_client, "a", [0, 1, 2, 3], queue="cli-test")
    agent_beat(redis_client, "b", [0, 1, 2, 3], queue="cli-test")
    assert cli.run([*submit, "--nodes", "2", "--gpus-per-node", "4"]) == 0
    run_id = capsys.readouterr().out.strip()
    engine = make_engine(live.app.state.settings.database)
    try:
        with Session(engine) as s:
            row = s.get(Run, run_id)
            assert row is not None and (row.nodes, row.gpus_per_node) == (2, 4)
            row.wait_reason = "waiting for 2 machines with 4 free GPUs (free now: a: 3, b: 4)"
            s.add(row)
            s.commit()
    finally:
        engine.dispose()
    assert cli.run(["runs"]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"{run_id}\s+pretrain\s+queued\s+big\s+step 0/\S+ 2x4 GPUs "
                     r"\(waiting for 2 machines with 4 free GPUs \(free now: a: 3, b: 4\)\)", printed), printed
