"""A notification through the whole service, as `mocolab up` runs it: a real worker trains fmnist_tiny_nan (a NaN
gradient injected at step 12, the monitor's policy stops the run), the engine's non_finite alert goes through
Redis, the ingest and the outbox, and the server's delivery loop POSTs it to a webhook receiver on loopback;
the run's end (failed) follows as its own message."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mocolab.client import Client
from mocolab.stack import Stack
from server.embedded_redis import free_port

from stack_fixture import running_stack, wait_for

pytestmark = [pytest.mark.fmnist, pytest.mark.slow]


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with running_stack(tmp_path, monkeypatch, MOCOLAB_NOTIFY_ALLOW_NETS="127.0.0.1/32", NOTIFY_EVERY_S="0.5",
                       MOCOLAB_PUBLIC_URL="http://mocolab.example") as s:
        yield s


def test_an_engine_alert_reaches_the_teams_webhook(stack: Stack, hook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = hook
    c = Client(stack.url, stack.token)
    channel = c.post("/channels", {"name": "team-hook", "kind": "webhook", "url": url,
                                   "rules": {"run_ends": ["failed"], "evaluations": False}})
    run = c.submit({"kind": "pretrain", "preset": "fmnist_tiny_nan", "name": "nan",
                    "overrides": {"data.limit": 1024, "monitor.knn_every": 0}})
    wait_for(lambda: len(received) >= 2, "the alert and the run's end at the webhook", timeout=300)
    alert = next(m for m in received if m["kind"] == "alert")
    assert alert["alert"]["kind"] == "non_finite" and alert["run"]["id"] == run["id"]
    assert alert["link"] == f"http://mocolab.example/runs/{run['id']}?step={alert['step']}"
    assert alert["alert"]["remedy"]
    end = next(m for m in received if m["kind"] == "run_end")
    assert end["status"] == "failed" and end["run"]["id"] == run["id"]
    log = c.get(f"/channels/{channel['id']}/deliveries")
    assert sorted(d["kind"] for d in log) == ["alert", "run_end"] and all(d["status"] == "sent" for d in log)
    assert len([m for m in received if m["kind"] == "alert"]) == 1
