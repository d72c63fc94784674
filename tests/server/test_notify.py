"""Notifications end to end with real receivers on loopback: a threaded HTTP server for the JSON webhook and the
Slack-style webhook, and aiosmtpd's SMTP server with STARTTLS (a certificate made here) and AUTH. Events go in
through the real ingest (Redis stream -> projections -> outbox) and out through the delivery loop's own pass.
SQLite, and PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import io
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.core.config import Settings
from server.core.db import utcnow, writer
from server.embedded_redis import free_port
from server.events.ingest import Ingestor
from server.main import create_app
from server.models import NotifyChannel, NotifyDelivery, Run
from server.notify.delivery import Deliverer
from server.notify.outbox import NotifyEvent, enqueue
from server.runs import lifecycle

from server_factories import Member, drain, ev, metrics_ev, push, submit

API = "/api/v1"
PUBLIC = "http://mocolab.example"
SMTP_USER, SMTP_PASSWORD = "mailer", "s3cret-pass"


# ---------------------------------------------------------------- receivers
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers `statuses` in turn (then 200); it can be
    stopped and started again on the same port (a receiver down for a while)."""

    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.sessions.append({"tls": session.ssl is not None, "authenticated": session.authenticated,
                              "rcpt": list(envelope.rcpt_tos)})
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))  # type: ignore[arg-type]
        return "250 2.0.0 queued as mocolab-test"


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "smtp.crt", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mailbox, int, Path]]:
    """aiosmtpd on loopback: STARTTLS required before AUTH, AUTH required before mail."""
    cert, key = _certificate(tmp_path_factory.mktemp("smtp"))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(), SMTP_PASSWORD.encode())
        return AuthResult(success=ok, handled=False)  # not handled: the server answers 535 itself

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True,
                            authenticator=authenticate, auth_required=True, auth_require_tls=True)
    controller.start()
    yield box, port, cert
    controller.stop()


@pytest.fixture
def settings(settings: Settings, smtp: tuple[Mailbox, int, Path]) -> Settings:
    _box, port, cert = smtp
    return settings.model_copy(update={
        "public_url": PUBLIC, "notify_allow_nets": "127.0.0.1/32", "notify_backoff_s": 1.0,
        "notify_backoff_max_s": 60.0, "notify_timeout_s": 5.0, "notify_max_attempts": 5,
        "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_user": SMTP_USER, "smtp_password": SMTP_PASSWORD,
        "smtp_starttls": True, "smtp_ca_file": cert, "smtp_from": "mocolab@example.org", "smtp_timeout_s": 5.0})


@pytest.fixture
def mailbox(smtp: tuple[Mailbox, int, Path]) -> Mailbox:
    box = smtp[0]
    box.messages.clear()
    box.sessions.clear()
    return box


# ---------------------------------------------------------------- helpers
def channel(client: TestClient, member: Member, **body: Any) -> dict[str, Any]:
    response = client.post(f"{API}/channels", json=body, headers=member.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def deliverer(client: TestClient) -> Deliverer:
    found: Deliverer = client.app.state.notifier  # type: ignore[attr-defined]
    return found


def alert(run_id: str, seq: int, kind: str = "loss_spike", step: int = 40, severity: str = "warning",
          **extra: Any) -> dict[str, Any]:
    return ev(run_id, seq, "alert", kind=kind, step=step, metric="loss", value=9.5, baseline=1.2, threshold=4.0,
              severity=severity, message=f"{kind} at step {step}: loss 9.5 vs median 1.2",
              remedy="lower the learning rate or freeze the patch projection",
              evidence={"z": 12.5}, last_healthy_checkpoint="runs/x/step_30.pt", **extra)


def curve(run_id: str, n: int = 60) -> list[dict[str, Any]]:
    """A running run with a loss curve of n steps (seq 0..n)."""
    return [ev(run_id, 0, "status", state="running", step=0, total_steps=1000)] + [
        metrics_ev(run_id, s + 1, s, loss=1.0 + 0.01 * (s % 5) + (8.0 if s == 40 else 0.0)) for s in range(n)]


def deliveries(client: TestClient, member: Member, channel_id: int) -> list[dict[str, Any]]:
    response = client.get(f"{API}/channels/{channel_id}/deliveries", headers=member.headers)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


# ---------------------------------------------------------------- the whole path
def test_an_alert_reaches_each_kind_of_channel_once_with_its_evidence_and_chart(
        client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member, receiver: Receiver,
        mailbox: Mailbox, engine: Engine) -> None:
    hook = channel(client, alice, name="hook", kind="webhook", url=receiver.url("/hook/T0PSECRETPATH"),
                   headers={"Authorization": "Bearer hook-token-123"}, signing_secret="sign-me-please")
    slack = channel(client, alice, name="slack", kind="slack", url=receiver.url("/services/T0/B0/SLACKSECRET"))
    mail = channel(client, alice, name="mail", kind="email", emails=["ops@example.org", "ml@example.org"])
    assert hook["target_hint"].startswith(f"http://127.0.0.1:{receiver.port}/…") and hook["has_signing_secret"]
    run = submit(client, alice, name="tiny")
    push(redis_client, [*curve(run["id"]), alert(run["id"], 61)])
    drain(ingestor)

    assert deliverer(client).step() == 3
    assert deliverer(client).step() == 0  # sent: nothing is due any more
    by_path = {urlsplit(r.path).path.split("/")[1]: r for r in receiver.requests}
    assert len(receiver.requests) == 2 and set(by_path) == {"hook", "services"}

    # the generic webhook: the documented document, signed, with the channel's header
    got = by_path["hook"]
    body = got.json()
    assert got.headers["authorization"] == "Bearer hook-token-123"
    expected = "sha256=" + hmac.new(b"sign-me-please", got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-mocolab-signature"] == expected and got.headers["x-mocolab-event"] == "alert"
    assert body["schema"] == "mocolab.notification/1" and body["kind"] == "alert" and body["team"] == "team-a"
    assert body["run"] == {"id": run["id"], "name": "tiny"} and body["step"] == 40 and body["suppressed"] == 0
    assert body["alert"]["kind"] == "loss_spike" and body["alert"]["value"] == 9.5
    assert body["alert"]["baseline"] == 1.2 and body["alert"]["threshold"] == 4.0
    assert body["alert"]["remedy"].startswith("lower the learning rate")
    assert body["alert"]["last_healthy_checkpoint"] == "runs/x/step_30.pt"
    assert body["evidence"] == "loss = 9.5 vs baseline 1.2 (threshold 4) at step 40"
    assert body["link"] == f"{PUBLIC}/runs/{run['id']}?step=40"
    chart_url = body["chart_url"]
    assert chart_url.startswith(f"{PUBLIC}/api/v1/notifications/")

    # the chart the link serves, without a login; a wrong signature is a 404
    path = chart_url.removeprefix(PUBLIC)
    image = png(client.get(path).content)
    assert image.size == (640, 260)
    assert image.convert("RGB").getpixel((0, 0)) == (255, 255, 255)
    assert any(px == (220, 38, 38) for px in image.convert("RGB").get_flattened_data())  # the step's red marker
    assert client.get(path[:-4] + "0000").status_code == 404
    assert client.get(f"{API}/channels").status_code == 401  # the chart needs no login; the channels do
    assert client.get(path.split("?")[0]).status_code == 404
    assert client.get(path.split("?")[0] + "?sig=%C3%A9t%C3%A9").status_code == 404  # not even ASCII

    # Slack: text, a section of fields, the chart as an image block, a button to the run at the step
    blocks = by_path["services"].json()["blocks"]
    assert by_path["services"].json()["text"].startswith("Warning: loss_spike in run tiny")
    image_block = next(b for b in blocks if b["type"] == "image")
    assert image_block["image_url"].startswith(f"{PUBLIC}/api/v1/notifications/")
    assert "?sig=" in image_block["image_url"]
    fields = [f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", [])]
    assert any(f.startswith("*Evidence*") and "9.5 vs baseline 1.2" in f for f in fields)
    assert any(f.startswith("*Remedy*") for f in fields)
    assert blocks[-1]["elements"][0]["url"] == f"{PUBLIC}/runs/{run['id']}?step=40"
    assert png(client.get(image_block["image_url"].removeprefix(PUBLIC)).content).size == (640, 260)

    # e-mail: through STARTTLS and AUTH, text + HTML with the chart inline
    assert len(mailbox.messages) == 1
    assert mailbox.sessions[0] == {"tls": True, "authenticated": True, "rcpt": ["ops@example.org", "ml@example.org"]}
    msg = mailbox.messages[0]
    assert msg["Subject"] == "[mocolab] Warning: loss_spike in run tiny" and msg["From"] == "mocolab@example.org"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Evidence: loss = 9.5 vs baseline 1.2" in text and f"{PUBLIC}/runs/{run['id']}?step=40" in text
    assert "Last healthy checkpoint: runs/x/step_30.pt" in text
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    image_part = next(p for p in related.walk() if p.get_content_type() == "image/png")
    cid = image_part["Content-ID"].strip("<>")
    assert f"cid:{cid}" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert png(image_part.get_content()).size == (640, 260)

    # the log: one delivery per channel, sent at the first attempt, with the receiver's answer
    for ch, code in ((hook, 200), (slack, 200), (mail, 250)):
        [d] = deliveries(client, alice, ch["id"])
        assert d["status"] == "sent" and d["attempt_count"] == 1 and d["kind"] == "alert" and d["step"] == 40
        assert d["attempts"][0]["ok"] and d["attempts"][0]["code"] == code


def test_a_burst_of_one_kind_is_one_message_with_the_rest_counted(
        client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member, receiver: Receiver) -> None:
    ch = channel(client, alice, name="hook", kind="webhook", url=receiver.url("/hook"), cooldown_s=1800)
    run = submit(client, alice)
    push(redis_client, [*curve(run["id"], 10), *(alert(run["id"], 11 + i, step=5 + i) for i in range(50)),
                        alert(run["id"], 61, kind="grad_spike", step=9)])
    drain(ingestor)
    deliverer(client).step()
    kinds = sorted((r.json()["alert"]["kind"], r.json()["suppressed"]) for r in receiver.requests)
    assert kinds == [("grad_spike", 0), ("loss_spike", 49)]
    push(redis_client, [alert(run["id"], 62 + i, step=60 + i) for i in range(5)])  # later, within the cooldown
    drain(ingestor)
    assert deliverer(client).step() == 0 and len(receiver.requests) == 2
    log = {d["title"].split(":")[1].split()[0]: d for d in deliveries(client, alice, ch["id"])}
    assert log["loss_spike"]["suppressed"] == 54 and log["grad_spike"]["suppressed"] == 0

    other = submit(client, alice)  # another run's alert is its own incident
    push(redis_client, [alert(other["id"], 0)])
    drain(ingestor)
    assert deliverer(client).step() == 1 and len(receiver.requests) == 3


def test_a_receiver_down_for_a_while_gets_the_message_after_back_off(
        client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member, receiver: Receiver,
        engine: Engine) -> None:
    ch = channel(client, alice, name="hook", kind="webhook", url=receiver.url("/hook"))
    run = submit(client, alice)
    receiver.stop()  # down: connections refused
    push(redis_client, [alert(run["id"], 0)])
    drain(ingestor)
    d = deliverer(client)
    assert d.step() == 1
    assert d.step() == 0  # backing off: not due yet
    with Session(engine) as s:
        row = s.exec(select(NotifyDelivery)).one()
        assert row.status == "pending" and row.attempts == 1 and row.next_attempt_at > utcnow()
        first_retry = row.next_attempt_at
    assert d.step(now=first_retry) == 1  # still down
    receiver.start()
    receiver.statuses = [503]  # up, but failing once more
    with Session(engine) as s:
        second_retry = s.exec(select(NotifyDelivery)).one().next_attempt_at
    assert d.step(now=second_retry) == 1
    with Session(engine) as s:
        third_retry = s.exec(select(NotifyDelivery)).one().next_attempt_at
    assert d.step(now=third_retry) == 1
    assert len(receiver.requests) == 2 and receiver.requests[-1].json()["kind"] == "alert"

    [log] = deliveries(client, alice, ch["id"])
    assert log["status"] == "sent" and log["attempt_count"] == 4 and log["next_attempt_at"] is None
    tries = log["attempts"]
    assert [a["ok"] for a in tries] == [False, False, False, True]
    assert "ConnectError" in tries[0]["error"] and tries[0]["code"] is None
    assert tries[2]["code"] == 503 and tries[2]["error"] == "HTTP 503" and tries[3]["code"] == 200
    # exponential back-off with jitter: the wait after try n is base * 2^(n-1) times [0.5, 1], base 1 s
    waits = [(retry - dt.datetime.fromisoformat(a["time"])).total_seconds()
             for retry, a in zip((first_retry, second_retry, third_retry), tries, strict=False)]
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 2.0 <= waits[2] <= 4.0


def test_a_message_out_of_tries_is_failed_and_a_4xx_is_not_retried(
        client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member, receiver: Receiver,
        engine: Engine) -> None:
    gone = channel(client, alice, name="gone", kind="webhook", url=receiver.url("/gone"))
    run = submit(client, alice)
    receiver.statuses = [404]
    push(redis_client, [alert(run["id"], 0)])
    drain(ingestor)
    deliverer(client).step()
    [log] = deliveries(client, alice, gone["id"])
    assert log["status"] == "failed" and log["attempt_count"] == 1 and log["last_error"] == "HTTP 404"

    client.patch(f"{API}/channels/{gone['id']}", json={"enabled": False}, headers=alice.headers)
    flaky = channel(client, alice, name="flaky", kind="webhook", url=receiver.url("/flaky"))
    receiver.statuses = [500] * 10
    push(redis_client, [alert(run["id"], 1, kind="grad_spike")])
    drain(ingestor)
    far = utcnow() + dt.timedelta(days=1)
    for _ in range(5):
        deliverer(client).step(now=far)
    [log] = deliveries(client, alice, flaky["id"])
    assert log["status"] == "failed" and log["attempt_count"] == 5 and log["last_error"] == "HTTP 500"
    assert deliverer(client).step(now=far) == 0


def test_a_restarted_server_sends_nothing_twice(
        client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member, receiver: Receiver,
        settings: Settings, engine: Engine) -> None:
    channel(client, alice, name="hook", kind="webhook", url=receiver.url("/hook"))
    run = submit(client, alice)
    events = [*curve(run["id"], 5), alert(run["id"], 6)]
    push(redis_client, events)
    drain(ingestor)
    assert deliverer(client).step() == 1 and len(receiver.requests) == 1
    # a row claimed by a process that died before sending: due again once its lease is over
    with Session(writer(engine)) as s:
        assert enqueue(s, s.exec(select(Run)).one().team_id, None, NotifyEvent(
            kind="alert", title="late", incident="late", alert_kind="stall", severity="warning"))
        s.commit()
    assert deliverer(client).claim(utcnow()) and len(receiver.requests) == 1

    with TestClient(create_app(settings)) as again:  # a new server over the same database
        d = deliverer(again)
        assert d.step() == 0  # the sent one is not picked up; the claimed one is leased
        push(redis_client, events)  # and a worker replaying its events makes no new message
        drain(ingestor)
        assert d.step(now=utcnow() + dt.timedelta(seconds=d.lease_s + 1)) == 1
    titles = [r.json()["title"] for r in receiver.requests]
    assert titles == [f"Warning: loss_spike in run {run['id']}", "late"]


def test_rules_choose_what_each_channel_gets(
        client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member, receiver: Receiver,
        engine: Engine) -> None:
    channel(client, alice, name="critical-nan", kind="webhook", url=receiver.url("/critical"),
                       rules={"alert_kinds": ["non_finite"], "severities": ["critical"], "run_ends": [],
                              "evaluations": False, "studies": False})
    channel(client, alice, name="ends", kind="webhook", url=receiver.url("/ends"),
                   rules={"alert_kinds": [], "run_ends": ["failed", "lost"], "evaluations": True})
    other_project = channel(client, alice, name="elsewhere", kind="webhook", url=receiver.url("/elsewhere"),
                            project="another")
    ok, bad, lost = submit(client, alice), submit(client, alice), submit(client, alice)
    push(redis_client, [
        ev(ok["id"], 0, "status", state="running"),
        alert(ok["id"], 1, kind="loss_spike", severity="warning"),
        alert(ok["id"], 2, kind="non_finite", severity="warning"),
        alert(ok["id"], 3, kind="non_finite", severity="critical", step=41),
        ev(ok["id"], 4, "eval_result", protocol="knn", top1=71.5, top5=93.0),
        ev(ok["id"], 5, "status", state="succeeded", step=1000),
        ev(bad["id"], 0, "status", state="running"),
        ev(bad["id"], 1, "status", state="failed", error="CUDA out of memory"),
        ev(lost["id"], 0, "status", state="running")])
    drain(ingestor)
    with Session(writer(engine)) as s:  # the watchdog's path: lost, re-queued (not through the ingest)
        row = s.get(Run, lost["id"])
        assert row is not None
        assert lifecycle.lose(row, "watchdog", "lost: no heartbeat for 61 s", max_attempts=3) == "requeued"
        s.commit()
    deliverer(client).step()
    got: dict[str, list[dict[str, Any]]] = {}
    for r in receiver.requests:
        got.setdefault(r.path, []).append(r.json())
    assert [(b["kind"], b["alert"]["kind"], b["step"]) for b in got["/critical"]] == [("alert", "non_finite", 41)]
    summary = sorted((b["kind"], b["status"], b["run"]["id"]) for b in got["/ends"])
    assert summary == sorted([("run_end", "failed", bad["id"]), ("run_end", "lost", lost["id"]),
                              ("evaluation", None, ok["id"])])
    failed = next(b for b in got["/ends"] if b["status"] == "failed")
    assert failed["title"] == f"Run {bad['id']} failed" and "CUDA out of memory" in failed["summary"]
    evaluation = next(b for b in got["/ends"] if b["kind"] == "evaluation")
    assert evaluation["details"]["top1"] == 71.5 and "top-1 71.50%" in evaluation["title"]
    assert "/elsewhere" not in got  # the channel of another project hears nothing of this one's runs
    assert other_project["project"] == "another"
    assert deliverer(client).step() == 0


def test_a_study_that_ends_is_announced_once(client: TestClient, redis_client: redis.Redis, ingestor: Ingestor,
                                             alice: Member, receiver: Receiver) -> None:
    channel(client, alice, name="hook", kind="webhook", url=receiver.url("/hook"),
            rules={"alert_kinds": [], "run_ends": [], "evaluations": False, "studies": True})
    response = client.post(f"{API}/studies", headers=alice.headers, json={
        "name": "lr", "preset": "fmnist_tiny", "queue": "testq", "evaluations": [],
        "axes": [{"path": "optim.base_lr", "values": [1e-4, 2e-4]}]})
    assert response.status_code == 201, response.text
    runs = [r["run"]["id"] for r in response.json()["rows"]]
    push(redis_client, [ev(runs[0], 0, "status", state="running"), ev(runs[0], 1, "status", state="succeeded")])
    drain(ingestor)
    deliverer(client).step()
    assert receiver.requests == []  # one run still going
    push(redis_client, [ev(runs[1], 0, "status", state="running"), ev(runs[1], 1, "status", state="failed")])
    drain(ingestor)
    deliverer(client).step()
    [study] = [r.json() for r in receiver.requests]
    assert study["kind"] == "study" and study["title"] == "Study lr finished"
    assert study["details"]["statuses"] == {"succeeded": 1, "failed": 1}
    assert study["link"] == f"{PUBLIC}/studies/{response.json()['id']}"


# ---------------------------------------------------------------- the API
def test_secrets_are_write_only_and_sealed_at_rest(client: TestClient, alice: Member, receiver: Receiver,
                                                   engine: Engine) -> None:
    secrets = ["/hook/T0PSECRETPATH", "hook-token-123", "sign-me-please", "NEWSECRETPATH"]
    ch = channel(client, alice, name="hook", kind="webhook", url=receiver.url("/hook/T0PSECRETPATH"),
                 headers={"Authorization": "Bearer hook-token-123"}, signing_secret="sign-me-please")
    answers = [json.dumps(ch)]
    answers.append(client.get(f"{API}/channels", headers=alice.headers).text)
    answers.append(client.get(f"{API}/channels/{ch['id']}", headers=alice.headers).text)
    answers.append(client.post(f"{API}/channels/{ch['id']}/test", headers=alice.headers).text)
    receiver.statuses = [500]
    answers.append(client.post(f"{API}/channels/{ch['id']}/test", headers=alice.headers).text)
    answers.append(client.get(f"{API}/channels/{ch['id']}/deliveries", headers=alice.headers).text)
    patched = client.patch(f"{API}/channels/{ch['id']}", json={"url": receiver.url("/hook/NEWSECRETPATH")},
                           headers=alice.headers)
    assert patched.status_code == 200 and patched.json()["has_signing_secret"]  # a new URL keeps the others
    answers.append(patched.text)
    for answer in answers:
        for secret in secrets:
            assert secret not in answer
    assert receiver.requests[-1].headers["authorization"] == "Bearer hook-token-123"
    with Session(engine) as s:  # sealed in the database: the plain text is nowhere in the row
        row = s.get(NotifyChannel, ch["id"])
        assert row is not None and row.secret is not None
        stored = json.dumps(row.model_dump(mode="json"))
        assert all(secret not in stored for secret in secrets)


def test_bad_input_is_a_422_at_the_field(client: TestClient, alice: Member, receiver: Receiver,
                                         settings: Settings) -> None:
    def refused(body: dict[str, Any], loc: list[Any]) -> str:
        response = client.post(f"{API}/channels", json={"name": "x", "kind": "webhook", **body},
                               headers=alice.headers)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc, response.json()
        message: str = response.json()["detail"][0]["msg"]
        return message

    assert "http and https" in refused({"url": "ftp://127.0.0.1/x"}, ["body", "url"])
    assert "http and https" in refused({"url": "file:///etc/passwd"}, ["body", "url"])
    assert "private" in refused({"url": "http://10.1.2.3/hook"}, ["body", "url"])
    assert "private" in refused({"url": "http://169.254.169.254/latest/meta-data"}, ["body", "url"])
    assert "private" in refused({"url": "http://127.0.0.2:9/x"}, ["body", "url"])  # loopback beyond the allowance
    assert "private" in refused({"url": "http://[::1]/x"}, ["body", "url"])
    assert "private" in refused({"url": "http://[::ffff:10.0.0.1]/x"}, ["body", "url"])
    assert "does not resolve" in refused({"url": "http://no-such-host.invalid/x"}, ["body", "url"])
    assert "user or password" in refused({"url": "http://u:p@127.0.0.1/x"}, ["body", "url"])
    refused({}, ["body", "url"])
    refused({"url": receiver.url("/x"), "emails": ["a@example.org"]}, ["body", "emails"])
    refused({"kind": "email", "emails": ["a@example.org"], "url": receiver.url("/x")}, ["body", "url"])
    refused({"kind": "email", "emails": ["not an address"]}, ["body", "emails"])
    refused({"kind": "slack", "url": receiver.url("/x"), "signing_secret": "12345678"}, ["body", "signing_secret"])
    refused({"url": receiver.url("/x"), "headers": {"Bad\r\nName": "x"}}, ["body", "headers"])
    refused({"url": receiver.url("/x"), "headers": {"X-Token": "a\r\nInjected: yes"}}, ["body", "headers"])
    refused({"url": receiver.url("/x"), "headers": {"Host": "evil"}}, ["body", "headers"])
    assert "unknown alert kind" in refused({"url": receiver.url("/x"), "rules": {"alert_kinds": ["loss_spik"]}},
                                           ["body", "rules", "alert_kinds", 0])
    refused({"url": receiver.url("/x"), "rules": {"severities": ["fatal"]}}, ["body", "rules", "severities", 0])
    refused({"url": receiver.url("/x"), "cooldown_s": -1}, ["body", "cooldown_s"])
    refused({"kind": "sms", "url": receiver.url("/x")}, ["body", "kind"])
    channel(client, alice, name="x", kind="webhook", url=receiver.url("/x"))
    refused({"url": receiver.url("/x")}, ["body", "name"])

    no_smtp = create_app(settings.model_copy(update={"smtp_host": None}))
    with TestClient(no_smtp) as c:
        response = c.post(f"{API}/channels", json={"name": "m", "kind": "email", "emails": ["a@example.org"]},
                          headers=alice.headers)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "kind"]


def test_another_teams_channel_is_a_404_and_hears_nothing(
        client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member, bob: Member,
        receiver: Receiver) -> None:
    mine = channel(client, alice, name="hook", kind="webhook", url=receiver.url("/alice"))
    channel(client, bob, name="hook", kind="webhook", url=receiver.url("/bob"))  # same name, other team
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test"), ("GET", "/deliveries")):
        response = client.request(method, f"{API}/channels/{mine['id']}{path}", headers=bob.headers,
                                  json={"enabled": False} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path, response.text)
    assert [c["name"] for c in client.get(f"{API}/channels", headers=bob.headers).json()] == ["hook"]
    assert client.get(f"{API}/channels/{mine['id']}", headers=alice.headers).status_code == 200
    run = submit(client, alice)
    push(redis_client, [alert(run["id"], 0)])
    drain(ingestor)
    deliverer(client).step()
    assert [r.path for r in receiver.requests] == ["/alice"]
    assert client.delete(f"{API}/channels/{mine['id']}", headers=alice.headers).status_code == 204
    assert client.get(f"{API}/channels/{mine['id']}", headers=alice.headers).status_code == 404


def test_the_test_button_sends_through_the_real_path(client: TestClient, alice: Member, receiver: Receiver,
                                                     mailbox: Mailbox) -> None:
    hook = channel(client, alice, name="hook", kind="webhook", url=receiver.url("/hook"))
    sent = client.post(f"{API}/channels/{hook['id']}/test", headers=alice.headers)
    assert sent.status_code == 200, sent.text
    d = sent.json()
    assert d["status"] == "sent" and d["kind"] == "test" and d["attempts"][0]["code"] == 200
    assert receiver.requests[0].json()["kind"] == "test"
    receiver.stop()
    failed = client.post(f"{API}/channels/{hook['id']}/test", headers=alice.headers).json()
    assert failed["status"] == "failed" and failed["attempt_count"] == 1 and "ConnectError" in failed["last_error"]
    mail = channel(client, alice, name="mail", kind="email", emails=["ops@example.org"])
    by_mail = client.post(f"{API}/channels/{mail['id']}/test", headers=alice.headers).json()
    assert by_mail["status"] == "sent" and by_mail["attempts"][0]["code"] == 250, by_mail["attempts"]
    assert "queued as mocolab-test" in by_mail["attempts"][0]["reply"]
    assert mailbox.messages[0]["Subject"] == "[mocolab] Test message for channel mail"
    assert [d["id"] for d in deliveries(client, alice, hook["id"])] == [failed["id"], d["id"]]
    page = client.get(f"{API}/channels/{hook['id']}/deliveries?limit=1&before={failed['id']}", headers=alice.headers)
    assert [x["id"] for x in page.json()] == [d["id"]]


def test_a_wrong_smtp_password_is_recorded_and_retried(client: TestClient, alice: Member, settings: Settings,
                                                       mailbox: Mailbox) -> None:
    wrong = create_app(settings.model_copy(update={"smtp_password": "wrong"}))
    with TestClient(wrong) as c:
        mail = channel(c, alice, name="mail", kind="email", emails=["ops@example.org"])
        d = c.post(f"{API}/channels/{mail['id']}/test", headers=alice.headers).json()
    assert d["status"] == "failed" and d["attempts"][0]["code"] == 535 and mailbox.messages == []
    assert "wrong" not in json.dumps(d)


def test_the_rules_know_every_alert_kind_of_the_engine() -> None:
    """The channel rules' list of kinds (kept in the server, which runs without torch) covers the engine's."""
    from typing import get_args

    pytest.importorskip("torch")
    from mocov3_core.monitor.detectors import AlertKind
    from server.notify.service import ALERT_KINDS

    assert set(get_args(AlertKind)) <= ALERT_KINDS
