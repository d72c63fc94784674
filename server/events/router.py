"""Server-sent events: one stream per run and one per team.

Run stream: the SSE id is the event's seq. A client reconnecting with Last-Event-ID (or ?after_seq=) first
gets what it missed from SQL, then live events from the bus, without a gap or a duplicate: the
subscription is opened BEFORE the SQL replay, and the ingest publishes only after it commits, so every
event is either in the replay or in the queue (seen twice at most, and dropped by seq). A live event that
skips ahead of the last seq sent makes the stream re-read SQL, so events ingested elsewhere still arrive.

Every wait is bounded (1 s), the disconnect is checked each pass, and a connection is closed after
`sse_lifetime_s` with a `retry` hint, so that clients reconnect (and resume) instead of holding it forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import Engine
from sqlmodel import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from mocov3_core.events import Event as EngineEvent
from server.core.errors import ERROR_RESPONSES, BadRequest, TooManyRequests
from server.deps import BusDep, CallerDep, SettingsDep, get_engine
from server.events.bus import EventBus
from server.runs import repository
from server.runs.router import RunId
from server.runs.service import get as get_run

log = logging.getLogger(__name__)
router = APIRouter(tags=["events"], responses=ERROR_RESPONSES)
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": "Server-sent events; the id is the event's seq (run) or a server counter (team)."}}
REPLAY_PAGE = 1000
WAIT_S = 1.0
RETRY_MS = 1000
_open = {"run": 0, "team": 0}


def _events_after(engine: Engine, run_id: str, after: int) -> list[dict[str, Any]]:
    with Session(engine) as session:
        rows = repository.events_after(session, run_id=run_id, after_seq=after, limit=REPLAY_PAGE)
        return [EngineEvent.model_validate(e, from_attributes=True).model_dump() for e in rows]


def _sse(event: dict[str, Any]) -> ServerSentEvent:
    seq = event.get("seq")
    return ServerSentEvent(data=json.dumps(event, allow_nan=False), event=event["type"],
                           id=str(seq) if seq is not None else None)


MAX_SEQ = 2**62  # the bound of every stored step and seq (SQLite's integers end at 2**63 - 1)


def _parse_seq(value: str | None) -> int | None:
    """Last-Event-ID of a run stream: an event's seq. Anything else would reach SQL (a 39-digit id overflowed
    there and aborted the stream): 400 before the stream starts."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.lstrip("-").isdigit() or not -1 <= int(text) <= MAX_SEQ:
        raise BadRequest(f"Last-Event-ID must be an event's seq, an integer from -1 to {MAX_SEQ}")
    return int(text)


class StreamSlots:
    """Concurrent SSE streams per token (a browser session is a token of its own): one client cannot hold
    every connection the server has. A slot is taken before the response starts and given back when the
    response ends, however it ends (the client left, the lifetime ran out, an error)."""

    def __init__(self, per_token: int) -> None:
        self.per_token = per_token
        self.held: dict[int, int] = {}

    def take(self, token_id: int | None) -> None:
        key = token_id or 0
        if self.held.get(key, 0) >= self.per_token:
            raise TooManyRequests(f"too many open event streams for this token (at most {self.per_token}); "
                                  "close one first", retry_after=RETRY_MS // 1000 or 1)
        self.held[key] = self.held.get(key, 0) + 1

    def give_back(self, token_id: int | None) -> None:
        key = token_id or 0
        self.held[key] -= 1
        if self.held[key] <= 0:
            del self.held[key]


class SlotResponse(EventSourceResponse):
    """An EventSourceResponse that gives its stream slot back when it ends."""

    def __init__(self, content: AsyncIterator[ServerSentEvent], slots: StreamSlots, token_id: int | None) -> None:
        super().__init__(content, ping=15)
        self.release = lambda: slots.give_back(token_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def _slots(request: Request) -> StreamSlots:
    slots: StreamSlots = request.app.state.stream_slots
    return slots


@router.get("/runs/{run_id}/stream", response_class=EventSourceResponse, responses=SSE_DOC)
async def stream_run(run_id: RunId, request: Request, caller: CallerDep, bus: BusDep, settings: SettingsDep,
                     last_event_id: Annotated[str | None, Header(max_length=40)] = None,
                     after_seq: Annotated[int | None, Query(ge=-1, le=2**62)] = None) -> EventSourceResponse:
    """The run's events live. Resume with Last-Event-ID; `after_seq=N` skips history up to N (e.g. the
    run's last_seq when the page already loaded metrics over REST)."""
    engine = get_engine(request)

    def check() -> None:
        with Session(engine) as session:
            get_run(session, caller=caller, run_id=run_id)

    await asyncio.to_thread(check)
    start = _parse_seq(last_event_id)
    if start is None:
        start = after_seq if after_seq is not None else -1
    _slots(request).take(caller.token_id)
    return SlotResponse(_run_stream(request, engine, bus, run_id, start, settings.sse_lifetime_s), _slots(request),
                        caller.token_id)


async def _replay(engine: Engine, run_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
    """The run's stored events after `after`, page by page."""
    while True:
        page = await asyncio.to_thread(_events_after, engine, run_id, after)
        for event in page:
            yield event
            after = event["seq"]
        if len(page) < REPLAY_PAGE:
            return


async def _run_stream(request: Request, engine: Engine, bus: EventBus, run_id: str, last: int,
                      lifetime: float) -> AsyncIterator[ServerSentEvent]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    sub = bus.subscribe_run(run_id)  # before the replay: see the module's docstring
    _open["run"] += 1
    try:
        async for event in _replay(engine, run_id, last):
            yield _sse(event)
            last = event["seq"]
        while True:
            if await request.is_disconnected():
                return
            if loop.time() > deadline:
                yield ServerSentEvent(retry=RETRY_MS, comment="connection lifetime reached: reconnect")
                return
            if sub.overflowed:  # fell behind the bus: drop its queue and read SQL instead
                sub.overflowed = False
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                async for event in _replay(engine, run_id, last):
                    yield _sse(event)
                    last = event["seq"]
                continue
            try:
                item: dict[str, Any] = await asyncio.wait_for(sub.queue.get(), WAIT_S)
            except TimeoutError:
                continue
            seq = item.get("seq")
            if seq is None:  # a RunChanged: a state change made by the server (queued, lost, cancelled)
                yield _sse(item)
                continue
            if seq <= last:
                continue
            if seq > last + 1:  # something between: it is in SQL if it was stored at all
                async for event in _replay(engine, run_id, last):
                    yield _sse(event)
                    last = event["seq"]
                if seq <= last:
                    continue
            yield _sse(item)
            last = seq
    finally:
        _open["run"] -= 1
        bus.unsubscribe(sub)


@router.get("/stream", response_class=EventSourceResponse, responses=SSE_DOC)
async def stream_team(request: Request, caller: CallerDep, bus: BusDep, settings: SettingsDep,
                      last_event_id: Annotated[str | None, Header(max_length=40)] = None) -> EventSourceResponse:
    """Run status changes, alerts and worker heartbeats of your teams. Ids are '<epoch>-<n>'; an id the
    server cannot replay from (it restarted, or the id is too old) gets a `resync` event: re-read the lists."""
    _slots(request).take(caller.token_id)
    return SlotResponse(_team_stream(request, bus, caller.team_ids, last_event_id, settings.sse_lifetime_s),
                        _slots(request), caller.token_id)


def _team_sse(item_id: str, kind: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, allow_nan=False, default=str), event=kind, id=item_id)


def _counter(item_id: str) -> int:
    return int(item_id.partition("-")[2])


async def _team_stream(request: Request, bus: EventBus, team_ids: tuple[int, ...], last_id: str | None,
                       lifetime: float) -> AsyncIterator[ServerSentEvent]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    sub = bus.subscribe_team(team_ids)
    _open["team"] += 1
    last = 0
    try:
        missed = bus.team_since(last_id)
        if missed is None:
            yield ServerSentEvent(data="{}", event="resync")
        else:
            for item in missed:
                data = item.view(sub.team_ids)  # only the caller's teams' items, and runs (see TeamItem.view)
                if data is not None:
                    yield _team_sse(item.id, item.kind, data)
                last = _counter(item.id)
        if last_id and missed == []:
            last = _counter(last_id)
        while True:
            if await request.is_disconnected():
                return
            if loop.time() > deadline:
                yield ServerSentEvent(retry=RETRY_MS, comment="connection lifetime reached: reconnect")
                return
            if sub.overflowed:
                sub.overflowed = False
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                yield ServerSentEvent(data="{}", event="resync")
                continue
            try:
                item = await asyncio.wait_for(sub.queue.get(), WAIT_S)
            except TimeoutError:
                continue
            if _counter(item.id) <= last:
                continue
            last = _counter(item.id)
            yield _team_sse(item.id, item.kind, item.data)  # already scoped by the bus
    finally:
        _open["team"] -= 1
        bus.unsubscribe(sub)


def open_streams() -> dict[str, int]:
    return dict(_open)
