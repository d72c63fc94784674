"""The CLI against a live server: progress bars fed by a run's events, and text from the server printed
without its escape sequences (a run named "\x1b[2J..." must not clear the terminal of whoever lists it)."""

from __future__ import annotations

import io
import re

import httpx
import pytest
import redis

from mocolab import cli
from mocolab.client import Client
from mocolab.progress import Bars, RunProgress
from mocolab.terminal import safe

from server_factories import LiveServer, Member, ev, make_member, metrics_ev, push

# no NUL: PostgreSQL cannot store one, and the server answers it with a 422 (test_runs_api covers that)
HOSTILE = "\x1b[2J\x1b[H\x1b]0;owned\x07\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\ me\r\x07\x01\x9b1m"


def test_safe_removes_escape_sequences_and_control_characters() -> None:
    assert safe(HOSTILE) == "click me"
    assert safe("a\tb\nc\x1b[31m red\x1b[0m") == "abc red"
    assert safe("| a |\n| b |\t", lines=True) == "| a |\n| b |\t"
    assert safe("plain, ünïcode ✓") == "plain, ünïcode ✓"


def test_progress_follows_the_events() -> None:
    p = RunProgress(label="demo")
    assert p.postfix() == "queued"
    p.apply({"seq": 0, "type": "status", "payload": {"state": "running", "phase": "pretrain", "step": 0,
                                                       "total_steps": 64}})
    p.apply({"seq": 1, "type": "metrics", "payload": {"step": 31, "values": {"loss": 0.5234, "imgs_per_s": 411.6,
                                                                            "grad_norm": 3.0}}})
    p.apply({"seq": 2, "type": "metrics", "payload": {"step": 31, "values": {"knn_top1": 41.27}}})
    p.apply({"seq": 3, "type": "metrics", "payload": {"step": 32, "values": {"loss": float("nan")}}})
    assert (p.step, p.total, p.last_seq) == (33, 64, 3)
    assert p.postfix() == "loss 0.5234, 412 img/s, kNN 41.3%"  # a NaN leaves the last number shown
    p.apply({"seq": 4, "type": "status", "payload": {"state": "failed", "message": "NaN loss"}})
    assert p.postfix().startswith("failed, loss")
    knn = RunProgress(label="knn")  # an evaluation: its own phase and total
    knn.apply({"seq": 0, "type": "status", "payload": {"state": "running", "phase": "knn", "step": 0,
                                                         "total_steps": 70000}})
    knn.apply({"seq": 1, "type": "metrics", "payload": {"step": 511, "values": {"images_encoded": 512}}})
    assert (knn.step, knn.total, knn.postfix()) == (512, 70000, "")


@pytest.fixture
def alice_live(live: LiveServer) -> Member:
    from server.core.db import make_engine

    engine = make_engine(live.app.state.settings.database)
    try:
        return make_member(engine, "alice", "team-a")
    finally:
        engine.dispose()


def submit(live: LiveServer, member: Member, **body: object) -> str:
    response = httpx.post(f"{live.url}/api/v1/runs", headers=member.headers,
                          json={"preset": "fmnist_tiny", "queue": "cli-test", **body})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def test_bars_draw_step_total_speed_loss_and_knn_until_the_run_ends(live: LiveServer, alice_live: Member,
                                                                    redis_client: redis.Redis) -> None:
    run_id = submit(live, alice_live, name=HOSTILE)
    push(redis_client, [ev(run_id, 0, "status", state="running", phase="pretrain", step=0, total_steps=10),
                        *[metrics_ev(run_id, s, s - 1, loss=1.0 / s, imgs_per_s=250.0) for s in range(1, 4)],
                        metrics_ev(run_id, 4, 2, knn_top1=12.5)])
    out = io.StringIO()
    bars = Bars(Client(live.url, alice_live.token), file=out, every_s=0.05, tty=True)  # a redraw every poll
    bars.add(run_id, HOSTILE)

    def seen(text: str) -> bool:
        return bars.poll() or text in out.getvalue()

    assert wait_until(lambda: seen("3/10"))
    drawn = out.getvalue()
    assert "loss 0.3333, 250 img/s, kNN 12.5%" in drawn and "click me" in drawn
    assert "\x1b[2J" not in drawn and "\x1b]" not in drawn and "\x07" not in drawn
    push(redis_client, [ev(run_id, 5, "status", state="succeeded", worker_id="w", attempt=1, final=True)])
    final = bars.wait()
    assert final[run_id]["status"] == "succeeded" and "succeeded" in out.getvalue()


def wait_until(predicate: object, tries: int = 400) -> bool:
    import time

    for _ in range(tries):
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_the_cli_prints_a_hostile_name_without_its_escapes(live: LiveServer, alice_live: Member,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run_id = submit(live, alice_live, name=HOSTILE, notes=HOSTILE)
    monkeypatch.setenv("MOCOLAB_URL", live.url)
    monkeypatch.setenv("MOCOLAB_TOKEN", alice_live.token)
    assert cli.run(["runs"]) == 0
    assert cli.run(["cancel", run_id]) == 0
    assert cli.run(["logs", run_id]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"{run_id}\s+pretrain\s+queued\s+click me", printed)
    assert re.search(rf"{run_id}\s+pretrain\s+cancelled\s+click me", printed)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", printed), repr(printed)
