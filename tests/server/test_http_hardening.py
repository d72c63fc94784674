"""The HTTP surface against the live app: security headers, the same-origin rule for cookie requests, the
docs without a CDN, capped bodies, a bad Last-Event-ID, event streams per token, run submissions per minute,
and CSV cells a spreadsheet would run. Each refusal is checked for its status, its message, and that nothing
stored changed."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from server import admin
from server.core.config import Settings
from server.core.db import writer
from server.core.hardening import UI_CSP
from server.events.ingest import Ingestor
from server.main import create_app
from server.models import ApiToken, Run

from server_factories import LiveServer, Member, drain, ev, make_member, push, start_live, submit


def run_count(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Run)).one())


def browser_login(client: TestClient, engine: Engine) -> None:
    """The client now holds a session cookie, as a browser that opened the login link."""
    with Session(writer(engine)) as s:
        code = admin.create_login_code(s, token=admin.ensure_local_admin(s))
    assert client.get(f"/login?code={code}", follow_redirects=False).status_code == 303


class TestSecurityHeaders:
    def test_every_answer_carries_them(self, settings: Settings, tmp_path: Path) -> None:
        dist = tmp_path / "dist"
        dist.mkdir()
        (dist / "index.html").write_text("<!doctype html><title>ui</title>")
        with TestClient(create_app(settings.model_copy(update={"web_dist": dist}))) as c:
            answers = [c.get("/"), c.get("/runs/x"), c.get("/api/v1/health"), c.get("/api/v1/runs"),
                       c.post("/api/v1/runs", content=b"x" * (2 << 20)), c.get("/openapi.json")]
        assert [r.status_code for r in answers] == [200, 200, 200, 401, 413, 200]
        for response in answers:
            assert response.headers["content-security-policy"] == UI_CSP
            assert "frame-ancestors 'none'" in UI_CSP and "script-src 'self';" in UI_CSP
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
            assert response.headers["x-frame-options"] == "DENY"


class TestDocs:
    def test_docs_load_nothing_from_a_cdn(self, client: TestClient) -> None:
        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "jsdelivr" not in page.text and "unpkg" not in page.text and "://" not in page.text
        assert "/openapi.json" in page.text
        assert client.get("/redoc").status_code == 404  # ReDoc only exists on a CDN
        assert client.get("/docs/oauth2-redirect").status_code == 200

    def test_swagger_ui_is_served_from_local_files(self, client: TestClient) -> None:
        pytest.importorskip("swagger_ui_bundle", reason="swagger-ui-bundle-v2 is not installed")
        page = client.get("/docs").text
        assert 'src="/docs/assets/swagger-ui-bundle.js"' in page and "/docs/assets/swagger-ui.css" in page
        script = client.get("/docs/assets/swagger-ui-bundle.js")
        assert script.status_code == 200 and len(script.content) > 100_000
        assert "'unsafe-inline'" in client.get("/docs").headers["content-security-policy"]  # its start-up script


class TestSameOrigin:
    def test_a_cookie_post_needs_this_servers_origin(self, client: TestClient, engine: Engine) -> None:
        browser_login(client, engine)
        before = client.get("/api/v1/projects").json()
        refused = [client.post("/api/v1/projects", json={"name": "p1"}),
                   client.post("/api/v1/projects", json={"name": "p2"}, headers={"Origin": "http://evil.example"}),
                   client.post("/api/v1/projects", json={"name": "p3"}, headers={"Origin": "null"}),
                   client.post("/api/v1/projects", json={"name": "p4"},
                               headers={"Referer": "http://testserver.evil.example/runs"})]
        assert [r.status_code for r in refused] == [403] * 4
        assert refused[0].json()["detail"].startswith("cross-site request refused: a request authenticated by the "
                                                      "session cookie needs an Origin or Referer header")
        assert refused[1].json()["detail"] == ("cross-site request refused: origin 'evil.example' is not this "
                                               "server ('testserver')")
        assert client.get("/api/v1/projects").json() == before  # nothing was created
        tokens = client.get("/api/v1/tokens").json()
        assert client.delete(f"/api/v1/tokens/{tokens[0]['id']}",
                             headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.get("/api/v1/me").status_code == 200  # still signed in: the DELETE did not happen
        assert client.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.get("/api/v1/me").status_code == 200
        ok = client.post("/api/v1/projects", json={"name": "p5"}, headers={"Origin": "http://testserver"})
        assert ok.status_code == 201
        ok = client.post("/api/v1/projects", json={"name": "p6"}, headers={"Referer": "http://testserver/runs"})
        assert ok.status_code == 201
        behind_a_proxy = {"Origin": "https://mocolab.example.org", "X-Forwarded-Host": "mocolab.example.org"}
        assert client.post("/api/v1/projects", json={"name": "p7"}, headers=behind_a_proxy).status_code == 201
        assert [p["name"] for p in client.get("/api/v1/projects").json()] == [p["name"] for p in before] + [
            "p5", "p6", "p7"]

    def test_token_requests_need_no_origin(self, client: TestClient, alice: Member) -> None:
        response = client.post("/api/v1/projects", json={"name": "cli"},
                               headers={**alice.headers, "Origin": "http://elsewhere.example"})
        assert response.status_code == 201
        assert client.post("/api/v1/projects", json={"name": "cli2"}, headers=alice.headers).status_code == 201


class TestBodyLimit:
    def test_a_declared_large_body_is_413(self, client: TestClient, engine: Engine, alice: Member) -> None:
        body = b'{"kind": "pretrain", "preset": "fmnist_tiny", "name": "' + b"x" * (1 << 20) + b'"}'
        response = client.post("/api/v1/runs", content=body, headers={**alice.headers,
                                                                        "Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json() == {"detail": "request body too large: at most 1048576 bytes"}
        assert run_count(engine) == 0

    def test_a_streamed_body_is_cut_off_at_the_cap(self, client: TestClient, engine: Engine, alice: Member) -> None:
        """No Content-Length: the app is driven over ASGI with an endless body; it stops reading at the cap."""
        app = client.app
        pulled = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            pulled += 1
            return {"type": "http.request", "body": b" " * 65536, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/api/v1/runs", "raw_path": b"/api/v1/runs", "query_string": b"",
                 "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 1), "app": app,
                 "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                             (b"authorization", f"Bearer {alice.token}".encode())]}
        client.portal.call(app, scope, receive, send)  # type: ignore[union-attr, arg-type]
        assert sent[0]["status"] == 413 and pulled == 17  # 16 chunks = 1 MiB, the 17th is over
        assert b"request body too large: at most 1048576 bytes" in b"".join(m.get("body", b"") for m in sent)
        assert run_count(engine) == 0

    def test_a_chunked_body_over_a_live_socket(self, settings: Settings, alice: Member, engine: Engine) -> None:
        server = start_live(settings.model_copy(update={"max_body_bytes": 4096}))
        try:
            def chunks() -> Iterator[bytes]:
                yield b'{"kind": "pretrain", "preset": "fmnist_tiny", "name": "'
                yield from (b"x" * 1024 for _ in range(16))
                yield b'"}'

            response = httpx.post(f"{server.url}/api/v1/runs", content=chunks(),
                                  headers={**alice.headers, "Content-Type": "application/json"})
            assert "content-length" not in response.request.headers  # it was sent chunked
            assert response.status_code == 413
            assert response.json()["detail"] == "request body too large: at most 4096 bytes"
            small = httpx.post(f"{server.url}/api/v1/runs", headers=alice.headers,
                               json={"kind": "pretrain", "preset": "fmnist_tiny", "queue": "q"})
            assert small.status_code == 201
        finally:
            server.stop()
        assert run_count(engine) == 1


def eventually(condition: Callable[[], bool], within_s: float = 20.0) -> bool:
    """Poll until `condition` holds (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alice_token_id(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(ApiToken.id).where(ApiToken.name == "tests")).first() or 0)


@pytest.fixture
def live_small(settings: Settings) -> Iterator[LiveServer]:
    server = start_live(settings.model_copy(update={"sse_per_token": 2}))
    yield server
    server.stop()


class TestStreams:
    def test_a_last_event_id_that_is_no_seq_is_400(self, client: TestClient, alice: Member) -> None:
        run = submit(client, alice)
        for bad in ("9" * 39, "-2", "abc", "1.5", str(2**62 + 1)):
            response = client.get(f"/api/v1/runs/{run['id']}/stream", headers={**alice.headers,
                                                                                "Last-Event-ID": bad})
            assert response.status_code == 400, bad
            assert response.json()["detail"] == "Last-Event-ID must be an event's seq, an integer from -1 to " \
                                                "4611686018427387904"

    def test_streams_per_token_are_capped_and_given_back(self, live_small: LiveServer, alice: Member) -> None:
        engine: Engine = live_small.app.state.engine  # type: ignore[attr-defined]
        bob = make_member(engine, "bob", "team-b")
        slots = live_small.app.state.stream_slots  # type: ignore[attr-defined]
        with httpx.Client(base_url=live_small.url, headers=alice.headers, timeout=30) as http, ExitStack() as open_:
            run = http.post("/api/v1/runs", json={"kind": "pretrain", "preset": "fmnist_tiny", "queue": "q"}).json()
            first = open_.enter_context(http.stream("GET", "/api/v1/stream"))
            second = open_.enter_context(http.stream("GET", f"/api/v1/runs/{run['id']}/stream"))
            assert first.status_code == second.status_code == 200
            third = http.get("/api/v1/stream")
            assert third.status_code == 429 and third.headers["retry-after"] == "1"
            assert third.json()["detail"] == "too many open event streams for this token (at most 2); close one first"
            assert http.get(f"/api/v1/runs/{run['id']}/stream", headers={"Last-Event-ID": "x"}).status_code == 400
            bobs = httpx.Client(base_url=live_small.url, headers={"Authorization": f"Bearer {bob.token}"})
            with bobs, bobs.stream("GET", "/api/v1/stream") as theirs:
                assert theirs.status_code == 200  # another token has slots of its own
            first.close()  # the server sees the disconnect (within a second at most) and gives the slot back
            assert eventually(lambda: slots.held == {alice_token_id(engine): 1}), slots.held
            with http.stream("GET", "/api/v1/stream") as again:
                assert again.status_code == 200
        assert eventually(lambda: slots.held == {}), slots.held  # every stream closed: every slot is back


class TestSubmissionRate:
    def test_submissions_per_user_are_capped(self, settings: Settings, engine: Engine, redis_client: redis.Redis,
                                            alice: Member, bob: Member) -> None:
        with TestClient(create_app(settings.model_copy(update={"submit_per_minute": 2}))) as c:
            assert [submit(c, alice)["owner"] for _ in range(2)] == ["alice", "alice"]
            refused = c.post("/api/v1/runs", json={"kind": "pretrain", "preset": "fmnist_tiny", "queue": "q"},
                             headers=alice.headers)
            assert refused.status_code == 429
            wait = int(refused.headers["retry-after"])
            assert 1 <= wait <= 30  # one token a 30 s at two a minute
            assert refused.json()["detail"] == f"too many run submissions: at most 2 a minute; retry in {wait} s"
            assert run_count(engine) == 2
            study = c.post("/api/v1/studies", json={"name": "s", "preset": "fmnist_tiny", "queue": "q"},
                           headers=alice.headers)
            assert study.status_code == 429 and run_count(engine) == 2
            assert submit(c, bob)["owner"] == "bob"  # a bucket per user
        assert redis_client.exists("mocolab:ratelimit:submit:1")


class TestCsvCells:
    def test_formula_cells_are_escaped(self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor,
                                       settings: Settings, alice: Member) -> None:
        run = submit(client, alice, name="=HYPERLINK(\"http://x\")", project="-2+3")
        ckpt = str(settings.storage_root / run["id"] / "last.pt")
        push(redis_client, [ev(run["id"], 0, "status", state="running", step=0, total_steps=1),
                            ev(run["id"], 1, "checkpoint", step=1, path=ckpt),
                            ev(run["id"], 2, "status", state="succeeded", worker_id="w", attempt=1)])
        drain(ingestor)
        knn = client.post(f"/api/v1/runs/{run['id']}/evaluate", json={"kind": "knn"}, headers=alice.headers)
        assert knn.status_code == 201, knn.text
        push(redis_client, [ev(knn.json()["id"], 0, "status", state="running", step=0, total_steps=1),
                            ev(knn.json()["id"], 1, "eval_result", protocol="knn", top1=-1.5, top5=3.0),
                            ev(knn.json()["id"], 2, "status", state="succeeded", worker_id="w", attempt=1)])
        drain(ingestor)
        rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/leaderboard.csv", headers=alice.headers).text)))
        assert len(rows) == 1
        assert rows[0]["name"] == "'=HYPERLINK(\"http://x\")" and rows[0]["project"] == "'-2+3"
        assert rows[0]["top1"] == "-1.50"  # a number stays a number
        assert client.get("/api/v1/runs/" + run["id"], headers=alice.headers).json()["name"].startswith("=")
