"""The one event schema shared by engine, worker, server and web, and the sinks that receive events.

Importable without torch. An event is ``{run_id, seq, time, type, payload}``; ``seq`` is per run and
monotonic, so every consumer can drop duplicates and detect gaps. A resumed run restores ``seq`` from
its checkpoint, so steps replayed after a crash carry the same seq as before and deduplicate.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

# dataset: a prepare run's DatasetInfo (mocov3_core.data.prepare; docs/datasets.md)
# rollback: the rollback policy restarted from a checkpoint (train/loop.py `Pretrainer._act`): {branch (1, 2, ...
# per run), from_step (the step training had reached), to_step (the checkpoint's), alert_kind, alert_step, lr_scale
# (after), skipped ([first, last] data positions skipped, or null), checkpoint}; emitted before any metrics of the
# replayed steps, so a consumer can keep the abandoned curve (steps to_step .. from_step - 1)
EventType = Literal["status", "config", "metrics", "alert", "log", "checkpoint", "eval_result", "heartbeat", "dataset",
                    "rollback"]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]


class Event(BaseModel):
    run_id: str
    seq: int = Field(ge=0)
    time: float = Field(description="Unix seconds at emission.")
    type: EventType
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), default=_jsonable, allow_nan=False)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# JSON has no NaN/Inf: non-finite floats travel as these strings (written by `encode_float`, read back by
# `decode_float`; the server and the web UI read them the same way).
_NONFINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
              "-inf": -math.inf, "-infinity": -math.inf}


def encode_float(value: float) -> float | str:
    """A float as JSON carries it: itself when finite, else 'nan', 'inf' or '-inf'."""
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def decode_float(value: Any) -> float | None:
    """Inverse of `encode_float`, for any JSON value: a number (NaN and +-inf included) or None when it is no
    number (bools, other strings, containers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # JSON integers have no bound; a float's range does
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        return _NONFINITE.get(value.strip().lower())
    return None


def finite_or_none(payload: Any) -> Any:
    """A payload made JSON-safe: every non-finite float, however deep, encoded by `encode_float`."""
    if isinstance(payload, float):
        return encode_float(payload)
    if isinstance(payload, dict):
        return {k: finite_or_none(v) for k, v in payload.items()}
    if isinstance(payload, list | tuple):
        return [finite_or_none(v) for v in payload]
    return payload


@runtime_checkable
class EventSink(Protocol):
    def write(self, event: Event) -> None: ...

    def close(self) -> None: ...


class Emitter:
    """Stamps events with run id, seq and time, and hands them to every sink."""

    def __init__(self, run_id: str, sinks: list[EventSink] | None = None, seq: int = 0) -> None:
        self.run_id = run_id
        self.sinks: list[EventSink] = list(sinks or [])
        self.seq = seq
        self._lock = threading.Lock()

    def emit(self, type: EventType, **payload: Any) -> Event:
        with self._lock:
            event = Event(run_id=self.run_id, seq=self.seq, time=time.time(), type=type,
                          payload=finite_or_none(payload))
            self.seq += 1
        for sink in self.sinks:
            sink.write(event)
        return event

    def sync(self) -> None:
        """Ask every sink that buffers to make what it holds durable now (a sink without `sync` writes
        through, or keeps nothing worth waiting for)."""
        for sink in self.sinks:
            sync = getattr(sink, "sync", None)
            if sync is not None:
                sync()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class ListSink:
    """Keeps events in memory (tests, and callers that inspect what a run emitted)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass

    def of_type(self, type: str) -> list[Event]:
        return [e for e in self.events if e.type == type]


class JsonlSink:
    """One JSON line per event, appended and flushed, so a crash loses at most the line being written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = self.path.open("a", encoding="utf-8")

    def write(self, event: Event) -> None:
        self._fh.write(event.to_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class ConsoleSink:
    """A progress bar for training steps, and one line for each alert, checkpoint and result."""

    def __init__(self, stream: IO[str] | None = None, bar: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.bar_enabled = bar
        self._bar: Any = None
        self._done = 0
        self._phase: Any = None  # the phase a prepare run's bar shows

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def write(self, event: Event) -> None:
        p = event.payload
        if event.type == "status":
            if p.get("total_steps") and self.bar_enabled and self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=p["total_steps"], initial=p.get("step", 0), file=self.stream,
                                 unit="step", dynamic_ncols=True, desc=p.get("phase", "train"))
                self._done = p.get("step", 0)
            elif p.get("state") in ("succeeded", "failed", "stopped", "cancelled"):
                self._close_bar()
                self._line(f"[{p['state']}] {p.get('message', '')}".rstrip())
            else:
                self._line(f"[{p.get('state', 'status')}] {p.get('message', '')}".rstrip())
        elif event.type == "metrics" and "phase" in p and "values" not in p:
            self._phase_progress(p)
        elif event.type == "metrics":
            step = int(p.get("step", 0)) + 1
            if self._bar is not None:
                self._bar.update(max(0, step - self._done))
                self._done = step
                v = p.get("values", {})
                shown = {k: v[k] for k in ("loss", "lr", "knn_top1", "imgs_per_s") if k in v}
                self._bar.set_postfix({k: f"{x:.4g}" if isinstance(x, float) else x for k, x in shown.items()},
                                      refresh=False)
        elif event.type == "alert":
            self._line(f"ALERT [{p.get('kind')}] step {p.get('step')}: {p.get('message')} -> {p.get('remedy')}")
        elif event.type == "eval_result":
            metrics = ", ".join(f"{k}={v:.2f}" for k, v in p.items() if isinstance(v, float))
            self._line(f"[{p.get('protocol', 'eval')}] {metrics}")
        elif event.type == "checkpoint":
            pass
        elif event.type == "log":
            self._line(str(p.get("message", "")))

    def _phase_progress(self, p: dict[str, Any]) -> None:
        """A prepare run's {step, total_steps, phase, images_per_s}: one bar per phase (or a line per event)."""
        phase, step, total, rate = p.get("phase"), int(p.get("step", 0)), int(p.get("total_steps", 0)), \
            p.get("images_per_s")
        rate_text = f"{rate:.1f} images/s" if isinstance(rate, float) else ""
        if not self.bar_enabled:
            self._line(f"[{phase}] {step}/{total} images {rate_text}".rstrip())
            return
        if self._bar is None or self._phase != phase:
            self._close_bar()
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="img", dynamic_ncols=True, desc=str(phase),
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}<{remaining}{postfix}]")
            self._phase = phase
        self._bar.total = total
        self._bar.set_postfix_str(rate_text, refresh=False)
        self._bar.update(step - self._bar.n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self._close_bar()
