"""In-process fan-out to SSE subscribers.

Two channels: per run (the run's events, by seq; the SQL rows are the source of truth, so a subscriber
that falls behind is told to re-read SQL instead of the bus holding everything), and per team (run status,
alerts, workers) numbered by a server-side counter with a ring buffer for Last-Event-ID replay. Team ids
are "<epoch>-<n>": after a server restart the epoch differs and the client is told to resync.

Publishing is safe from any thread; subscribers live on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, Field


class RunChanged(BaseModel):
    """A change the server itself made to a run (queued, cancelled, lost, re-queued, renamed), on the run's own
    stream beside its events. It is none of the run's events, so it has no `seq` (the key is absent, not
    null): its SSE message has no id, and a reconnect never resumes from it."""

    run_id: str
    time: float = Field(description="Unix seconds.")
    type: Literal["run"] = "run"
    payload: dict[str, Any] = Field(description="The run as GET /runs/{id} shows it (RunPublic).")


@dataclass
class TeamItem:
    id: str
    kind: str  # run | alert | worker
    team_id: int | None  # None = every team (workers are shared)
    data: dict[str, Any]
    # an item every team gets (team_id None) whose parts are not everyone's (a worker's runs): the domain that
    # made it says what members of given teams may see
    scoped: Callable[[frozenset[int]], dict[str, Any]] | None = None

    def view(self, team_ids: frozenset[int]) -> dict[str, Any] | None:
        """The item's data as members of `team_ids` may see it; None when it is not theirs at all."""
        if self.team_id is not None and self.team_id not in team_ids:
            return None
        return self.scoped(team_ids) if self.scoped is not None else self.data


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Any]
    run_id: str | None = None
    team_ids: frozenset[int] = field(default_factory=frozenset)
    overflowed: bool = False

    def put(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class EventBus:
    def __init__(self, maxsize: int = 10_000, team_buffer: int = 10_000) -> None:
        self.maxsize = maxsize
        self.epoch = f"{int(time.time() * 1000):x}"
        self._counter = 0
        self._team_log: deque[TeamItem] = deque(maxlen=team_buffer)
        self._runs: dict[str, set[Subscription]] = {}
        self._teams: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # ------------------------------------------------------------ subscribing (on the loop)
    def subscribe_run(self, run_id: str) -> Subscription:
        sub = Subscription(asyncio.Queue(self.maxsize), run_id=run_id)
        self._runs.setdefault(run_id, set()).add(sub)
        return sub

    def subscribe_team(self, team_ids: Iterable[int]) -> Subscription:
        sub = Subscription(asyncio.Queue(self.maxsize), team_ids=frozenset(team_ids))
        self._teams.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.run_id is not None:
            subs = self._runs.get(sub.run_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._runs[sub.run_id]
        else:
            self._teams.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._runs.values()) + len(self._teams)

    # ------------------------------------------------------------ publishing (any thread)
    def publish_events(self, events: list[dict[str, Any]]) -> None:
        """Events as stored ({run_id, seq, time, type, payload}), in seq order per run, or `RunChanged`s."""
        self._call(self._publish_events, events)

    def publish_run_changed(self, run_id: str, public: dict[str, Any]) -> None:
        self.publish_events([RunChanged(run_id=run_id, time=time.time(), payload=public).model_dump()])

    def publish_team(self, kind: str, team_id: int | None, data: dict[str, Any],
                     scoped: Callable[[frozenset[int]], dict[str, Any]] | None = None) -> None:
        with self._lock:
            self._counter += 1
            item = TeamItem(f"{self.epoch}-{self._counter}", kind, team_id, data, scoped)
            self._team_log.append(item)
        self._call(self._publish_team, item)

    def team_since(self, last_id: str | None) -> list[TeamItem] | None:
        """Items after `last_id`; None when that id is from another epoch or has left the buffer."""
        if not last_id:
            return []
        epoch, _, n = last_id.partition("-")
        if epoch != self.epoch or not n.isdigit():
            return None
        after = int(n)
        with self._lock:
            items = list(self._team_log)
        if items and int(items[0].id.partition("-")[2]) > after + 1:
            return None
        return [i for i in items if int(i.id.partition("-")[2]) > after]

    def _call(self, fn: Any, arg: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(arg)
        else:
            loop.call_soon_threadsafe(fn, arg)

    def _publish_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for sub in self._runs.get(event["run_id"], ()):
                sub.put(event)

    def _publish_team(self, item: TeamItem) -> None:
        for sub in self._teams:
            data = item.view(sub.team_ids)
            if data is not None:
                sub.put(replace(item, data=data, scoped=None))
