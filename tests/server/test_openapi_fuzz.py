"""schemathesis over the OpenAPI schema, authenticated: no 5xx, and every response matches its schema. Also
non-standard JSON (NaN, Infinity in number fields, bodies over the cap) on every operation that takes a body,
and the SSE routes over a live server: each stream is opened, its status and type checked, then closed (they
are open-ended by design; tests/server/test_sse.py covers what they send)."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.core.config import Settings
from server.events.ingest import Ingestor

from server_factories import LiveServer, Member, drain, ev, metrics_ev, push, submit

MAX_EXAMPLES = 30
NON_FINITE = [math.nan, math.inf, -math.inf]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No submission limit: the fuzzer submits far more than 60 runs a minute (test_http_hardening covers it)."""
    return settings.model_copy(update={"submit_per_minute": 1_000_000})


@pytest.fixture
def seeded(client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member) -> tuple[Member, str]:
    """A run with events, metrics, an alert and a checkpoint, so that run routes get past their 404."""
    run = submit(client, alice, tags=["fuzz"])
    ckpt = str(client.app.state.settings.storage_root / "runs" / run["id"] / "step_8.pt")  # type: ignore[attr-defined]
    push(redis_client, [ev(run["id"], 0, "status", state="running", step=0, total_steps=100)]
         + [metrics_ev(run["id"], s, s - 1, loss=1.0 / s, lr=1e-3) for s in range(1, 50)]
         + [ev(run["id"], 50, "alert", kind="grad_spike", step=40, message="spike"),
            ev(run["id"], 51, "checkpoint", step=48, path=ckpt)])
    drain(ingestor)
    return alice, run["id"]


def test_api_conforms_to_its_schema(app: FastAPI, seeded: tuple[Member, str]) -> None:
    member, run_id = seeded
    schema = (schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=r"stream$")
              .exclude(method="DELETE", path="/api/v1/tokens/{token_id}"))  # it would revoke the fuzzer's token
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                             derandomize=True, database=None)
        def check(case: schemathesis.Case) -> None:
            if case.path_parameters and "run_id" in case.path_parameters:
                case.path_parameters["run_id"] = run_id  # unknown ids only ever get a 404
            case.call_and_validate(headers=member.headers, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect them all, then report every failing operation at once
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)


def _numbers_to(value: Any, replacement: float) -> tuple[Any, int]:
    """`value` with every number leaf (not a bool) replaced; -> (new value, how many were replaced)."""
    if isinstance(value, dict):
        pairs = [(k, _numbers_to(v, replacement)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, sum(n for _, (_, n) in pairs)
    if isinstance(value, list):
        items = [_numbers_to(v, replacement) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return replacement, 1
    return value, 0


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON in a response: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_standard_json_and_huge_bodies(app: FastAPI, client: TestClient, seeded: tuple[Member, str]) -> None:
    """NaN and Infinity are no JSON (RFC 8259), but Python's parser takes them: every number of a generated body
    becomes one of them. No 5xx, and an accepted body never comes back with one. Then a 2 MiB body: 413."""
    member, run_id = seeded
    schema = (schemathesis.openapi.from_asgi("/openapi.json", app).include(method=["POST", "PUT", "PATCH"]))
    failures: list[str] = []
    mutated = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.body:
            continue

        @given(case=operation.as_strategy(), which=st.sampled_from(NON_FINITE))
        @hypothesis_settings(max_examples=MAX_EXAMPLES // 3, deadline=None, suppress_health_check=list(HealthCheck),
                             derandomize=True, database=None)
        def check(case: schemathesis.Case, which: float) -> None:
            nonlocal mutated
            if case.path_parameters and "run_id" in case.path_parameters:
                case.path_parameters["run_id"] = run_id
            # an optional body the case left out (schemathesis' NotSet) is sent as {}
            sent = case.body if isinstance(case.body, (dict, list, str, int, float, bool)) or case.body is None else {}
            body, count = _numbers_to(sent, which)
            mutated += count > 0
            response = client.request(case.method, case.formatted_path, params=case.query,
                                      content=json.dumps(body, allow_nan=True),
                                      headers={**member.headers, "Content-Type": "application/json"})
            assert response.status_code < 500, (response.status_code, response.text)
            _strict_json(response.text)

        try:
            check()
            huge = client.request(operation.method.upper(), operation.path.replace("{run_id}", run_id)
                                  .replace("{study_id}", "x").replace("{token_id}", "1"),
                                  content=b"[" + b"0," * (1 << 20) + b"0]",
                                  headers={**member.headers, "Content-Type": "application/json"})
            assert huge.status_code == 413, (huge.status_code, huge.text)
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert mutated >= 10  # the bodies had numbers to replace: the test sent what it says
    assert not failures, "\n\n".join(failures)


@pytest.fixture
def live_seeded(seeded: tuple[Member, str], live: LiveServer) -> tuple[Member, str, LiveServer]:
    return *seeded, live


def test_sse_routes(app: FastAPI, live_seeded: tuple[Member, str, LiveServer]) -> None:
    """Generated Last-Event-ID headers and after_seq values: a documented status with its content type, never
    a 5xx; a 200 is an event stream (closed once its headers arrived)."""
    member, run_id, live = live_seeded
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex=r"stream$")
    failures: list[str] = []
    operations = 0
    documented: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        documented[operation.path] = {int(code) for code in operation.definition.raw["responses"]} | {422}

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=MAX_EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck),
                             derandomize=True, database=None)
        def check(case: schemathesis.Case) -> None:
            if case.path_parameters and "run_id" in case.path_parameters:
                case.path_parameters["run_id"] = run_id
            kwargs = case.as_transport_kwargs(base_url=live.url, headers=member.headers)
            with httpx.Client(timeout=30) as http, http.stream(
                    kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs.get("headers")) as r:
                assert r.status_code in documented[case.operation.path], (r.status_code, r.read())
                media = r.headers["content-type"]
                if r.status_code == 200:
                    assert media.startswith("text/event-stream"), media
                else:
                    assert media == "application/json", media
                    _strict_json(r.read().decode())

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations == 2
    assert not failures, "\n\n".join(failures)
