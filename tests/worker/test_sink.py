"""RedisStreamSink against a real Redis: batching and order, last_seq, replays that append nothing twice, and
outages: events spooled to disk while Redis is down and delivered once, in order, when it returns."""

import json
import logging
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from mocov3_core.events import Emitter
from server.embedded_redis import EmbeddedRedis
from worker import RedisStreamSink, last_seq, protocol
from worker._redis import Redis, connect

from worker_helpers import metrics_event as ev
from worker_helpers import stream_events, wait_for


def test_batches_hold_at_most_batch_max_events_in_order(tmp_path: Path, r: Redis, redis_url: str,
                                                        events: Any) -> None:
    stream = f"test:{uuid.uuid4().hex}"
    sink = RedisStreamSink(redis_url, stream=stream, batch_max=50, spool_dir=tmp_path)
    for i in range(230):
        sink.write(ev("a", i))
    assert sink.flush(10)
    sink.close()
    entries = r.xrange(stream)
    sizes = [len(json.loads(fields["b"])) for _, fields in entries]
    assert max(sizes) <= 50 and sum(sizes) == 230
    assert len(entries) >= 5
    got = events(stream=stream)
    assert [e["seq"] for e in got] == list(range(230))
    assert set(got[0]) == {"run_id", "seq", "time", "type", "payload"}
    assert last_seq(r, "a") is not None


def test_events_of_several_runs_keep_their_order_and_their_last_seq(tmp_path: Path, r: Redis, redis_url: str,
                                                                    events: Any) -> None:
    stream = f"test:{uuid.uuid4().hex}"
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    sink = RedisStreamSink(redis_url, stream=stream, batch_max=7, spool_dir=tmp_path)
    ea, eb = Emitter(a, [sink]), Emitter(b, [sink], seq=100)
    for i in range(20):
        ea.emit("metrics", step=i)
        if i % 2:
            eb.emit("log", message=str(i))
    sink.close()
    assert sink.undelivered == 0
    assert [e["seq"] for e in events(a, stream)] == list(range(20))
    assert [e["seq"] for e in events(b, stream)] == list(range(100, 110))
    assert (last_seq(r, a), last_seq(r, b)) == (19, 109)
    assert last_seq(r, f"never-{uuid.uuid4().hex}") is None


def test_resending_delivered_events_appends_nothing(tmp_path: Path, r: Redis, redis_url: str,
                                                    events: Any) -> None:
    stream = f"test:{uuid.uuid4().hex}"
    first = RedisStreamSink(redis_url, stream=stream, spool_dir=tmp_path)
    for i in range(10):
        first.write(ev("x", i))
    first.close()
    again = RedisStreamSink(redis_url, stream=stream, spool_dir=tmp_path)  # e.g. a spool replayed after a crash
    for i in range(5, 15):
        again.write(ev("x", i))
    again.close()
    assert [e["seq"] for e in events("x", stream)] == list(range(15))
    assert r.xlen(stream) == 2


def test_unserialisable_event_is_dropped_and_the_rest_delivered(tmp_path: Path, redis_url: str,
                                                                events: Any) -> None:
    stream = f"test:{uuid.uuid4().hex}"
    sink = RedisStreamSink(redis_url, stream=stream, spool_dir=tmp_path)
    sink.write(ev("y", 0))
    sink.write(ev("y", 1, bad=object()))
    sink.write(ev("y", 2))
    sink.close()
    assert [e["seq"] for e in events("y", stream)] == [0, 2]


def test_outage_spools_to_disk_and_delivers_everything_once_in_order(tmp_path: Path, own_redis: EmbeddedRedis
                                                                     ) -> None:
    spool = tmp_path / "spool"
    sink = RedisStreamSink(own_redis.url, spool_dir=spool, flush_interval=0.05, max_backoff=0.5)
    client = connect(own_redis.url)
    for i in range(100):
        sink.write(ev("run", i))
    assert sink.flush(10)
    own_redis.stop()
    for i in range(100, 400):  # write() returns at once while Redis is away
        sink.write(ev("run", i))
    assert wait_for(lambda: sink.spooled_events >= 300, timeout=10)
    assert sink.spooled_events == 300 and not sink.connected
    lines = [json.loads(line) for f in spool.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(100, 400))  # on disk, in order
    for i in range(400, 450):
        sink.write(ev("run", i))
    own_redis.start()
    assert sink.flush(15)
    sink.close()
    assert [e["seq"] for e in stream_events(client, "run")] == list(range(450))
    assert last_seq(client, "run") == 449
    assert not list(spool.glob("*.jsonl"))  # delivered spool files are removed


def test_events_left_by_a_closed_sink_are_sent_by_the_next_one(tmp_path: Path, own_redis: EmbeddedRedis) -> None:
    spool = tmp_path / "spool"
    own_redis.stop()
    sink = RedisStreamSink(own_redis.url, spool_dir=spool, max_backoff=0.2)
    emitter = Emitter("left", [sink])
    for i in range(30):
        emitter.emit("metrics", step=i)
    sink.close(timeout=0.5)  # Redis is down: the events stay on disk
    assert sink.undelivered == 30 and len(list(spool.glob("*.jsonl"))) == 1
    own_redis.start()
    nxt = RedisStreamSink(own_redis.url, spool_dir=spool)
    assert nxt.known_seq("left") == 29  # a run restarted here continues after what the spool holds
    nxt.write(ev("left", 30))
    nxt.close()
    client = connect(own_redis.url)
    assert [e["seq"] for e in stream_events(client, "left")] == list(range(31))
    assert not list(spool.glob("*.jsonl"))


def test_a_live_sinks_spool_file_is_not_taken_by_another(tmp_path: Path, own_redis: EmbeddedRedis) -> None:
    own_redis.stop()
    spool = tmp_path / "spool"
    holder = RedisStreamSink(own_redis.url, spool_dir=spool, max_backoff=0.2)
    holder.write(ev("h", 0))
    assert wait_for(lambda: holder.spooled_events == 1, timeout=5)
    other = RedisStreamSink(own_redis.url, spool_dir=spool)
    assert other.known_seq("h") is None  # the file is locked by its living owner
    other.close(timeout=0.2)
    own_redis.start()
    holder.close()
    assert holder.undelivered == 0
    assert [e["seq"] for e in stream_events(connect(own_redis.url), "h")] == [0]


def test_seq_key_ttl_applies_when_asked(tmp_path: Path, r: Redis, redis_url: str) -> None:
    run = f"worker:{uuid.uuid4().hex[:8]}"
    sink = RedisStreamSink(redis_url, stream=f"test:{uuid.uuid4().hex}", spool_dir=tmp_path, seq_ttl_s=60)
    sink.write(ev(run, 1_700_000_000_123))  # time-based seqs (heartbeats) survive the trip through Lua
    sink.close()
    assert last_seq(r, run) == 1_700_000_000_123
    assert 0 < r.pttl(protocol.seq_key(run)) <= 60_000


def test_sync_delivers_at_once_and_spools_at_once_while_redis_is_away(tmp_path: Path,
                                                                      own_redis: EmbeddedRedis) -> None:
    """What the engine calls before a checkpoint: nothing written before it stays only in memory."""
    spool = tmp_path / "spool"
    sink = RedisStreamSink(own_redis.url, spool_dir=spool, flush_interval=3600, max_backoff=0.5)
    client = connect(own_redis.url)
    for i in range(5):
        sink.write(ev("run", i))
    assert sink.sync(timeout=5)  # not an hour: now
    assert last_seq(client, "run") == 4
    own_redis.stop()
    for i in range(5, 8):
        sink.write(ev("run", i))
    assert sink.sync(timeout=5)  # the first try finds Redis gone and spools
    lines = [json.loads(line) for f in spool.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [5, 6, 7]
    sink.write(ev("run", 8))
    assert sink.sync(timeout=5) and sink.spooled_events == 4  # a known outage: straight to disk
    own_redis.start()
    assert sink.flush(15)
    sink.close()
    assert [e["seq"] for e in stream_events(client, "run")] == list(range(9))


def test_a_redis_that_never_answers_keeps_the_queue_bounded_and_loses_nothing(tmp_path: Path, r: Redis,
                                                                              redis_url: str) -> None:
    """A server that accepts and never replies holds the sender in a call for its socket timeout: write()
    must neither let the queue grow past max_queue nor drop anything; the overflow goes to the disk spool."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)  # connections complete in the kernel's backlog; nothing ever reads them
    spool, stream = tmp_path / "spool", f"test:{uuid.uuid4().hex}"
    try:
        url = f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0"
        sink = RedisStreamSink(url, stream=stream, spool_dir=spool, batch_max=10, max_queue=100, max_backoff=60)
        peak = 0
        for i in range(1000):
            sink.write(ev("bh", i))
            peak = max(peak, len(sink._queue))
        assert peak <= 100 and sink.dropped_events == 0
        sink.close(timeout=0.5)
        assert sink.undelivered == 1000  # all of it on disk
    finally:
        blackhole.close()
    nxt = RedisStreamSink(redis_url, stream=stream, spool_dir=spool)
    nxt.close()
    assert [e["seq"] for e in stream_events(r, "bh", stream)] == list(range(1000))


def test_with_redis_and_the_spool_disk_both_gone_drops_are_counted_and_logged(
        tmp_path: Path, own_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    own_redis.stop()
    sink = RedisStreamSink(own_redis.url, spool_dir=spool, batch_max=10, max_queue=50, max_backoff=0.2)
    spool.rmdir()
    spool.write_text("not a folder")  # the spool cannot create its file
    with caplog.at_level(logging.ERROR, logger="mocolab.worker.sink"):
        for i in range(200):
            sink.write(ev("lost", i))
    assert len(sink._queue) <= 50
    assert sink.dropped_events > 0 and sink.dropped_events + sink.pending() == 200
    assert any("dropped" in rec.message for rec in caplog.records)
    sink.close(timeout=0.2)


def test_an_orphan_spool_is_sent_in_batches_without_its_torn_last_line(tmp_path: Path, r: Redis,
                                                                       redis_url: str) -> None:
    spool, stream = tmp_path / "spool", f"test:{uuid.uuid4().hex}"
    spool.mkdir()
    lines = "".join(ev("orph", i).to_json() + "\n" for i in range(2500))
    (spool / "00000000000000000001-1-dead.jsonl").write_text(lines + '{"run_id": "orph", "se')  # died mid-line
    sink = RedisStreamSink(redis_url, stream=stream, spool_dir=spool, batch_max=200)
    assert sink.known_seq("orph") == 2499 and sink.pending() == 2500
    sink.close()
    sizes = [len(json.loads(fields["b"])) for _, fields in r.xrange(stream)]
    assert max(sizes) <= 200 and sum(sizes) == 2500
    assert [e["seq"] for e in stream_events(r, "orph", stream)] == list(range(2500))
    assert not list(spool.glob("*.jsonl"))
