"""The event schema and its sinks."""

import io
import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from mocov3_core.events import (
    ConsoleSink,
    Emitter,
    Event,
    JsonlSink,
    ListSink,
    decode_float,
    encode_float,
    finite_or_none,
)


def test_emitter_numbers_events_per_run_and_fans_out(tmp_path: Path) -> None:
    mem, jsonl = ListSink(), JsonlSink(tmp_path / "e.jsonl")
    em = Emitter("run1", [mem, jsonl], seq=5)
    em.emit("status", state="running")
    em.emit("metrics", step=0, values={"loss": float("nan"), "lr": 1e-3})
    em.close()
    assert [e.seq for e in mem.events] == [5, 6]
    lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert lines[1]["payload"]["values"]["loss"] == "nan"  # JSON has no NaN
    assert set(lines[0]) == {"run_id", "seq", "time", "type", "payload"}
    assert Event.model_validate(lines[1]).type == "metrics"


def test_a_rollback_event_round_trips_through_json() -> None:
    em, mem = Emitter("r", []), ListSink()
    em.sinks = [mem]
    em.emit("rollback", branch=1, from_step=24, to_step=16, alert_kind="grad_spike", alert_step=20, lr_scale=0.5,
            skipped=[16, 22], checkpoint="/c/step_0000016.pt")
    back = Event.model_validate(json.loads(mem.events[0].to_json()))
    assert back.type == "rollback" and back.payload["skipped"] == [16, 22] and back.payload["lr_scale"] == 0.5


def test_event_rejects_unknown_type_and_negative_seq() -> None:
    with pytest.raises(ValidationError):
        Event(run_id="r", seq=0, time=0.0, type="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Event(run_id="r", seq=-1, time=0.0, type="log")


def test_console_sink_draws_progress_and_prints_alerts() -> None:
    buf = io.StringIO()
    em = Emitter("r", [ConsoleSink(buf)])
    em.emit("status", state="running", step=0, total_steps=4, phase="pretrain")
    for step in range(4):
        em.emit("metrics", step=step, values={"loss": 4.0 - step})
    em.emit("alert", kind="grad_spike", step=2, message="spike", remedy="lower lr")
    em.emit("status", state="succeeded", message="done")
    em.close()
    text = buf.getvalue()
    assert "4/4" in text and "ALERT [grad_spike] step 2" in text and "[succeeded] done" in text


def test_non_finite_floats_travel_as_strings_and_come_back() -> None:
    payload = finite_or_none({"a": [math.nan, math.inf], "b": -math.inf, "c": 1.5, "d": "text"})
    assert payload == {"a": ["nan", "inf"], "b": "-inf", "c": 1.5, "d": "text"}
    back = [decode_float(v) for v in (*payload["a"], payload["b"], payload["c"], " Infinity ", 10**400, -(10**400))]
    assert math.isnan(back[0]) and back[1:] == [math.inf, -math.inf, 1.5, math.inf, math.inf, -math.inf]
    assert [decode_float(v) for v in (True, "text", None, [1.0], {"x": 1})] == [None] * 5
    assert [encode_float(x) for x in (math.nan, math.inf, -math.inf, 0.25)] == ["nan", "inf", "-inf", 0.25]
