"""Credentials, team scoping, the login cookie, the non-loopback guard and the admin functions."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server import admin
from server.core.config import Settings
from server.core.db import utcnow, writer
from server.main import create_app
from server.models import ApiToken

from server_factories import Member, make_member, start_live, submit

RUN_ROUTES = [("GET", "/api/v1/runs/{id}"), ("PATCH", "/api/v1/runs/{id}"), ("POST", "/api/v1/runs/{id}/cancel"),
              ("POST", "/api/v1/runs/{id}/resume"), ("POST", "/api/v1/runs/{id}/evaluate"),
              ("GET", "/api/v1/runs/{id}/metrics"), ("GET", "/api/v1/runs/{id}/alerts"),
              ("GET", "/api/v1/runs/{id}/checkpoints"), ("GET", "/api/v1/runs/{id}/evals"),
              ("GET", "/api/v1/runs/{id}/events"), ("GET", "/api/v1/runs/{id}/export.csv"),
              ("GET", "/api/v1/runs/{id}/export.json"), ("GET", "/api/v1/runs/{id}/stream")]
# the one route besides /health that takes no credentials: an HMAC-signed link (tests/server/test_notify.py)
CHART = "/api/v1/notifications/{delivery_id}/chart.png"


class TestCredentials:
    def test_every_api_route_answers_401_without_credentials(self, client: TestClient) -> None:
        paths = client.get("/openapi.json").json()["paths"]
        checked = 0
        for path, operations in paths.items():
            if path == "/api/v1/health":
                continue
            for method in operations:
                response = client.request(method.upper(), path.replace("{run_id}", "x").replace("{kind}", "knn")
                                          .replace("{worker_id}", "w").replace("{token_id}", "1"))
                if path == CHART:  # signed instead (what a Slack message links to): no signature, no chart
                    assert response.status_code in (404, 422), (method, path, response.status_code)
                    continue
                assert response.status_code == 401, (method, path, response.status_code)
                assert response.headers["www-authenticate"] == "Bearer"
                checked += 1
        assert checked >= 20

    def test_unknown_token_is_401(self, client: TestClient) -> None:
        response = client.get("/api/v1/runs", headers={"Authorization": "Bearer mcl_nope"})
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid, revoked or expired token"

    def test_health_needs_no_token(self, client: TestClient) -> None:
        assert client.get("/api/v1/health").json()["status"] == "ok"

    def test_revoked_token_is_401(self, client: TestClient, engine: Engine, alice: Member) -> None:
        assert client.get("/api/v1/me", headers=alice.headers).status_code == 200
        with Session(writer(engine)) as s:
            assert admin.revoke_token(s, prefix=alice.token[:10]) == 1
        assert client.get("/api/v1/me", headers=alice.headers).status_code == 401


class TestTeamIsolation:
    def test_a_run_of_another_team_is_404_everywhere(self, client: TestClient, alice: Member, bob: Member) -> None:
        run = submit(client, alice)
        assert client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers).status_code == 200
        for method, path in RUN_ROUTES:
            body = {"kind": "knn"} if path.endswith("evaluate") else {} if method in ("POST", "PATCH") else None
            response = client.request(method, path.format(id=run["id"]), headers=bob.headers, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["detail"] == f"run {run['id']} not found"

    def test_lists_show_only_your_teams(self, client: TestClient, alice: Member, bob: Member) -> None:
        mine = submit(client, alice)
        theirs = submit(client, bob)
        listed = client.get("/api/v1/runs", headers=alice.headers).json()
        assert [r["id"] for r in listed["data"]] == [mine["id"]] and listed["count"] == 1
        assert theirs["team"] == "team-b" and mine["team"] == "team-a"
        assert [p["team"] for p in client.get("/api/v1/projects", headers=bob.headers).json()] == ["team-b"]

    def test_a_second_member_of_the_team_sees_the_run(self, client: TestClient, engine: Engine,
                                                       alice: Member) -> None:
        carol = make_member(engine, "carol", "team-a")
        run = submit(client, alice)
        assert client.get(f"/api/v1/runs/{run['id']}", headers=carol.headers).json()["owner"] == "alice"

    def test_submitting_to_a_team_you_are_not_in_is_404(self, client: TestClient, alice: Member, bob: Member) -> None:
        response = client.post("/api/v1/runs", json={"preset": "fmnist_tiny", "team": "team-b"}, headers=alice.headers)
        assert response.status_code == 404
        assert response.json()["detail"] == "team 'team-b' not found among yours"


class TestTokens:
    def test_token_is_shown_once_and_stored_as_its_hash(self, client: TestClient, engine: Engine,
                                                        alice: Member) -> None:
        created = client.post("/api/v1/tokens", json={"name": "ci"}, headers=alice.headers).json()
        listed = client.get("/api/v1/tokens", headers=alice.headers).json()
        assert all("token" not in t and "token_hash" not in t for t in listed)
        with Session(engine) as s:
            row = s.exec(select(ApiToken).where(ApiToken.id == created["id"])).one()
        assert row.token_hash == hashlib.sha256(created["token"].encode()).hexdigest()
        assert created["token"].startswith(row.prefix)
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 200
        assert client.delete(f"/api/v1/tokens/{created['id']}", headers=alice.headers).status_code == 204
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 401


def login_code(engine: Engine) -> str:
    """What `mocolab up` does: the local admin's token, and a one-time code minted with it."""
    with Session(writer(engine)) as s:
        return admin.create_login_code(s, token=admin.ensure_local_admin(s))


def tokens(engine: Engine) -> list[tuple[str, str, bool, int | None]]:
    with Session(engine) as s:
        return [(t.name, t.kind, t.revoked, t.parent_id) for t in s.exec(select(ApiToken).order_by(col(ApiToken.id)))]


class TestLogin:
    def test_login_link_sets_an_httponly_session_cookie(self, client: TestClient, engine: Engine) -> None:
        code = login_code(engine)
        assert code.startswith("mlc_")
        response = client.get(f"/login?code={code}", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert "mocolab_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie
        assert code not in cookie  # a session token of its own, not the login code
        me = client.get("/api/v1/me")  # the client keeps the cookie
        assert me.status_code == 200 and me.json()["user"]["name"] == "admin"
        assert [t["name"] for t in me.json()["teams"]] == ["default"]
        assert [(name, kind, parent) for name, kind, _, parent in tokens(engine)] == [
            ("local login", "api", None), ("login code", "login", 1), ("browser session", "session", 1)]

    def test_the_code_works_once(self, client: TestClient, engine: Engine) -> None:
        code = login_code(engine)
        assert client.get(f"/login?code={code}", follow_redirects=False).status_code == 303
        client.cookies.clear()
        again = client.get(f"/login?code={code}", follow_redirects=False)
        assert again.status_code == 401 and again.json()["detail"] == "invalid, used or expired login code"
        assert "set-cookie" not in again.headers
        browser = client.get(f"/login?code={code}", headers={"Accept": "text/html"}, follow_redirects=False)
        assert browser.status_code == 303 and browser.headers["location"] == "/login-page?error=invalid-code"
        assert [kind for _, kind, _, _ in tokens(engine)] == ["api", "login", "session"]  # one session only

    def test_a_code_is_no_bearer_token(self, client: TestClient, engine: Engine) -> None:
        code = login_code(engine)
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {code}"}).status_code == 401
        assert client.get(f"/login?token={code}", follow_redirects=False).status_code == 401
        assert client.get(f"/login?code={code}", follow_redirects=False).status_code == 303  # still unused

    def test_an_expired_code_is_401(self, client: TestClient, engine: Engine) -> None:
        code = login_code(engine)
        with Session(writer(engine)) as s:
            row = s.exec(select(ApiToken).where(ApiToken.kind == "login")).one()
            row.expires_at = utcnow() - timedelta(seconds=1)
            s.add(row)
            s.commit()
        response = client.get(f"/login?code={code}", follow_redirects=False)
        assert response.status_code == 401 and response.json()["detail"] == "invalid, used or expired login code"
        assert [kind for _, kind, _, _ in tokens(engine)] == ["api", "login"]

    def test_a_code_of_a_revoked_token_is_401(self, client: TestClient, engine: Engine) -> None:
        code = login_code(engine)
        with Session(writer(engine)) as s:
            assert admin.revoke_token(s, prefix="mcl_") == 1
        assert client.get(f"/login?code={code}", follow_redirects=False).status_code == 401
        assert [revoked for _, _, revoked, _ in tokens(engine)] == [True, True]

    def test_the_login_page_form_still_takes_a_token(self, client: TestClient, alice: Member) -> None:
        response = client.get(f"/login?token={alice.token}&next=/runs", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/runs"
        assert client.get("/api/v1/me").json()["user"]["name"] == "alice"

    def test_the_login_page_posts_its_token_in_a_json_body(self, client: TestClient, engine: Engine,
                                                            alice: Member) -> None:
        """Not in a URL, so not in the browser's history: the answer is the cookie alone, no redirect."""
        response = client.post("/login", json={"token": alice.token})
        assert response.status_code == 204 and "location" not in response.headers
        cookie = response.headers["set-cookie"]
        assert "mocolab_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert alice.token not in cookie
        assert client.get("/api/v1/me").json()["user"]["name"] == "alice"
        assert [kind for _, kind, _, _ in tokens(engine)][-1] == "session"

    def test_a_posted_bad_token_is_refused_and_sets_no_cookie(self, client: TestClient, engine: Engine,
                                                              alice: Member) -> None:
        wrong = client.post("/login", json={"token": "mcl_wrong"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        code = login_code(engine)  # a one-time code is no token either, and is not used up by trying
        assert client.post("/login", json={"token": code}).status_code == 401
        for body in ({}, {"token": ""}, {"token": "x" * 201}, {"token": alice.token, "next": "/"}):
            refused = client.post("/login", json=body)
            assert refused.status_code == 422 and "set-cookie" not in refused.headers, body
        assert refused.json()["detail"][0]["loc"] == ["body", "next"]
        # what a cross-site HTML form can send (text/plain, no preflight) is no JSON body: no session from it
        form = client.post("/login", content=f'{{"token": "{alice.token}"}}', headers={"Content-Type": "text/plain"})
        assert form.status_code == 422 and "set-cookie" not in form.headers
        assert "session" not in [kind for _, kind, _, _ in tokens(engine)]  # none was opened
        assert client.get(f"/login?code={code}", follow_redirects=False).status_code == 303

    def test_a_posted_token_with_a_session_cookie_must_come_from_this_server(self, client: TestClient,
                                                                               alice: Member) -> None:
        assert client.post("/login", json={"token": alice.token}).status_code == 204  # the cookie is set now
        cross = client.post("/login", json={"token": alice.token}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403 and "set-cookie" not in cross.headers
        same = client.post("/login", json={"token": alice.token}, headers={"Origin": "http://testserver"})
        assert same.status_code == 204 and "set-cookie" in same.headers

    def test_login_with_a_bad_token_is_401(self, client: TestClient) -> None:
        assert client.get("/login?token=mcl_wrong", follow_redirects=False).status_code == 401
        assert client.get("/login", follow_redirects=False).status_code == 401
        browser = client.get("/login?token=mcl_wrong", headers={"Accept": "text/html,*/*"}, follow_redirects=False)
        assert browser.status_code == 303 and browser.headers["location"] == "/login-page?error=invalid-token"
        assert "set-cookie" not in browser.headers

    def test_an_api_caller_mints_a_login_link(self, client: TestClient, engine: Engine, alice: Member) -> None:
        created = client.post("/api/v1/login-codes", headers=alice.headers)
        assert created.status_code == 201
        assert created.json()["url"] == f"/login?code={created.json()['code']}"
        assert client.get(created.json()["url"], follow_redirects=False).status_code == 303
        assert client.get("/api/v1/me").json()["user"]["name"] == "alice"

    def test_cookie_secure_setting(self, settings: Settings, engine: Engine) -> None:
        with TestClient(create_app(settings.model_copy(update={"cookie_secure": True}))) as c:
            response = c.get(f"/login?code={login_code(engine)}", follow_redirects=False)
        assert response.status_code == 303 and "Secure" in response.headers["set-cookie"]


class TestRevocationAndExpiry:
    def test_revoking_a_token_ends_its_sessions_and_children(self, client: TestClient, alice: Member,
                                                              bob: Member) -> None:
        child = client.post("/api/v1/tokens", json={"name": "child"}, headers=alice.headers).json()
        child_headers = {"Authorization": f"Bearer {child['token']}"}
        grandchild = client.post("/api/v1/tokens", json={"name": "grandchild"}, headers=child_headers).json()
        other = client.post("/api/v1/tokens", json={"name": "other"}, headers=alice.headers).json()
        link = client.post("/api/v1/login-codes", headers=child_headers).json()["url"]
        assert client.get(link, follow_redirects=False).status_code == 303
        assert client.get("/api/v1/me").status_code == 200  # the browser session of `child`
        assert client.delete(f"/api/v1/tokens/{child['id']}", headers=alice.headers).status_code == 204
        assert client.get("/api/v1/me").status_code == 401
        for token in (child["token"], grandchild["token"]):
            response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401 and response.json()["detail"] == "invalid, revoked or expired token"
        client.cookies.clear()
        for headers in (alice.headers, bob.headers, {"Authorization": f"Bearer {other['token']}"}):
            assert client.get("/api/v1/me", headers=headers).status_code == 200  # siblings and others keep working
        listed = {t["name"]: t["revoked"] for t in client.get("/api/v1/tokens", headers=alice.headers).json()}
        assert listed == {"tests": False, "child": True, "grandchild": True, "other": False, "login code": True,
                          "browser session": True}
        rows = client.get("/api/v1/tokens", headers=alice.headers).json()
        first = next(t["id"] for t in rows if t["name"] == "tests")
        assert {t["name"]: t["parent_id"] for t in rows} == {
            "tests": None, "child": first, "grandchild": child["id"], "other": first, "login code": child["id"],
            "browser session": child["id"]}

    def test_an_expired_token_is_401(self, client: TestClient, engine: Engine, alice: Member) -> None:
        created = client.post("/api/v1/tokens", json={"name": "ci", "expires_in": 3600}, headers=alice.headers)
        assert created.status_code == 201
        body = created.json()
        headers = {"Authorization": f"Bearer {body['token']}"}
        assert client.get("/api/v1/me", headers=headers).status_code == 200
        with Session(writer(engine)) as s:
            row = s.get(ApiToken, body["id"])
            assert row is not None and row.expires_at is not None
            assert timedelta(seconds=3590) < row.expires_at - utcnow() <= timedelta(seconds=3600)
            row.expires_at = utcnow() - timedelta(seconds=1)
            s.add(row)
            s.commit()
        response = client.get("/api/v1/me", headers=headers)
        assert response.status_code == 401 and response.json()["detail"] == "invalid, revoked or expired token"

    def test_a_child_never_outlives_its_parent(self, client: TestClient, alice: Member) -> None:
        parent = client.post("/api/v1/tokens", json={"name": "short", "expires_in": 600}, headers=alice.headers).json()
        later = (utcnow() + timedelta(days=3)).isoformat()
        child = client.post("/api/v1/tokens", json={"name": "child", "expires_at": later},
                            headers={"Authorization": f"Bearer {parent['token']}"}).json()
        assert child["expires_at"] == parent["expires_at"]

    @pytest.mark.parametrize(("body", "loc", "msg"), [
        ({"expires_in": 59}, ["body", "expires_in"], "greater than or equal to 60"),
        ({"expires_in": 10**12}, ["body", "expires_in"], "less than or equal to"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, ["body", "expires_at"], "expires_at must be in the future"),
        ({"expires_at": "2999-01-01T00:00:00"}, ["body", "expires_at"], "timezone"),
        ({"expires_in": 600, "expires_at": "2999-01-01T00:00:00Z"}, ["body"], "give expires_in or expires_at"),
    ])
    def test_bad_expiry_is_422(self, client: TestClient, alice: Member, body: dict[str, object], loc: list[str],
                               msg: str) -> None:
        response = client.post("/api/v1/tokens", json={"name": "x", **body}, headers=alice.headers)
        assert response.status_code == 422
        errors = response.json()["detail"]
        assert errors[0]["loc"] == loc and msg in errors[0]["msg"], errors
        assert [t["name"] for t in client.get("/api/v1/tokens", headers=alice.headers).json()] == ["tests"]


class TestNoSecretInLogs:
    def test_the_access_log_has_no_login_code_or_token(self, settings: Settings) -> None:
        lines: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                lines.append(record.getMessage())

        handler = Keep()
        server = start_live(settings, log_level="info")  # uvicorn sets up its loggers: add the handler after
        logging.getLogger("uvicorn.access").addHandler(handler)
        try:
            engine: Engine = server.app.state.engine  # type: ignore[attr-defined]
            code = login_code(engine)
            member = make_member(engine, "gina", "team-g")
            with httpx.Client(base_url=server.url) as http:
                assert http.get(f"/login?code={code}&next=/runs", follow_redirects=False).status_code == 303
                assert http.get(f"/login?next=/&token={member.token}", follow_redirects=False).status_code == 303
        finally:
            server.stop()
            logging.getLogger("uvicorn.access").removeHandler(handler)
        logins = [line for line in lines if "GET /login" in line]
        assert len(logins) == 2, lines
        assert "/login?code=[redacted]&next=/runs" in logins[0] and "/login?next=/&token=[redacted]" in logins[1]
        assert not any(code in line or member.token in line or code[4:] in line for line in lines)


class TestNonLoopbackBind:
    @pytest.fixture
    def public_client(self, settings: Settings, tmp_path: Path) -> TestClient:
        dist = tmp_path / "dist"
        dist.mkdir()
        (dist / "index.html").write_text("<!doctype html><title>ui</title>")
        app = create_app(settings.model_copy(update={"host": "0.0.0.0", "web_dist": dist}))
        return TestClient(app)

    def test_nothing_answers_without_a_token(self, public_client: TestClient) -> None:
        with public_client as c:
            for path in ("/", "/docs", "/openapi.json", "/runs/abc", "/index.html", "/api/v1/runs", "/api/v1/workers"):
                assert c.get(path).status_code == 401, path
            assert c.get("/api/v1/health").status_code == 200
            engine = c.app.state.engine  # type: ignore[attr-defined]
            member = make_member(engine, "dave", "team-d")
            assert c.get("/", headers=member.headers).text.startswith("<!doctype html>")
            assert c.get("/runs/abc", headers=member.headers).status_code == 200  # the SPA fallback
            assert c.get("/openapi.json", headers=member.headers).status_code == 200

    def test_loopback_serves_the_ui_openly(self, settings: Settings, tmp_path: Path) -> None:
        dist = tmp_path / "dist2"
        dist.mkdir()
        (dist / "index.html").write_text("<!doctype html><title>ui</title>")
        with TestClient(create_app(settings.model_copy(update={"web_dist": dist}))) as c:
            assert c.get("/").status_code == 200
            assert c.get("/some/deep/link").text.startswith("<!doctype html>")
            assert c.get("/api/v1/runs").status_code == 401


class TestAdmin:
    def test_admin_functions(self, engine: Engine) -> None:
        with Session(writer(engine), expire_on_commit=False) as s:
            user = admin.create_user(s, name="erin", email="erin@example.org")
            team = admin.create_team(s, name="vision")
            admin.add_member(s, user=user, team=team, role="admin")
            admin.create_project(s, team=team, name="vit-ablations")
            token = admin.create_token(s, user=user, name="laptop")
            with pytest.raises(admin.Conflict):
                admin.create_user(s, name="erin")
            users = dict((u.name, teams) for u, teams in admin.list_users(s))
            assert users["erin"] == ["vision"]
            assert [t.name for t in admin.list_tokens(s)] == ["laptop"]
            assert all(not hasattr(t, "token_hash") for t in admin.list_tokens(s))
        assert token.startswith("mcl_")


class TestAdminCli:
    def test_create_user_team_and_token_then_use_it(self, settings: Settings, client: TestClient,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
        assert admin.main(["create-user", "frank", "--team", "robots", "--token", "laptop"], settings) == 0
        out = capsys.readouterr().out
        token = out.split("token: ")[1].strip()
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me["user"]["name"] == "frank" and [t["name"] for t in me["teams"]] == ["robots"]
        assert admin.main(["list-tokens"], settings) == 0
        assert token[:10] in capsys.readouterr().out and token not in out.replace(f"token: {token}", "")
        assert admin.main(["create-user", "frank"], settings) == 1
        assert "user 'frank' already exists" in capsys.readouterr().err
        assert admin.main(["add-member", "frank", "nowhere"], settings) == 1
        assert capsys.readouterr().err == "mocolab admin: team 'nowhere' not found\n"
        assert admin.main(["revoke-token", token[:10]], settings) == 0
        assert capsys.readouterr().out == "1 token(s) revoked\n"
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert admin.main(["login-link"], settings) == 0
        assert capsys.readouterr().out.startswith("http://127.0.0.1:8000/login?code=mlc_")

    def test_create_token_that_expires(self, settings: Settings, client: TestClient,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        assert admin.main(["create-user", "gail"], settings) == 0
        assert admin.main(["create-token", "gail", "--name", "ci", "--expires-in", "2h"], settings) == 0
        token = capsys.readouterr().out.strip().splitlines()[-1]
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        with admin.admin_session(settings) as s:
            row = s.exec(select(ApiToken).where(ApiToken.name == "ci")).one()
            assert row.expires_at is not None
            lifetime = row.expires_at.replace(tzinfo=None) - row.created_at.replace(tzinfo=None)
            assert abs(lifetime.total_seconds() - 7200) < 60
        for bad in ["2x", "30", "0d", "-1h", "9999d", ""]:
            with pytest.raises(SystemExit) as exit_info:
                admin.main(["create-token", "gail", f"--expires-in={bad}"], settings)
            assert exit_info.value.code == 2
            assert "expected a duration from 60s to 3660d" in capsys.readouterr().err, bad
        with admin.admin_session(settings) as s:  # nothing minted by the refused calls
            assert len(s.exec(select(ApiToken).where(ApiToken.user_id == row.user_id)).all()) == 1
