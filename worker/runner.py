"""One run on this worker: lock, spec, engine, outcome. `execute_run` is what the Celery task calls.

The run's events (the engine's and the worker's own status events) share one seq numbering that continues
from the last seq delivered for the run, so a restarted run never reuses a number. The worker's own
`status` events carry ``worker_id`` and ``attempt``; the last one, with ``final: true``, is the outcome:

    running     the worker took the run (before the engine loads anything)
    succeeded   the engine finished
    failed      bad spec, an exception (its traceback is in the `log` event just before), or the
                stability policy stopped the run
    cancelled   the cancel key was set (or the task was revoked with terminate): stopped at a checkpoint
    queued      the worker is shutting down (or Celery cancelled the task on a broker connection loss):
                stopped at a checkpoint, and the task goes back to the queue to resume
    duplicate   (no event) another live process holds the run's lock, or this attempt already finished
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from mocov3_core.config import ConfigError, validate_spec
from mocov3_core.events import Event, EventSink, EventType

from . import protocol
from ._redis import OUTAGE_ERRORS, Redis, connect
from .lock import RunLock
from .settings import Settings, inside
from .sink import RedisStreamSink, last_seq
from .workdir import ProgressSink, WorkerDir

log = logging.getLogger("mocolab.worker.runner")

FINAL_STATES = ("succeeded", "failed", "cancelled")
EVAL_KINDS = {"knn": "knn", "linear": "linear", "linear_probe": "linear", "finetune": "finetune"}
RUN_ID = re.compile(protocol.RUN_ID_PATTERN)
REDIS_WAIT_S = 60.0  # how long a starting run waits for an unreachable Redis before going back to the queue
REVOKE_GRACE_S = 3.0  # after a SIGTERM, how long to wait for the main process's revoke marker


class RunTerminated(Exception):
    """A SIGTERM while the engine was in a phase that does not poll should_stop."""


class StopWatch:
    """should_stop for the engine: a thread polls the cancel key (every `interval` s) and the local flags,
    so the training loop only reads booleans; a Redis outage leaves the run going. The same thread keeps
    the run lock fresh, so a run executed outside a worker with a heartbeat keeps its lock too."""

    def __init__(self, redis: Redis, run_id: str, workdir: WorkerDir, lock: RunLock | None = None,
                 interval: float = 0.5) -> None:
        self.run_id = run_id
        self.lock = lock
        self._next_refresh = time.monotonic() + protocol.LOCK_TTL_S / 3
        self.workdir = workdir
        self.interval = interval
        self.cancelled = False  # the cancel key, or a revoke
        self.sigterm = False
        self.shutdown = False  # the worker is stopping
        self.polls_engine = True  # False while the engine runs a phase without should_stop checks
        self._redis = redis
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stop-watch", daemon=True)

    def start(self) -> StopWatch:
        self.poll()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        try:
            if self._redis.exists(protocol.cancel_key(self.run_id)):
                self.cancelled = True
            if self.lock is not None and time.monotonic() >= self._next_refresh:
                self._next_refresh = time.monotonic() + protocol.LOCK_TTL_S / 3
                if not self.lock.refresh():
                    log.warning("run %s: its lock is no longer held by this worker", self.run_id)
        except OUTAGE_ERRORS:
            pass
        if self.workdir.revoked(self.run_id):
            self.cancelled = True
        if self.workdir.stop_requested():
            self.shutdown = True

    def __call__(self) -> bool:
        return self.cancelled or self.sigterm or self.shutdown

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 (signal handler signature)
        first = not self.sigterm
        self.sigterm = True
        if not (first and self.polls_engine):
            raise RunTerminated(f"terminated by signal {signum}")

    def stop_reason(self) -> str:
        """-> 'cancelled' or 'queued' for a run stopped on request."""
        deadline = time.monotonic() + (REVOKE_GRACE_S if self.sigterm else 0.0)
        while True:
            self.poll()
            if self.cancelled or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return "cancelled" if self.cancelled else "queued"

    def stop(self) -> None:
        self._done.set()


class _Run:
    def __init__(self, run_id: str, kind: str, spec: dict[str, Any], attempt: int, settings: Settings) -> None:
        self.run_id, self.kind, self.spec, self.attempt, self.settings = run_id, kind, spec, attempt, settings
        self.worker_id = settings.worker_id
        self.run_dir = settings.run_dir(run_id)
        self.workdir = WorkerDir(settings.spool_dir, settings.worker_id)
        self.redis: Redis = connect(settings.redis_url)
        self.sink: RedisStreamSink | None = None
        self.delivered = -1  # the run's last seq in the events stream when this execution started

    # ------------------------------------------------------------------ events
    def next_seq(self) -> int:
        """One past the highest seq delivered (as Redis knows at the start) or written to the sink since."""
        assert self.sink is not None
        known = self.sink.known_seq(self.run_id)
        return max(self.delivered, -1 if known is None else known) + 1

    def emit(self, type: EventType, **payload: Any) -> None:
        assert self.sink is not None
        self.sink.write(Event(run_id=self.run_id, seq=self.next_seq(), time=time.time(), type=type, payload=payload))

    def status(self, state: str, message: str, final: bool = True, **extra: Any) -> None:
        self.emit("status", state=state, worker_id=self.worker_id, attempt=self.attempt, message=message,
                  final=final, **extra)

    # ------------------------------------------------------------------ the steps
    def execute(self) -> str:
        if not RUN_ID.match(self.run_id):
            log.error("refusing run id %r: letters, digits, '_', '.', '-' only", self.run_id)
            return "failed"
        lock = RunLock(self.redis, self.run_id, self.worker_id)
        try:
            taken = self._with_redis(lambda: self._take(lock))
        except redis.RedisError as exc:
            log.error("run %s: Redis unreachable for %.0f s (%s): back to the queue", self.run_id, REDIS_WAIT_S, exc)
            return "queued"
        if not taken:
            log.warning("run %s is already running (lock held by %s): not running it twice",
                        self.run_id, self._safe(lock.holder))
            return "duplicate"
        try:
            return self._locked()
        finally:
            self._safe(lock.release)

    def _take(self, lock: RunLock) -> bool:
        if lock.acquire():
            return True
        holder = lock.holder()
        if holder is None:  # expired meanwhile
            return lock.acquire()
        if holder == self.worker_id:
            # ours: left by a pool process of this worker that died, unless a sibling process runs it
            return not self.workdir.running_elsewhere(self.run_id) and lock.adopt()
        if not lock.holder_alive(holder):  # its worker stopped beating and stopped refreshing: a dead run
            log.warning("run %s: taking the lock of %s, which stopped heart-beating", self.run_id, holder)
            return lock.steal(holder)
        return False

    def _locked(self) -> str:
        self.sink = RedisStreamSink(self.settings.redis_url, spool_dir=self.settings.spool_dir)
        state = "failed"
        try:
            self.sink.flush(10.0)  # what this host's dead processes left in the spool goes first
            delivered = self._with_redis(lambda: last_seq(self.redis, self.run_id))
            self.delivered = -1 if delivered is None else delivered
            if self._finished_before():
                state = "duplicate"
                return state
            died = self._with_redis(self._count_delivery)
            if died >= self.settings.max_deliveries:
                state = "failed"
                self.status(state, f"gave up: the process running attempt {self.attempt} died {died} time(s) "
                            "(out of memory, a crash or a kill); resume it once the cause is fixed", deliveries=died)
                return state
            try:
                state, message, extra = self._run_engine()
            finally:  # back alive from the engine: this delivery did not kill its process
                self._safe(lambda: self.redis.decr(protocol.deliveries_key(self.run_id, self.attempt)))
            self.status(state, message, **extra)
            return state
        except redis.RedisError as exc:
            log.error("run %s: Redis unreachable (%s): back to the queue", self.run_id, exc)
            state = "queued"
            return state
        finally:
            self.sink.close(timeout=15.0)
            if self.sink.undelivered:
                log.warning("run %s: events left in the spool %s; the next sink sends them", self.run_id,
                            self.settings.spool_dir)
            if state != "duplicate":
                self._record(state)
                self._safe(lambda: self.redis.delete(protocol.cancel_key(self.run_id)))
                self.workdir.clear_revoked(self.run_id)

    def _run_engine(self) -> tuple[str, str, dict[str, Any]]:
        """-> (final state, message, extra payload)."""
        assert self.sink is not None
        quick = connect(self.settings.redis_url, timeout=1.0, connect_timeout=0.5)  # never stalls a training step
        watch = StopWatch(quick, self.run_id, self.workdir, RunLock(quick, self.run_id, self.worker_id)).start()
        if watch.cancelled:
            watch.stop()
            return "cancelled", "cancelled before it started", {}
        spec = self._resolve_paths(dict(self.spec))
        try:
            cfg = validate_spec(EVAL_KINDS.get(self.kind, self.kind), spec)
        except ConfigError as exc:
            watch.stop()
            return "failed", f"invalid spec: {exc}", {"field": exc.path}
        refused = self._refused_path(cfg)
        if refused is not None:
            watch.stop()
            return "failed", f"invalid spec: {refused[0]}: {refused[1]}", {"field": refused[0]}
        self.status("running", f"started on worker {self.worker_id} (attempt {self.attempt})", final=False,
                    host=os.uname().nodename, pid=os.getpid())
        progress = ProgressSink(self.workdir, self.run_id)
        sinks: list[EventSink] = [self.sink, progress]
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, watch.on_sigterm)
        try:
            return self._call_engine(cfg, sinks, watch, self.next_seq())
        except RunTerminated:
            return watch.stop_reason(), "terminated", {}
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            self.emit("log", level="error", message=f"run failed: {message}", traceback=traceback.format_exc())
            return "failed", message, {}
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            watch.stop()
            progress.close()

    def _call_engine(self, cfg: Any, sinks: list[EventSink], watch: StopWatch,
                     first_seq: int) -> tuple[str, str, dict[str, Any]]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        allow_engine_processes()
        if self.kind == "prepare":
            return self._prepare(cfg, sinks, watch, first_seq)
        if self.kind == "pretrain":
            from mocov3_core.train import pretrain

            # delivered: a checkpoint written after events that never reached Redis (the process died
            # between the two) is skipped, and its steps trained again, so the curve keeps no hole
            result = pretrain(cfg, self.run_dir, sinks, run_id=self.run_id, resume="auto", should_stop=watch,
                              first_seq=first_seq, delivered_seq=self.delivered)
            extra = {"step": result.step, "checkpoint": result.checkpoint}
            if result.status == "succeeded":
                return "succeeded", f"finished at step {result.step}", extra
            if result.status == "stopped" and watch():
                state = watch.stop_reason()
                why = "cancelled" if state == "cancelled" else "worker stopping: back to the queue to resume"
                return state, f"{why} (checkpoint at step {result.step})", extra
            return "failed", result.reason or result.status, extra
        from mocov3_core.eval import evaluate

        watch.polls_engine = cfg.kind != "knn"  # kNN never asks should_stop: a SIGTERM interrupts it at once
        out = evaluate(cfg, sinks, run_id=self.run_id, should_stop=watch, first_seq=first_seq)
        if out.get("status") == "stopped":
            state = watch.stop_reason()
            return state, "cancelled" if state == "cancelled" else "worker stopping: back to the queue", {}
        (self.run_dir / "result.json").write_text(json.dumps(out, indent=1, default=str))
        top1 = out.get("top1")
        summary = f"{out.get('protocol', cfg.kind)} top-1 {top1:.2f}%" if isinstance(top1, float) else "done"
        return "succeeded", summary, {"result": str(self.run_dir / "result.json")}

    def _prepare(self, cfg: Any, sinks: list[EventSink], watch: StopWatch,
                 first_seq: int) -> tuple[str, str, dict[str, Any]]:
        """A dataset's scan (out None) or its packed copy: the engine's run_prepare, its events as this run's."""
        from mocov3_core.data.prepare import run_prepare

        # packing stops at a shard boundary when asked; a scan may not poll, so a SIGTERM interrupts it at once
        watch.polls_engine = cfg.out is not None
        out = run_prepare(cfg, sinks, should_stop=watch, run_id=self.run_id, first_seq=first_seq)
        if out.get("stopped"):
            if watch():
                state = watch.stop_reason()
                return state, "cancelled" if state == "cancelled" else "worker stopping: back to the queue", {}
            return "failed", str(out.get("reason") or "stopped"), {}
        summary = {k: v for k, v in out.items() if k != "samples_jpeg"}
        (self.run_dir / "result.json").write_text(json.dumps(summary, indent=1, default=str))
        return "succeeded", prepare_summary(summary), {"result": str(self.run_dir / "result.json")}

    # ------------------------------------------------------------------ helpers
    def _count_delivery(self) -> int:
        """Count this delivery as one that may kill its process; -> how many before it did."""
        key = protocol.deliveries_key(self.run_id, self.attempt)
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, protocol.DELIVERIES_TTL_S)
        count, _ = pipe.execute()
        return int(count) - 1

    def _resolve_paths(self, spec: dict[str, Any]) -> dict[str, Any]:
        return resolve_paths(self.kind, spec, self.settings)

    def _refused_path(self, cfg: Any) -> tuple[str, str] | None:
        return refused_path(cfg, self.settings)

    @property
    def _marker(self) -> Path:
        return self.run_dir / "worker_status.json"

    def _finished_before(self) -> bool:
        """This attempt already ended (a redelivered message): do not run it again."""
        try:
            done = json.loads(self._marker.read_text())
        except (OSError, ValueError):
            return False
        if done.get("state") in FINAL_STATES and int(done.get("attempt", -1)) >= self.attempt:
            log.warning("run %s attempt %d already ended %s: skipping the redelivery", self.run_id, self.attempt,
                        done["state"])
            return True
        return False

    def _record(self, state: str) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._marker.write_text(json.dumps({"state": state, "attempt": self.attempt, "worker_id": self.worker_id,
                                                "time": time.time()}))
        except OSError as exc:
            log.warning("run %s: cannot record its outcome: %s", self.run_id, exc)

    def _with_redis(self, fn: Any) -> Any:
        """Call fn, retrying Redis outages with backoff for up to REDIS_WAIT_S."""
        deadline = time.monotonic() + REDIS_WAIT_S
        delay = 0.2
        while True:
            try:
                return fn()
            except redis.RedisError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _safe(self, fn: Any) -> Any:
        try:
            return fn()
        except OUTAGE_ERRORS as exc:
            log.warning("run %s: Redis unreachable: %s", self.run_id, exc)
            return None


def _sigterm_default_in_forked_children() -> None:
    """A process forked while a run's StopWatch handles SIGTERM (the engine's helpers: a prepare run's encoders)
    dies of SIGTERM as any process does: with the inherited handler, the exception it raises is taken for a task's
    error by the helper's pool, which then waits for work for ever, and the run with it."""
    handler = signal.getsignal(signal.SIGTERM)
    if isinstance(getattr(handler, "__self__", None), StopWatch):
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_sigterm_default_in_forked_children)


def allow_engine_processes() -> None:
    """Let the engine start processes of its own (a prepare run's encoders, an image folder's decoding
    workers): Celery's pool processes are daemonic, and multiprocessing refuses children to a daemonic process.
    The engine's children are daemons that its pools end, and multiprocessing ends any left at this process's
    exit."""
    current = multiprocessing.current_process()
    if current.daemon:
        try:
            current.daemon = False
        except AssertionError:  # a process object multiprocessing considers started: leave it
            log.warning("this worker process stays daemonic: the engine cannot start processes of its own")


def prepare_summary(info: dict[str, Any]) -> str:
    """One line for a prepare run's outcome: 'scanned 70,000 images (10 classes)' / 'packed 70,000 images ...'."""
    splits, classes, packed = info.get("splits"), info.get("classes"), info.get("packed")
    splits = splits if isinstance(splits, dict) else {}
    classes = classes if isinstance(classes, list) else []
    images = sum(int(s.get("images") or 0) for s in splits.values() if isinstance(s, dict))
    if isinstance(packed, dict):
        return f"packed {images:,} images into {packed.get('shards', '?')} shards at short side " \
               f"{packed.get('short_side', '?')}"
    return f"scanned {images:,} images ({len(classes)} classes)"


def resolve_paths(kind: str, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Relative paths in a spec the server queued are relative to the storage root (servers and workers may
    mount the storage at different places): an evaluation's checkpoint, a fork's `fork_from` (a pretraining run
    started from another's checkpoint), a data.root (a registered dataset's packed copy,
    `datasets/<team>/<name>/...`) and a prepare run's `out`. Absolute paths are left as they are."""
    spec = dict(spec)

    def under_storage(value: Any) -> Any:
        return str(settings.storage / value) if isinstance(value, str) and value and not os.path.isabs(value) \
            else value

    if kind in EVAL_KINDS and spec.get("checkpoint"):
        spec["checkpoint"] = under_storage(spec["checkpoint"])
    if kind == "pretrain" and spec.get("fork_from"):
        spec["fork_from"] = under_storage(spec["fork_from"])
    if isinstance(spec.get("data"), dict) and spec["data"].get("root"):
        spec["data"] = {**spec["data"], "root": under_storage(spec["data"]["root"])}
    if kind == "prepare" and spec.get("out"):
        spec["out"] = under_storage(spec["out"])
    return spec


def refused_path(cfg: Any, settings: Settings) -> tuple[str, str] | None:
    """-> (field, why) for a path this worker must not open: a data.root outside the dataset roots, a
    checkpoint or a fork's `fork_from` outside the storage root, a prepare run's `out` outside <storage>/datasets
    (symlinks and '..' resolved). The server checks the same before queueing; the worker checks again before the
    engine touches anything, trusting nothing it is sent."""
    roots = settings.allowed_dataset_roots
    if cfg.data.root and not inside(cfg.data.root, roots):
        return "data.root", f"must be inside one of the dataset roots {', '.join(map(str, roots))}"
    checkpoint = getattr(cfg, "checkpoint", None)
    storage = settings.storage.resolve()
    if checkpoint and not inside(checkpoint, [storage]):
        return "checkpoint", f"must be inside the storage root {storage}"
    fork_from = getattr(cfg, "fork_from", None)
    if fork_from and not inside(fork_from, [storage]):
        return "fork_from", f"must be inside the storage root {storage}"
    out = getattr(cfg, "out", None)
    packed = settings.packed_datasets_root
    if out and (not inside(out, [packed]) or Path(out).expanduser().resolve() == packed):
        return "out", f"must be a folder inside {packed}"
    return None


def execute_run(run_id: str, kind: str, spec: dict[str, Any], attempt: int, settings: Settings | None = None) -> str:
    """Run one pretraining or evaluation run to its end; -> its final state (see the module docstring)."""
    return _Run(run_id, kind, spec, attempt, settings or Settings.from_env()).execute()
