"""schemathesis over the OpenAPI schema, authenticated: no 5xx, and every response matches its schema.

SSE streams are left out (they are open-ended by design; tests/server/test_sse.py covers them)."""

from __future__ import annotations

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.events.ingest import Ingestor

from server_factories import Member, drain, ev, metrics_ev, push, submit

MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


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
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
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
