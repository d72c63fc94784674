"""bench/detectors.py: its labelling rule (independent of the detectors) on hand-made traces, and its replay of a real
run's events through a fresh StabilityMonitor raising the alerts the live run raised."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mocov3_core.config import PretrainConfig
from mocov3_core.events import ListSink
from mocov3_core.presets import build_spec
from mocov3_core.train import pretrain

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_detectors", ROOT / "bench" / "detectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_detectors"] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bench = _bench()


def _trace(grad: list[float], knn: dict[int, float], faults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [{"h": {"monitor": {}, "faults": faults or {}}}]
    for step, g in enumerate(grad):
        records.append({"s": step, "v": {"loss": 4.0, "grad_norm": g, "grad_norm/patch_proj": g / 2}})
        if step in knn:
            records.append({"s": step, "v": {"knn_top1": knn[step]}})
    return records


FLAT = [1.0 + 0.01 * (i % 5) for i in range(120)]
RISING_KNN = {i: 30.0 + i / 10 for i in range(9, 120, 10)}


def test_a_spike_followed_by_a_dip_is_unstable_from_the_spike() -> None:
    grad = list(FLAT)
    grad[50] = 4.0  # 4x the trailing median
    knn = dict(RISING_KNN)
    knn[69] = knn[59] - 6  # 6 points under the best so far, 19 steps after the spike
    label = bench.label_trace(_trace(grad, knn))
    assert label["label"] == "unstable" and label["onset"] == 50
    assert [(s, k) for s, k, _ in label["spikes"]] == [(50, "grad_norm"), (50, "grad_norm/patch_proj")]
    assert label["dips"] == [[69, 6.0]]


def test_a_spike_without_a_dip_or_a_dip_without_a_spike_is_stable() -> None:
    grad = list(FLAT)
    grad[50] = 4.0
    assert bench.label_trace(_trace(grad, RISING_KNN))["label"] == "stable"
    knn = dict(RISING_KNN)
    knn[69] = knn[59] - 6
    assert bench.label_trace(_trace(FLAT, knn))["label"] == "stable"
    grad[50] = 2.9  # under SPIKE_K: not a spike, even with the dip
    assert bench.label_trace(_trace(grad, knn))["label"] == "stable"


def test_an_injected_fault_or_a_non_finite_value_sets_the_onset() -> None:
    assert bench.label_trace(_trace(FLAT, RISING_KNN, {"spike_at_step": 70}))["onset"] == 70
    grad = list(FLAT)
    grad[33] = float("nan")
    label = bench.label_trace(_trace(grad, RISING_KNN))
    assert label["label"] == "unstable" and label["onset"] == 33


@pytest.mark.fmnist
def test_replaying_a_real_runs_events_raises_the_live_runs_alerts(tmp_path: Path) -> None:
    cfg = build_spec("pretrain", "fmnist_tiny", ["data.limit=512", "optim.batch_size=32", "optim.epochs=3",
                                                 "train.log_every=3", "monitor.knn_every=6", "monitor.knn_queue=256",
                                                 "monitor.knn_eval_samples=100", "faults.spike_at_step=30"])
    assert isinstance(cfg, PretrainConfig)
    sink = ListSink()
    result = pretrain(cfg, tmp_path, sinks=[sink], resume=None)
    assert any(a["kind"] == "grad_spike" and a["step"] == 30 for a in result.alerts)
    lines = [e.to_json() for e in sink.events]
    trace = bench.trace_from_events(lines)
    assert bench.header(trace)["faults"]["spike_at_step"] == 30
    live = bench.live_alerts(trace)
    assert live == [(a["kind"], a["step"]) for a in result.alerts]
    replayed = bench.replay(trace, bench.monitor_config(bench.header(trace), "run", {}))
    assert [(a.kind, a.step) for a in replayed] == live
    # another threshold changes what the replay raises: the replay really runs the detectors
    strict = bench.replay(trace, bench.monitor_config(bench.header(trace), "run", {"spike_ratio": 1e6}))
    assert not any(a.kind == "grad_spike" for a in strict)
