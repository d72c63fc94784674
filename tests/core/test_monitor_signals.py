"""The SSL-specific detectors on synthetic series (docs/method.md §6.1): update_spike over the update-to-weight
ratios, entropy_collapse over the attention entropies and rank_collapse over RankMe and feat_std. Each fires
at the step its rule says, stays quiet on noise, raises one alert per episode, and keeps its state through a
JSON round trip of the monitor's state_dict."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from mocov3_core.config import MonitorConfig
from mocov3_core.monitor import Alert, DropDetector, StabilityMonitor

LEVELS = {"update_ratio/patch_proj": 2e-3, "update_ratio/first_block": 1e-3, "update_ratio/last_block": 1e-3,
          "update_ratio/heads": 1.5e-3}
D = 64  # feature width of the synthetic monitor features


def update_run(seed: int, steps: int = 2000) -> list[tuple[int, dict[str, float]]]:
    """Update ratios as a healthy AdamW run shows them: rising through the warmup, decaying with the cosine
    schedule, lognormal noise around that."""
    rng = random.Random(seed)
    run = []
    for t in range(steps):
        schedule = min(1.0, (t + 1) / 200) * (0.55 + 0.45 * math.cos(math.pi * t / steps))
        run.append((t, {k: level * schedule * math.exp(rng.gauss(0.0, 0.15)) for k, level in LEVELS.items()}))
    return run


def eval_run(seed: int, evals: int = 60, every: int = 50) -> list[tuple[int, dict[str, float]]]:
    """Collapse signals at kNN evaluations of a healthy run: attention entropy sharpening slowly from log(17),
    RankMe rising then settling, feat_std around 0.6/sqrt(d); Gaussian noise on each."""
    rng = random.Random(seed)
    out = []
    for i in range(evals):
        out.append((i * every + every - 1, {
            "attn_entropy/first_block": 2.8 - 0.6 * (1 - math.exp(-i / 20)) + rng.gauss(0.0, 0.05),
            "attn_entropy/last_block": 2.6 - 0.9 * (1 - math.exp(-i / 15)) + rng.gauss(0.0, 0.08),
            "rankme": 20.0 + 10.0 * (1 - math.exp(-i / 10)) + rng.gauss(0.0, 1.0),
            "feat_std": (0.6 + 0.1 * rng.gauss(0.0, 1.0)) / math.sqrt(D),
            "knn_top1": 40.0 + 30.0 * (1 - math.exp(-i / 15)) + rng.uniform(-1.0, 1.0)}))
    return out


def feed_steps(monitor: StabilityMonitor, run: list[tuple[int, dict[str, float]]], start: int = 0,
               stop: int | None = None) -> list[Alert]:
    return [a for s, v in run if s >= start and (stop is None or s < stop) for a in monitor.observe_step(s, v)]


def feed_evals(monitor: StabilityMonitor, evals: list[tuple[int, dict[str, float]]], start: int = 0,
               stop: int | None = None) -> list[Alert]:
    alerts: list[Alert] = []
    for step, values in evals:
        if step >= start and (stop is None or step < stop):
            alerts += monitor.observe_signals(step, values, feat_dim=D)
            alerts += monitor.observe_knn(step, values["knn_top1"])
    return alerts


def kinds(alerts: list[Alert]) -> list[tuple[str, int]]:
    return [(a.kind, a.step) for a in alerts]


@pytest.fixture
def cfg() -> MonitorConfig:
    return MonitorConfig()


# ------------------------------------------------------------------------------------------- update_spike
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_ratios_of_a_healthy_run_raise_nothing(cfg: MonitorConfig, seed: int) -> None:
    monitor = StabilityMonitor(cfg)
    assert feed_steps(monitor, update_run(seed)) == []
    assert all(monitor.updates[k].armed for k in LEVELS)  # quiet because nothing spiked, not because never armed


def test_update_spike_fires_at_its_step_and_names_the_shallowest_group(cfg: MonitorConfig) -> None:
    run = update_run(0)
    run[700][1]["update_ratio/heads"] *= 12.0
    run[700][1]["update_ratio/patch_proj"] *= 12.0  # the same step: the patch projection is named
    alerts = feed_steps(StabilityMonitor(cfg), run)
    assert kinds(alerts) == [("update_spike", 700)]
    alert = alerts[0]
    assert alert.metric == "update_ratio/patch_proj" and alert.evidence["order"] == [
        "update_ratio/patch_proj", "update_ratio/heads"]
    assert alert.value > alert.threshold > alert.baseline  # type: ignore[operator]
    assert "patch projection" in alert.remedy and "also: update_ratio/heads" in alert.message


def test_update_spike_episode_is_named_after_the_group_that_fired_first_and_alerts_once(cfg: MonitorConfig) -> None:
    run = update_run(1)
    for t in range(600, 610):  # a ten-step episode in the first block...
        run[t][1]["update_ratio/first_block"] *= 15.0
    run[604][1]["update_ratio/patch_proj"] *= 15.0  # ...which the patch projection joins: the same episode
    run[1200][1]["update_ratio/last_block"] *= 15.0  # a later, separate episode
    monitor = StabilityMonitor(cfg)
    alerts = feed_steps(monitor, run, stop=605)
    assert kinds(alerts) == [("update_spike", 600)] and alerts[0].metric == "update_ratio/first_block"
    assert monitor.updates["update_ratio/patch_proj"].in_episode
    alerts += feed_steps(monitor, run, start=605)
    assert kinds(alerts) == [("update_spike", 600), ("update_spike", 1200)]
    assert alerts[1].metric == "update_ratio/last_block"


def test_zero_update_ratios_of_frozen_groups_and_skipped_steps_are_ignored(cfg: MonitorConfig) -> None:
    run = update_run(2, steps=600)
    for t, values in run:
        values["update_ratio/patch_proj"] = 0.0  # frozen random patch projection
        if t == 300:
            values.update({k: 0.0 for k in LEVELS})  # a non-finite step skipped on the device
    monitor = StabilityMonitor(cfg)
    assert feed_steps(monitor, run) == []
    assert "update_ratio/patch_proj" not in monitor.updates


# ----------------------------------------------------------------------------------------- entropy_collapse
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_healthy_signals_at_evaluations_raise_nothing(cfg: MonitorConfig, seed: int) -> None:
    monitor = StabilityMonitor(cfg)
    assert feed_evals(monitor, eval_run(seed)) == []
    assert monitor.rank.count == 60 and monitor.std.above_floor


def test_entropy_collapse_fires_when_it_falls_below_the_fraction_of_its_recent_best(cfg: MonitorConfig) -> None:
    evals = eval_run(0)
    for i in range(30, 60):  # the last block's attention concentrates: entropy x0.8 per evaluation
        evals[i][1]["attn_entropy/last_block"] = 1.8 * 0.8 ** (i - 29)
    best = [max(v["attn_entropy/last_block"] for _, v in evals[max(0, i - cfg.collapse_history):i]) for i in
            range(1, 60)]
    expect = next(evals[i][0] for i in range(1, 60)
                  if evals[i][1]["attn_entropy/last_block"] < cfg.entropy_collapse_fraction * best[i - 1])
    alerts = feed_evals(StabilityMonitor(cfg), evals)
    assert kinds(alerts) == [("entropy_collapse", expect)]  # once, though it goes on falling to the end
    assert alerts[0].metric == "attn_entropy/last_block" and alerts[0].evidence["signals"][
        "attn_entropy/last_block"]["below"] == "fraction"


def test_entropy_collapse_by_the_floor_and_again_after_recovery(cfg: MonitorConfig) -> None:
    evals = eval_run(1, evals=100)
    for i in range(100):  # from 2 nats, a slow slide x0.94 per evaluation: never half the recent best within 10
        evals[i][1]["attn_entropy/first_block"] = 2.0 * 0.94 ** max(0, i - 19)
    evals[80][1]["attn_entropy/first_block"] = 2.0  # recovered for one evaluation: re-armed
    monitor = StabilityMonitor(cfg)
    alerts = feed_evals(monitor, evals)
    first_under = next(s for s, v in evals if v["attn_entropy/first_block"] < cfg.entropy_floor)
    assert first_under < evals[80][0]
    assert kinds(alerts) == [("entropy_collapse", first_under), ("entropy_collapse", evals[81][0])]
    assert alerts[0].evidence["signals"]["attn_entropy/first_block"]["below"] == "floor"


# ------------------------------------------------------------------------------------------- rank_collapse
def test_rank_collapse_fires_on_rankme_before_the_knn_accuracy_dips(cfg: MonitorConfig) -> None:
    evals = eval_run(2)
    for i in range(30, 60):  # dimensional collapse; the kNN accuracy holds for 5 more evaluations, then falls
        evals[i][1]["rankme"] = 29.0 * 0.7 ** (i - 29)
        if i >= 38:
            evals[i][1]["knn_top1"] = 60.0 - 8.0 * (i - 37)
    alerts = feed_evals(StabilityMonitor(cfg), evals)
    rank = [a for a in alerts if a.kind == "rank_collapse"]
    dips = [a for a in alerts if a.kind == "knn_dip"]
    assert len(rank) == 1 and dips and rank[0].step < dips[0].step
    # RankMe x0.7 per evaluation from its best (about 29): under half of it on the second evaluation
    assert rank[0].step == evals[31][0] and rank[0].metric == "rankme" and rank[0].severity == "critical"


def test_rank_collapse_on_feat_std_needs_it_to_have_been_spread(cfg: MonitorConfig) -> None:
    floor = cfg.feat_std_fraction / math.sqrt(D)
    never_spread = eval_run(0)
    for _, values in never_spread:
        values["feat_std"] = 0.5 * floor  # features that start (and stay) close together: nothing collapsed
    monitor = StabilityMonitor(cfg)
    assert feed_evals(monitor, never_spread) == [] and not monitor.std.above_floor

    evals = eval_run(0)
    for i in range(40, 60):
        evals[i][1]["feat_std"] = 0.6 / math.sqrt(D) * 0.75 ** (i - 39)
    expect = next(s for s, v in evals if v["feat_std"] < floor)
    alerts = feed_evals(StabilityMonitor(cfg), evals)
    assert kinds(alerts) == [("rank_collapse", expect)] and alerts[0].metric == "feat_std"
    assert alerts[0].threshold == pytest.approx(floor) and alerts[0].evidence["feat_dim"] == D


def test_one_rank_collapse_alert_while_either_signal_stays_down(cfg: MonitorConfig) -> None:
    evals = eval_run(1)
    for i in range(30, 60):
        evals[i][1]["rankme"] = 3.0
        evals[i][1]["feat_std"] = 0.01 / math.sqrt(D) if i >= 33 else evals[i][1]["feat_std"]
    alerts = feed_evals(StabilityMonitor(cfg), evals)
    assert kinds(alerts) == [("rank_collapse", evals[30][0])]


# ---------------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("resume_at", [603, 1620])
def test_signal_detectors_state_round_trips_mid_episode(cfg: MonitorConfig, resume_at: int) -> None:
    run = update_run(0)
    for t in range(600, 606):
        run[t][1]["update_ratio/first_block"] *= 15.0
    run[1500][1]["update_ratio/heads"] *= 15.0
    evals = eval_run(0, evals=40)
    for i in range(25, 40):
        evals[i][1]["rankme"] = 25.0 * 0.6 ** (i - 24)
        evals[i][1]["attn_entropy/first_block"] = 2.0 * 0.7 ** (i - 24)

    def replay(monitor: StabilityMonitor, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        knn_at = dict(evals)
        out: list[Alert] = []
        for step, values in run:
            if step < start or (stop is not None and step >= stop):
                continue
            out += monitor.observe_step(step, values)
            if step in knn_at:
                out += monitor.observe_signals(step, knn_at[step], feat_dim=D)
        return [a.to_payload() for a in out]

    whole = StabilityMonitor(cfg)
    expected = [a for a in replay(whole) if a["step"] >= resume_at]
    assert {a["kind"] for a in expected} >= ({"update_spike"} if resume_at < 1500 else set())
    first = StabilityMonitor(cfg)
    replay(first, stop=resume_at)
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    resumed = StabilityMonitor(cfg)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == first.state_dict()
    assert replay(resumed, start=resume_at) == expected
    assert resumed.state_dict() == whole.state_dict()


def test_a_state_from_before_the_signals_loads_with_fresh_signal_detectors(cfg: MonitorConfig) -> None:
    old = StabilityMonitor(cfg).state_dict()
    old = {k: v for k, v in old.items() if k not in ("updates", "entropy", "rank", "feat_std")} | {"version": 1}
    monitor = StabilityMonitor(cfg)
    monitor.load_state_dict(old)
    assert monitor.updates == {} and monitor.rank.count == 0


def test_drop_detector_rules() -> None:
    det = DropDetector("x", 0.5, history=3, floor=1.0, min_history=2)
    assert det.observe(0, 10.0) is None and det.observe(1, 4.0) is None  # the fraction test is not armed yet
    fell = det.observe(2, 4.9)  # under half of the best of the last 3 (10)
    assert fell is not None and fell["below"] == "fraction" and fell["threshold"] == 5.0
    assert det.observe(3, 4.0) is None  # the same episode
    assert det.observe(4, 9.0) is None and not det.in_episode  # back above: re-armed
    fell = det.observe(5, 0.5)
    assert fell is not None and fell["below"] == "fraction"
    assert DropDetector("y", None, floor=1.0).observe(0, 0.5) is None  # never above the floor: nothing fell
    with pytest.raises(ValueError):
        DropDetector("z", 1.5)
