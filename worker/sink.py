"""The engine's events to the Redis Stream, in batches, without ever blocking the run on Redis.

write() only appends to an in-memory queue. A background thread sends the queue every `flush_interval`
seconds (sooner once `batch_max` events wait) as stream entries ``{b: JSON list of events}``. While Redis is
unreachable it appends the waiting events to a local spool file (JSON lines, fsync'd) and retries with
backoff; when Redis answers again it sends the spool first, in order, then the queue. close() flushes for
at most `close_timeout` seconds; what is still undelivered stays in the spool, and the next sink opened on
the same spool folder sends it. sync() makes what was written durable at once (sent, or spooled while Redis
is away): the engine calls it before every checkpoint, so a checkpoint never outlives the curve behind it.
Memory stays bounded however long Redis is away: the spool's events live on disk only (read back a batch at
a time), and a queue that reaches `max_queue` (the sender held up in a call) is moved to the spool by write()
itself. Only when the spool's disk fails too are events dropped, each logged as an error and counted.

Each batch goes out in one Lua call that appends the entry AND records the highest delivered seq per run
(``protocol.seq_key``), skipping events whose seq is not above it. So a replayed spool, or a batch resent
after an ambiguous failure, appends nothing twice, and a restarted run continues numbering from
`last_seq`. The price: one run's events must reach the sink in seq order, which the engine's Emitter does
when one thread emits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from mocov3_core.events import Event

from . import protocol
from ._redis import OUTAGE_ERRORS, Redis, connect
from ._spool import Entry, Spool

log = logging.getLogger("mocolab.worker.sink")

# KEYS[1] the stream, KEYS[2..] the seq keys of the runs in the batch.
# ARGV[1] MAXLEN, ARGV[2] seq-key TTL in ms (0 = none), then per event: index into KEYS, seq, JSON.
_DELIVER = """
local known = {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  known[i] = v and tonumber(v) or -1
end
local ttl = tonumber(ARGV[2])
local kept, top, top_text = {}, {}, {}
for j = 3, #ARGV, 3 do
  local k = tonumber(ARGV[j])
  local s = tonumber(ARGV[j + 1])
  if s > known[k] then
    kept[#kept + 1] = ARGV[j + 2]
    if top[k] == nil or s > top[k] then
      top[k] = s
      top_text[k] = ARGV[j + 1]
    end
  end
end
if #kept == 0 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'b', '[' .. table.concat(kept, ',') .. ']')
for k, text in pairs(top_text) do
  if ttl > 0 then redis.call('SET', KEYS[k], text, 'PX', ttl) else redis.call('SET', KEYS[k], text) end
end
return #kept
"""


def last_seq(redis: Redis, run_id: str) -> int | None:
    """The highest seq of `run_id` delivered to the events stream, or None when none was."""
    value = redis.get(protocol.seq_key(run_id))
    return None if value is None else int(value)


class RedisStreamSink:
    """An EventSink that appends events to `stream` in batches and spools them locally during outages."""

    def __init__(self, redis_url: str, stream: str = protocol.EVENTS_STREAM, batch_max: int = 500,
                 flush_interval: float = 0.2, spool_dir: str | Path | None = None,
                 maxlen: int = protocol.EVENTS_MAXLEN, close_timeout: float = 10.0,
                 seq_ttl_s: float | None = None, max_backoff: float = 5.0, adopt_every_s: float = 30.0,
                 max_queue: int = 10_000) -> None:
        if spool_dir is None:
            from .settings import Settings

            spool_dir = Settings.from_env().spool_dir
        self.stream = stream
        self.batch_max = batch_max
        self.flush_interval = flush_interval
        self.maxlen = maxlen
        self.close_timeout = close_timeout
        self.seq_ttl_ms = int(seq_ttl_s * 1000) if seq_ttl_s else 0
        self.max_backoff = max_backoff
        self.adopt_every_s = adopt_every_s
        self.max_queue = max(max_queue, batch_max)
        self.sent_events = 0  # delivered by this sink (spool replays included; skipped duplicates not)
        self.spooled_events = 0
        self.undelivered = 0  # set by close(): events left in the spool for the next sink
        self.dropped_events = 0  # the queue full and the spool's disk failing: logged as errors, counted here

        self._redis = connect(redis_url, decode=False)
        self._deliver = self._redis.register_script(_DELIVER)
        self._spool = Spool(spool_dir)
        self._spool.adopt_orphans()  # now, so that known_seq() covers what dead processes left behind
        self._queue: deque[Event] = deque()
        self._first_at = 0.0  # when the oldest queued event arrived
        self._known: dict[str, int] = {}  # highest seq written to this sink, per run
        self._cond = threading.Condition()
        self._down = False
        self._backoff = 0.0
        self._retry_at = 0.0
        self._flush_requests = 0
        self._sync_requests = 0
        self._closing = False
        self._close_deadline = 0.0
        self._abandoned = False
        self._closed = False
        self._inflight = False  # the sender is in a Redis call with the condition released
        self._thread = threading.Thread(target=self._loop, name="redis-stream-sink", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the EventSink protocol
    def write(self, event: Event) -> None:
        with self._cond:
            if self._closed:
                log.warning("event %s/%d written after close: spooled", event.run_id, event.seq)
                self._spool.append([Entry(event.run_id, event.seq, event.to_json())])
                return
            if len(self._queue) >= self.max_queue and not self._overflow(event):
                return
            if not self._queue:
                self._first_at = time.monotonic()
            self._queue.append(event)
            if event.seq > self._known.get(event.run_id, -1):
                self._known[event.run_id] = event.seq
            if len(self._queue) >= self.batch_max:
                self._cond.notify_all()

    def _overflow(self, event: Event) -> bool:
        """The in-memory queue is full (the sender is behind: Redis slow or away): move it to the spool on disk
        now, after the sender's call in progress (a socket timeout at most: its batch is the queue's head, and
        the spool must stay older than the queue). -> False when even the disk refuses: the event is dropped,
        with an error in the log and `dropped_events` counting it. Holds self._cond."""
        while self._inflight:
            self._cond.wait()
        self._spool_queue()
        if len(self._queue) < self.max_queue:
            return True
        self.dropped_events += 1
        log.error("event %s/%d dropped: %d events wait in memory and the spool %s cannot take them",
                  event.run_id, event.seq, len(self._queue), self._spool.dir)
        return False

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is pending within `timeout` seconds (default close_timeout); the rest stays in the
        spool, and `undelivered` says how many events that is."""
        timeout = self.close_timeout if timeout is None else timeout
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            self._retry_at = 0.0  # one more try now, whatever the backoff
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        with self._cond:
            # a thread stuck in a socket call is abandoned; either way what is left goes to disk
            self._abandoned = self._thread.is_alive()
            self._spool_queue()
            self._closed = True
            self.undelivered = len(self._queue) + self._spool.pending()
            self._spool.close()

    # ------------------------------------------------------------------ for the runner and the tests
    def flush(self, timeout: float = 10.0) -> bool:
        """Send everything pending now; -> True when the queue and the spool are empty within `timeout`."""
        with self._cond:
            self._flush_requests += 1
            self._retry_at = 0.0
            try:
                return self._wait_for(lambda: not self._queue and self._spool.pending() == 0, timeout)
            finally:
                self._flush_requests -= 1

    def sync(self, timeout: float = 2.0) -> bool:
        """Make every event written so far durable before the caller goes on: delivered to Redis or, while
        Redis is unreachable, appended to the fsync'd spool. The engine calls it before a checkpoint. It
        waits on Redis for at most `timeout` seconds (a call, not an outage: a known outage spools at once);
        -> True when nothing is left only in memory."""
        with self._cond:
            self._sync_requests += 1
            try:
                return self._wait_for(lambda: not self._queue, timeout)
            finally:
                self._sync_requests -= 1

    def _wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wake the sender and wait (holding self._cond) until done(), the timeout, or a sender gone; -> done()."""
        deadline = time.monotonic() + timeout
        self._cond.notify_all()
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or not self._thread.is_alive():
                break
            self._cond.wait(min(left, 0.05))
        return done()

    def known_seq(self, run_id: str) -> int | None:
        """The highest seq of `run_id` this sink has seen: written to it, or found in an adopted spool."""
        with self._cond:
            seqs = [s for s in (self._known.get(run_id), self._spool.max_seq(run_id)) if s is not None]
            return max(seqs) if seqs else None

    @property
    def connected(self) -> bool:
        return not self._down

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._spool.pending()

    # ------------------------------------------------------------------ the sender thread
    def _due(self, now: float) -> bool:
        if self._abandoned:
            return True
        pending = bool(self._queue) or self._spool.pending() > 0
        if self._closing:
            return not pending or not self._down or now >= min(self._retry_at, self._close_deadline)
        if not pending:
            return False
        if self._sync_requests and self._queue:
            return True  # delivered, or spooled below while Redis is away
        if self._flush_requests or (self._down and now >= self._retry_at):
            return not self._down or now >= self._retry_at
        return bool(self._queue) and (len(self._queue) >= self.batch_max
                                      or now - self._first_at >= self.flush_interval)

    def _loop(self) -> None:
        next_adopt = time.monotonic() + self.adopt_every_s
        while True:
            with self._cond:
                while not self._due(time.monotonic()):
                    self._cond.wait(self.flush_interval)
                if self._abandoned:
                    return
                now = time.monotonic()
                if now >= next_adopt:
                    self._spool.adopt_orphans()
                    next_adopt = now + self.adopt_every_s
                if self._down and now < self._retry_at:
                    self._spool_queue()  # Redis is still away: keep the events on disk meanwhile
                else:
                    self._attempt()
                self._cond.notify_all()
                if self._closing and (not self._queue and not self._spool.pending()
                                      or time.monotonic() >= self._close_deadline):
                    self._spool_queue()
                    return

    def _attempt(self) -> None:
        """Send the spool, then the queue; on failure spool the queue and back off. Holds self._cond."""
        try:
            for spool_file in list(self._spool.backlog):
                while spool_file.sent < spool_file.count:
                    chunk, end = spool_file.next_chunk(self.batch_max)
                    if not chunk:  # the file lost lines it was known to hold (edited meanwhile): nothing more to send
                        log.error("spool %s: %d entries missing", spool_file.path.name,
                                  spool_file.count - spool_file.sent)
                        break
                    self._send_unlocked(chunk)
                    if self._abandoned:
                        return
                    spool_file.sent += len(chunk)
                    spool_file.offset = end
                self._spool.done(spool_file)
            while self._queue:
                events = [self._queue[i] for i in range(min(self.batch_max, len(self._queue)))]
                self._send_unlocked(events)
                if self._abandoned:  # close() took the queue over meanwhile
                    return
                for _ in events:
                    self._queue.popleft()
                if self._queue:
                    self._first_at = time.monotonic()
        except OUTAGE_ERRORS as exc:
            if not self._down:
                log.warning("Redis unreachable (%s): spooling events to %s", exc, self._spool.dir)
            self._down = True
            self._backoff = min(self.max_backoff, max(0.2, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            self._spool_queue()
            return
        if self._down:
            log.info("Redis is back: spool delivered")
        self._down = False
        self._backoff = 0.0

    def _send_unlocked(self, batch: Sequence[Entry | Event]) -> None:
        """Serialise and send one batch in one Lua call, with the condition released meanwhile, so write()
        never waits on JSON or the network."""
        if not batch:
            return
        self._inflight = True
        self._cond.release()
        try:
            entries = self._serialise(batch)
            runs: dict[str, int] = {}
            args: list[str | int] = [self.maxlen, self.seq_ttl_ms]
            for e in entries:
                index = runs.setdefault(e.run_id, len(runs) + 2)  # KEYS[1] is the stream
                args += [index, e.seq, e.text]
            if entries:
                self._deliver(keys=[self.stream] + [protocol.seq_key(run_id) for run_id in runs], args=args)
        finally:
            self._cond.acquire()
            self._inflight = False
            self._cond.notify_all()
        self.sent_events += len(entries)

    def _serialise(self, batch: Sequence[Entry | Event]) -> list[Entry]:
        out = []
        for item in batch:
            if isinstance(item, Entry):
                out.append(item)
                continue
            try:
                out.append(Entry(item.run_id, item.seq, item.to_json()))
            except (TypeError, ValueError) as exc:  # one bad payload must not block the rest
                log.error("dropping event %s/%d (%s): %s", item.run_id, item.seq, item.type, exc)
        return out

    def _spool_queue(self) -> None:
        if not self._queue:
            return
        entries = self._serialise(list(self._queue))
        try:
            self._spool.append(entries)
        except OSError as exc:  # disk full or gone: keep them in memory and try again later
            log.error("cannot spool %d events to %s: %s", len(entries), self._spool.dir, exc)
            return
        self.spooled_events += len(entries)
        self._queue.clear()
