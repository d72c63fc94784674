"""What the ingest hands to the domains: each batch of newly stored events, in one transaction, to every
`Projection` in turn (the runs', the workers'...), which write their own tables from it.

Also the readers of event payloads the projections share: a payload is whatever a worker sent, so every value
is read defensively (a wrong type reads as None, text is cut to its column's width).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlmodel import Session

from mocov3_core.events import Event, decode_float
from worker import protocol

WORKER_PREFIX = protocol.worker_run_id("")


@dataclass
class Notice:
    """A message for the team stream (SSE), sent once the batch is committed."""

    kind: str  # run | alert | worker
    team_id: int | None  # None: every team
    data: dict[str, Any]
    # what members of given teams may see of an item every team gets (a worker's runs are only their team's)
    scoped: Callable[[frozenset[int]], dict[str, Any]] | None = None


@dataclass
class Batch:
    """One transaction's worth: the run events stored for the first time (in (run_id, seq) order; replays are
    not here) and the workers' heartbeats (in (time, seq) order; they are not run events)."""

    session: Session
    events: list[Event]
    beats: list[Event]
    gaps: list[tuple[str, int, int]] = field(default_factory=list)  # (run_id, first missing, last missing)
    notices: list[Notice] = field(default_factory=list)
    # worker id -> its latest beat, when it is newer than what was known of the worker (the workers' projection
    # sets it; the runs' reads it to keep the runs a live worker names alive)
    current_beats: dict[str, Event] = field(default_factory=dict)


class Projection(Protocol):
    def project(self, batch: Batch) -> None:
        """Write this domain's tables from the batch, in `batch.session` (not committed: the ingest commits)."""


def is_beat(event: Event) -> bool:
    return event.type == "heartbeat" or event.run_id.startswith(WORKER_PREFIX)


def beat_worker_id(event: Event) -> str:
    return text(event.payload.get("worker_id") or event.run_id.removeprefix(WORKER_PREFIX), 128)


def integer(value: Any) -> int | None:
    """An int a BIGINT holds, from an int or a finite float; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**62 else None
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def finite(value: Any) -> float | None:
    number = decode_float(value)
    return number if number is not None and math.isfinite(number) else None


def text(value: Any, n: int) -> str:
    return str(value if value is not None else "")[:n]
