"""Helpers shared by the worker tests (importable because pytest puts this folder on sys.path)."""

import json
import time
from typing import Any

from mocov3_core.events import Event
from worker import protocol
from worker._redis import Redis


def stream_events(client: Redis, run_id: str | None = None, stream: str = protocol.EVENTS_STREAM,
                  ) -> list[dict[str, Any]]:
    """Every event in the stream, in stream order (one run's, when run_id is given)."""
    out = []
    for _, fields in client.xrange(stream):
        for event in json.loads(fields["b"]):
            if run_id is None or event["run_id"] == run_id:
                out.append(event)
    return out


def metrics_event(run_id: str, seq: int, **payload: Any) -> Event:
    return Event(run_id=run_id, seq=seq, time=time.time(), type="metrics", payload={"step": seq, **payload})


def wait_for(predicate: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll until predicate() is truthy; -> its value (the last one, falsy, on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)
