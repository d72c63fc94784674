"""Streaming stability detectors (paper §4): no false alarms on clean noisy runs, exact steps on faults."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from mocov3_core.config import MonitorConfig
from mocov3_core.monitor import Alert, DipDetector, RobustBaseline, SpikeDetector, StabilityMonitor

LAYERS = {"grad_norm/patch_proj": 0.05, "grad_norm/first_block": 0.3, "grad_norm/last_block": 0.8,
          "grad_norm/projector": 1.2, "grad_norm/predictor": 0.9}

Step = tuple[int, dict[str, float]]


def synthetic_run(seed: int, steps: int = 3000) -> tuple[list[Step], list[tuple[int, float]]]:
    """A healthy run: loss decaying with Gaussian noise, lognormal gradient-norm noise around slowly drifting
    levels, kNN top-1 every 50 steps rising with +-1 noise."""
    rng = random.Random(seed)
    run: list[Step] = []
    for t in range(steps):
        drift = 1.0 + 0.5 * math.sin(t / 700.0)  # grad norms wander slowly over training
        values = {"loss": 2.0 + 4.0 * math.exp(-t / 800.0) + rng.gauss(0.0, 0.05), "lr": 1e-4, "nonfinite": 0.0}
        total = 0.0
        for key, level in LAYERS.items():
            values[key] = level * drift * math.exp(rng.gauss(0.0, 0.2))
            total += values[key] ** 2
        values["grad_norm"] = math.sqrt(total) * math.exp(rng.gauss(0.0, 0.05))
        run.append((t, values))
    knn = [(t, 10.0 + 60.0 * (1.0 - math.exp(-t / 900.0)) + rng.uniform(-1.0, 1.0)) for t in range(0, steps, 50)]
    return run, knn


def feed(monitor: StabilityMonitor, run: list[Step], knn: list[tuple[int, float]] | None = None,
         start: int = 0, stop: int | None = None) -> list[Alert]:
    """Replay steps [start, stop), interleaving kNN evaluations after the step they were taken at."""
    knn_at = dict(knn or [])
    alerts: list[Alert] = []
    for step, values in run:
        if step < start or (stop is not None and step >= stop):
            continue
        alerts += monitor.observe_step(step, values)
        if step in knn_at:
            alerts += monitor.observe_knn(step, knn_at[step])
    return alerts


def kinds(alerts: list[Alert]) -> list[tuple[str, int]]:
    return [(a.kind, a.step) for a in alerts]


@pytest.fixture
def cfg() -> MonitorConfig:
    return MonitorConfig()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_noisy_run_raises_no_alert(cfg: MonitorConfig, seed: int) -> None:
    run, knn = synthetic_run(seed)
    monitor = StabilityMonitor(cfg)
    assert feed(monitor, run, knn) == []
    assert monitor.last_alert_step is None and monitor.healthy_since(0)
    # the detectors did see everything and are armed: the silence is not from never arming
    assert monitor.loss.armed and all(monitor.grads[k].armed for k in [*LAYERS, "grad_norm"])


def test_patch_proj_spike_is_caught_at_its_step_and_leaves_the_baseline_alone(cfg: MonitorConfig) -> None:
    run, _ = synthetic_run(0)
    clean = StabilityMonitor(cfg)
    feed(clean, [(s, {k: v for k, v in vals.items() if not (s == 500 and k == "grad_norm/patch_proj")})
                 for s, vals in run], stop=550)
    run[500][1]["grad_norm/patch_proj"] *= 20.0
    monitor = StabilityMonitor(cfg)
    alerts = feed(monitor, run, stop=550)
    # the spike never entered its own baseline: same history as a run that skipped that value
    assert monitor.state_dict()["grads"]["grad_norm/patch_proj"]["baseline"] == \
        clean.state_dict()["grads"]["grad_norm/patch_proj"]["baseline"]
    alerts += feed(monitor, run, start=550)
    assert kinds(alerts) == [("grad_spike", 500)]
    alert = alerts[0]
    assert alert.metric == "grad_norm/patch_proj" and alert.severity == "warning"
    assert alert.value == pytest.approx(run[500][1]["grad_norm/patch_proj"])
    assert alert.baseline is not None and alert.threshold is not None
    assert alert.baseline < alert.threshold < alert.value and alert.value / alert.baseline > 10
    assert "stop_grad_patch_proj" in alert.remedy and "base_lr" in alert.remedy
    assert "500" in alert.message
    recent = alert.evidence["recent"]
    assert recent[-1] == [500, alert.value] and len(recent) == 20 and recent[0][0] == 481
    assert list(alert.evidence["layers"]) == ["grad_norm/patch_proj"]


def test_one_alert_per_step_names_the_shallowest_layer_then_last_layers_later(cfg: MonitorConfig) -> None:
    run, _ = synthetic_run(1)
    for key in ["grad_norm/patch_proj", "grad_norm/predictor", "grad_norm"]:
        run[600][1][key] *= 30.0
    run[630][1]["grad_norm/last_block"] *= 30.0  # "tens of iterations later, in the last layers"
    alerts = feed(StabilityMonitor(cfg), run)
    assert kinds(alerts) == [("grad_spike", 600), ("grad_spike", 630)]
    first, second = alerts
    assert first.metric == "grad_norm/patch_proj"
    assert first.evidence["order"] == ["grad_norm/patch_proj", "grad_norm/predictor", "grad_norm"]
    assert set(first.evidence["layers"]) == {"grad_norm/patch_proj", "grad_norm/predictor", "grad_norm"}
    assert "also spiked" in first.message
    assert second.metric == "grad_norm/last_block" and "stop_grad_patch_proj" not in second.remedy


def test_global_only_spike_is_named_after_the_global_norm(cfg: MonitorConfig) -> None:
    run, _ = synthetic_run(2)
    run[700][1]["grad_norm"] *= 10.0
    alerts = feed(StabilityMonitor(cfg), run)
    assert kinds(alerts) == [("grad_spike", 700)] and alerts[0].metric == "grad_norm"


def test_multi_step_spike_is_one_episode_and_rearms_afterwards(cfg: MonitorConfig) -> None:
    run, _ = synthetic_run(0)
    for t in range(500, 510):
        run[t][1]["grad_norm/last_block"] *= 15.0
    run[900][1]["grad_norm/last_block"] *= 15.0
    monitor = StabilityMonitor(cfg)
    alerts = feed(monitor, run, stop=505)
    assert kinds(alerts) == [("grad_spike", 500)] and monitor.grads["grad_norm/last_block"].in_episode
    alerts += feed(monitor, run, start=505)
    assert kinds(alerts) == [("grad_spike", 500), ("grad_spike", 900)]
    assert all(a.metric == "grad_norm/last_block" for a in alerts)


def test_nothing_fires_during_warmup_except_non_finite(cfg: MonitorConfig) -> None:
    run, _ = synthetic_run(0, steps=200)
    run[0][1]["grad_norm"] *= 50.0  # first steps are often wild
    run[20][1]["grad_norm/patch_proj"] *= 50.0
    run[30][1]["loss"] *= 3.0
    run[48][1]["grad_norm/projector"] *= 50.0
    run[40][1]["nonfinite"] = 1.0
    monitor = StabilityMonitor(cfg)
    alerts = feed(monitor, run)
    assert kinds(alerts) == [("non_finite", 40)]
    # the same spike after warmup does fire (so the silence above is warmup, not blindness)
    run2, _ = synthetic_run(0, steps=200)
    run2[60][1]["grad_norm/patch_proj"] *= 50.0
    assert kinds(feed(StabilityMonitor(cfg), run2)) == [("grad_spike", 60)]


def test_non_finite_loss_and_flag_fire_every_time_and_stay_out_of_baselines(cfg: MonitorConfig) -> None:
    run, _ = synthetic_run(0, steps=600)
    run[300][1]["loss"] = float("nan")
    run[301][1]["loss"] = float("inf")
    run[400][1]["nonfinite"] = 1.0
    run[400][1]["grad_norm"] = float("inf")
    run[401][1]["nonfinite"] = 1.0
    run[401][1]["grad_norm/patch_proj"] = 1e9  # garbage on a non-finite step: must not be judged or kept
    monitor = StabilityMonitor(cfg)
    alerts = feed(monitor, run)
    assert kinds(alerts) == [("non_finite", 300), ("non_finite", 301), ("non_finite", 400), ("non_finite", 401)]
    assert all(a.severity == "critical" for a in alerts)
    assert alerts[0].metric == "loss" and math.isnan(alerts[0].value)
    assert alerts[2].metric == "grad_norm" and alerts[2].value == math.inf
    assert alerts[3].metric == "nonfinite" and "flagged non-finite" in alerts[3].message
    assert "checkpoint" in alerts[0].remedy and "fp16" in alerts[0].remedy
    state = monitor.state_dict()
    json.dumps(state, allow_nan=False)  # no NaN/Inf anywhere in the state
    assert 1e9 not in monitor.grads["grad_norm/patch_proj"].baseline.values
    assert monitor.last_critical_step == 401
    payload = alerts[0].to_payload()
    assert payload["value"] == "nan" and payload["kind"] == "non_finite"
    json.dumps(payload, allow_nan=False)
    back = Alert.from_payload(json.loads(json.dumps(payload)))
    assert back.to_payload() == payload


def test_loss_spike(cfg: MonitorConfig) -> None:
    run, _ = synthetic_run(1)
    run[800][1]["loss"] += 1.5
    alerts = feed(StabilityMonitor(cfg), run)
    assert kinds(alerts) == [("loss_spike", 800)]
    loss = alerts[0]
    assert loss.metric == "loss" and loss.baseline is not None and loss.threshold is not None
    assert loss.baseline < loss.threshold < loss.value


def _dip_run(seed: int, spike_at: int | None, dip_at: int = 1500) -> tuple[list[Step], list[tuple[int, float]]]:
    run, knn = synthetic_run(seed)
    if spike_at is not None:
        run[spike_at][1]["grad_norm/patch_proj"] *= 20.0
        run[spike_at + 30][1]["grad_norm/last_block"] *= 20.0
    knn = [(s, v - 8.0 if s == dip_at else v) for s, v in knn]  # a dip of 8 points, then recovery
    return run, knn


def test_dip_after_spike_raises_knn_dip_and_spike_then_dip(cfg: MonitorConfig) -> None:
    run, knn = _dip_run(0, spike_at=1300)
    monitor = StabilityMonitor(cfg)
    alerts = feed(monitor, run, knn)
    assert kinds(alerts) == [("grad_spike", 1300), ("grad_spike", 1330), ("knn_dip", 1500), ("spike_then_dip", 1500)]
    dip, pattern = alerts[2], alerts[3]
    assert dip.threshold is not None and dip.value < dip.threshold
    assert dip.severity == "warning" and dip.evidence["drop"] > 7.0
    assert pattern.severity == "critical" and pattern.metric == "grad_norm/patch_proj"
    ev = pattern.evidence
    assert ev["spike_step"] == 1300 and ev["dip_step"] == 1500 and ev["steps_between"] == 200
    assert ev["first_spike_by_layer"] == {"grad_norm/patch_proj": 1300, "grad_norm/last_block": 1330}
    assert "1300" in pattern.message and "stop_grad_patch_proj" in pattern.remedy
    assert monitor.last_alert_step == 1500 and not monitor.healthy_since(1500) and monitor.healthy_since(1501)


def test_dip_without_spike_is_only_a_dip(cfg: MonitorConfig) -> None:
    run, knn = _dip_run(0, spike_at=None)
    assert kinds(feed(StabilityMonitor(cfg), run, knn)) == [("knn_dip", 1500)]


def test_dip_long_after_a_spike_is_not_linked(cfg: MonitorConfig) -> None:
    run, knn = _dip_run(0, spike_at=1000)  # 500 steps before the dip > dip_after_spike_steps=300
    alerts = feed(StabilityMonitor(cfg), run, knn)
    assert kinds(alerts) == [("grad_spike", 1000), ("grad_spike", 1030), ("knn_dip", 1500)]


def test_dip_episode_gives_one_alert_and_rearms() -> None:
    det = DipDetector(points=3.0)
    assert [det.observe(s, v) for s, v in [(0, 10.0), (50, 20.0), (100, 30.0)]] == [None, None, None]
    assert det.observe(150, 40.0) is None
    first = det.observe(200, 30.0)  # 10 points below the best
    assert first is not None and first.kind == "knn_dip" and first.baseline == 40.0
    assert det.observe(250, 31.0) is None and det.observe(300, 32.0) is None  # same episode
    assert det.observe(350, 41.0) is None  # recovered: re-armed
    again = det.observe(400, 36.0)
    assert again is not None and again.step == 400
    assert det.observe(450, float("nan")) is None


def test_zero_gradients_of_a_frozen_patch_projection_are_ignored(cfg: MonitorConfig) -> None:
    run, _ = synthetic_run(0, steps=400)
    for _, values in run:
        values["grad_norm/patch_proj"] = 0.0
    run[300][1]["grad_norm/first_block"] *= 20.0
    monitor = StabilityMonitor(cfg)
    alerts = feed(monitor, run)
    assert kinds(alerts) == [("grad_spike", 300)] and alerts[0].metric == "grad_norm/first_block"
    assert "grad_norm/patch_proj" not in monitor.grads


@pytest.mark.parametrize("resume_at", [1192, 1320])
def test_state_dict_round_trip_gives_identical_subsequent_alerts(cfg: MonitorConfig, resume_at: int) -> None:
    # 1192: inside a projector spike episode; 1320: between the patch_proj spike (1300), the last_block spike
    # (1330, whose evidence reaches back before the checkpoint) and the dip it is linked to (1500)
    run, knn = _dip_run(2, spike_at=1300)
    for t in range(1188, 1196):
        run[t][1]["grad_norm/projector"] *= 20.0
    run[1700][1]["loss"] = float("nan")
    run[2200][1]["loss"] += 2.0
    whole = StabilityMonitor(cfg)
    expected = [a.to_payload() for a in feed(whole, run, knn) if a.step >= resume_at]
    assert ("spike_then_dip", 1500) in [(a["kind"], a["step"]) for a in expected]

    first = StabilityMonitor(cfg)
    feed(first, run, knn, stop=resume_at)
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    resumed = StabilityMonitor(cfg)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == first.state_dict()
    assert [a.to_payload() for a in feed(resumed, run, knn, start=resume_at)] == expected
    assert resumed.state_dict() == whole.state_dict()
    with pytest.raises(ValueError, match="version"):
        StabilityMonitor(cfg).load_state_dict({**state, "version": 99})


def test_robust_baseline() -> None:
    base = RobustBaseline(5)
    for v in [1.0, 2.0, 3.0, 4.0, 100.0]:
        base.add(v)
    assert base.median() == 3.0 and base.mad() == 1.0
    base.add(5.0)  # rolls the 1.0 out
    assert base.values == [2.0, 3.0, 4.0, 100.0, 5.0] and base.median() == 4.0 and base.mad() == 1.0
    with pytest.raises(ValueError):
        base.add(float("nan"))
    other = RobustBaseline(5)
    other.load_state_dict(json.loads(json.dumps(base.state_dict())))
    assert other.values == base.values and other.median() == base.median()


def test_flat_baseline_needs_both_the_z_and_the_ratio_test() -> None:
    det = SpikeDetector("grad_norm", warmup_steps=10, window=50, z=8.0, ratio=2.5)
    for t in range(40):
        assert det.observe(t, 1.0 + (1e-7 if t % 2 else 0.0)) is None
    assert det.armed and det.baseline.mad() < 1e-6
    assert det.observe(40, 2.0) is None  # far above in z, but only 2x the median
    alert = det.observe(41, 3.0)
    assert alert is not None and alert.kind == "grad_spike" and alert.threshold == pytest.approx(2.5)


def test_a_lasting_new_level_is_adopted_after_a_window() -> None:
    det = SpikeDetector("grad_norm/last_block", warmup_steps=10, window=20, z=8.0, ratio=2.5)
    rng = random.Random(0)
    alerts: list[Any] = []
    for t in range(200):
        level = 1.0 if t < 60 else 5.0
        alerts.append(det.observe(t, level * math.exp(rng.gauss(0.0, 0.1))))
    alerts.append(det.observe(200, 5.0 * 20))
    fired = [a.step for a in alerts if a is not None]
    assert fired == [60, 200]
    assert det.baseline.median() == pytest.approx(5.0, rel=0.2)
