"""Streaming detectors of training instability (MoCo v3, paper §4; `docs/method.md` §6).

Pure Python (no torch): the training loop reads its scalars back from the device every few steps and
feeds them here one step at a time. What the paper saw, and what these detectors look for:

- a gradient **spike** first in the patch projection and, tens of iterations later, in the last layers
  (`SpikeDetector` on the global and on each per-layer gradient norm, against a robust baseline);
- a **dip** in the dense kNN monitor: training "partially restarts" and recovers (`DipDetector`);
- the composite **spike then dip** pattern, a dip within ``dip_after_spike_steps`` of a gradient spike;
- plus non-finite losses or gradients and loss spikes, which end runs outright;
- and signals specific to self-supervised ViTs that move before the kNN curve (`docs/method.md` §6.1): an
  **update spike** in the update-to-weight ratio of a parameter group (`SpikeDetector`, named after the
  shallowest group that spiked first), an **entropy collapse** of the first or last block's attention and a
  **rank collapse** of the monitor's held-out features (RankMe, feat_std) (`DropDetector`).

Baselines are rolling medians and MADs of accepted values only: a spike never raises its own baseline,
and a non-finite value never enters one. Every detector's state is JSON-able, so a resumed run keeps
its baselines and raises the same alerts it would have raised without the interruption.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mocov3_core.config import MonitorConfig
from mocov3_core.events import finite_or_none

AlertKind = Literal["non_finite", "loss_spike", "grad_spike", "knn_dip", "spike_then_dip", "update_spike",
                    "entropy_collapse", "rank_collapse", "stall"]
Severity = Literal["warning", "critical"]

MAD_TO_SIGMA = 1.4826
"""MAD x 1.4826 estimates the standard deviation of normally distributed values."""
RECENT = 20
"""(step, value) pairs kept as evidence: the last RECENT observations up to and including the alert's step."""
LOSS_REL_FLOOR = 0.005
"""Loss spikes have no ratio test (a loss never doubles); instead the MAD is floored at 0.5% of the median,
so a nearly noiseless loss needs a rise of at least z x 1.4826 x 0.5% (about 6% at z=8) to count."""
GRAD_LAYERS: tuple[str, ...] = ("patch_proj", "first_block", "last_block", "projector", "predictor")
"""Per-layer gradient norms (``grad_norm/<layer>``), in the order that names a multi-layer spike: the
shallowest layer first, since the paper's instability starts in the patch projection."""
GLOBAL_GRAD = "grad_norm"
UPDATE_GROUPS: tuple[str, ...] = ("patch_proj", "first_block", "last_block", "heads")
"""Groups of the update-to-weight ratio (``update_ratio/<group>``), shallowest first (the order that names an
update spike seen in several groups at once)."""
UPDATE_RATIO = "update_ratio"
ENTROPY_KEYS: tuple[str, ...] = ("attn_entropy/first_block", "attn_entropy/last_block")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    return sorted_values[mid] if n % 2 else 0.5 * (sorted_values[mid - 1] + sorted_values[mid])


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


@dataclass
class Alert:
    """One detected problem, ready to become an ``alert`` event (``to_payload``)."""

    kind: AlertKind
    step: int
    metric: str
    value: float
    baseline: float | None
    threshold: float | None
    severity: Severity
    message: str
    remedy: str
    evidence: dict[str, Any] = field(default_factory=dict)
    last_healthy_checkpoint: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite floats become the strings 'nan', 'inf', '-inf' (as in events)."""
        payload: dict[str, Any] = finite_or_none(asdict(self))
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Alert:
        """Inverse of `to_payload` (the strings 'nan'/'inf'/'-inf' become floats again in `value`)."""
        data = dict(payload)
        value = data.get("value")
        data["value"] = float(value) if isinstance(value, str) else value
        return cls(**data)


class RobustBaseline:
    """Rolling median and MAD of the last `window` accepted values.

    The caller decides what is accepted: a detector adds only values it did not flag, so a spike does not
    raise its own baseline. Non-finite values are refused.
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._values: deque[float] = deque()
        self._sorted: list[float] = []
        self._mad: float | None = None

    def __len__(self) -> int:
        return len(self._values)

    @property
    def values(self) -> list[float]:
        return list(self._values)

    def add(self, value: float) -> None:
        if not _finite(value):
            raise ValueError(f"a non-finite value ({value}) cannot enter a baseline")
        value = float(value)
        if len(self._values) >= self.window:
            old = self._values.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._values.append(value)
        bisect.insort(self._sorted, value)
        self._mad = None

    def reset(self, values: Iterable[float] = ()) -> None:
        self._values.clear()
        self._sorted.clear()
        self._mad = None
        for value in values:
            self.add(value)

    def median(self) -> float:
        if not self._sorted:
            raise ValueError("empty baseline")
        return _median(self._sorted)

    def mad(self) -> float:
        """Median absolute deviation from the median (computed lazily: most steps never need it)."""
        if self._mad is None:
            med = self.median()
            self._mad = _median(sorted(abs(v - med) for v in self._sorted))
        return self._mad

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "values": list(self._values)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        window = int(state.get("window", self.window))
        self.window = window
        self.reset(float(v) for v in state["values"])


class SpikeDetector:
    """Flags a value far above its robust baseline, once per episode.

    Armed after `warmup_steps` observations (and once the baseline holds `min_history` values). A value is
    a spike when it exceeds BOTH ``median + z * 1.4826 * MAD`` AND ``ratio * median`` (the second test
    keeps a flat baseline, whose MAD is near 0, from firing on noise; ``ratio=None`` skips it). The MAD is
    floored at ``rel_floor * |median|``. Spikes are not added to the baseline; consecutive spiking values
    form one episode and one alert, and the detector re-arms when a value falls back under the threshold.
    An episode that lasts `adapt_after` observations (default: `window`) is taken as a new level: the
    baseline is refilled with the episode's values and the detector re-arms.
    """

    def __init__(self, metric: str, warmup_steps: int, window: int, z: float, ratio: float | None, *,
                 kind: AlertKind | None = None, rel_floor: float = 1e-3, min_history: int = 8,
                 adapt_after: int | None = None) -> None:
        if z <= 0:
            raise ValueError(f"z must be > 0, got {z}")
        self.metric = metric
        self.kind: AlertKind = kind or ("loss_spike" if metric.startswith("loss") else "grad_spike")
        self.warmup_steps = warmup_steps
        self.z = z
        self.ratio = ratio
        self.rel_floor = rel_floor
        self.min_history = max(1, min(min_history, window))
        self.adapt_after = adapt_after if adapt_after is not None else window
        self.baseline = RobustBaseline(window)
        self.count = 0
        self.in_episode = False
        self.episode_start: int | None = None
        self._episode_values: list[float] = []
        self.recent: deque[tuple[int, float]] = deque(maxlen=RECENT)

    @property
    def armed(self) -> bool:
        return self.count >= self.warmup_steps and len(self.baseline) >= self.min_history

    def thresholds(self) -> tuple[float, float | None] | None:
        """(z threshold, ratio threshold) under the current baseline; None while the baseline is empty."""
        if not len(self.baseline):
            return None
        med, mad = self.baseline.median(), self.baseline.mad()
        scale = max(mad, self.rel_floor * abs(med))
        z_thr = med + self.z * MAD_TO_SIGMA * scale
        ratio_thr = self.ratio * med if self.ratio is not None and med > 0 else None
        return z_thr, ratio_thr

    def threshold(self) -> float | None:
        """The effective threshold: a value above it is a spike (once armed)."""
        thr = self.thresholds()
        if thr is None:
            return None
        return thr[0] if thr[1] is None else max(thr[0], thr[1])

    def is_spike(self, value: float) -> bool:
        if not self.armed:
            return False
        med = self.baseline.median()  # cheap tests first: the MAD is needed only for values well above the median
        if value <= med or (self.ratio is not None and med > 0 and value <= self.ratio * med):
            return False
        thr = self.threshold()
        return thr is not None and value > thr

    def observe(self, step: int, value: float) -> Alert | None:
        """Feed one finite value; return an alert when it starts a spike episode. Non-finite values are
        ignored here (the caller reports them as 'non_finite') and never enter the baseline."""
        if not _finite(value):
            return None
        value = float(value)
        self.recent.append((step, value))
        spike = self.is_spike(value)
        self.count += 1
        if not spike:
            self.in_episode = False
            self.episode_start = None
            self._episode_values.clear()
            self.baseline.add(value)
            return None
        if self.in_episode:
            self._episode_values.append(value)
            if len(self._episode_values) >= self.adapt_after:  # a new level, not a spike: adopt it
                self.baseline.reset(self._episode_values[-self.baseline.window:])
                self.in_episode = False
                self.episode_start = None
                self._episode_values.clear()
            return None
        self.in_episode = True
        self.episode_start = step
        self._episode_values = [value]
        return self._alert(step, value)

    def _alert(self, step: int, value: float) -> Alert:
        med, mad = self.baseline.median(), self.baseline.mad()
        thr = self.threshold()
        z_thr, ratio_thr = self.thresholds() or (None, None)
        ratio = value / med if med > 0 else None
        evidence: dict[str, Any] = {
            "recent": [[s, v] for s, v in self.recent],
            "median": med, "mad": mad, "z": self.z, "z_threshold": z_thr,
            "ratio": self.ratio, "ratio_threshold": ratio_thr,
            "ratio_to_median": ratio, "baseline_size": len(self.baseline),
        }
        times = f", {ratio:.1f}x its median of {_fmt(med)}" if ratio is not None else f" (median {_fmt(med)})"
        if self.kind == "update_spike":
            message = (f"Update-to-weight ratio of {self.metric} spiked to {_fmt(value)} at step {step}{times} "
                       f"(threshold {_fmt(thr)}).")
            remedy = update_remedy(self.metric)
        elif self.kind == "loss_spike":
            message = (f"Loss spiked to {_fmt(value)} at step {step}{times} "
                       f"(threshold {_fmt(thr)}, MAD {_fmt(mad)}).")
            remedy = ("Lower optim.base_lr (e.g. x0.5) or lengthen optim.warmup_epochs; if the loss does not come "
                      "back down, roll back to the last healthy checkpoint with a lower lr.")
        else:
            message = (f"Gradient norm of {self.metric} spiked to {_fmt(value)} at step {step}{times} "
                       f"(threshold {_fmt(thr)}).")
            remedy = grad_remedy(self.metric)
        return Alert(kind=self.kind, step=step, metric=self.metric, value=value, baseline=med, threshold=thr,
                     severity="warning", message=message, remedy=remedy, evidence=evidence)

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "count": self.count, "in_episode": self.in_episode,
                "episode_start": self.episode_start, "episode_values": list(self._episode_values),
                "recent": [[s, v] for s, v in self.recent], "baseline": self.baseline.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = int(state["count"])
        self.in_episode = bool(state["in_episode"])
        start = state.get("episode_start")
        self.episode_start = None if start is None else int(start)
        self._episode_values = [float(v) for v in state.get("episode_values", [])]
        self.recent = deque(((int(s), float(v)) for s, v in state.get("recent", [])), maxlen=RECENT)
        self.baseline.load_state_dict(state["baseline"])


def grad_remedy(metric: str) -> str:
    if metric.endswith("patch_proj"):
        return ("Freeze the patch projection (model.stop_grad_patch_proj=true, paper §4.2) or lower optim.base_lr "
                "(e.g. x0.5).")
    return ("Lower optim.base_lr (e.g. x0.5) or lengthen optim.warmup_epochs; a smaller optim.batch_size is also "
            "more stable (paper §4.1). If a kNN dip follows, roll back to the last healthy checkpoint.")


def update_remedy(metric: str) -> str:
    if metric.endswith("patch_proj"):
        return ("The paper's instability starts in the patch projection: freeze it (model.stop_grad_patch_proj=true, "
                "paper §4.2) or lower optim.base_lr (e.g. x0.5); watch the kNN monitor for the dip that follows.")
    return ("Lower optim.base_lr (e.g. x0.5) or lengthen optim.warmup_epochs; a loss spike or a kNN dip often "
            "follows an update spike, and the rollback policy can replay from the last healthy checkpoint.")


class DropDetector:
    """A signal observed at kNN evaluations that collapses by falling: flags a value below ``fraction`` x the best
    of the last `history` observations (of all of them when history is None), or below `floor` once the signal
    has been above the floor (a signal that starts below it never spread: nothing fell). The fraction test arms
    after `min_history` observations. One alert per episode; it re-arms when the value is back above both
    thresholds. `observe` returns the evidence of a new episode (the caller words the alert)."""

    def __init__(self, metric: str, fraction: float | None, history: int | None = None, *,
                 floor: float | None = None, min_history: int = 2) -> None:
        if fraction is not None and not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        self.metric = metric
        self.fraction = fraction
        self.history = history
        self.floor = floor
        self.min_history = max(1, min_history)
        self.recent: deque[tuple[int, float]] = deque(maxlen=max(history or 0, RECENT))
        self.best_ever: tuple[int, float] | None = None
        self.count = 0
        self.above_floor = False
        self.in_episode = False

    def best(self) -> tuple[int, float] | None:
        if self.history is None:
            return self.best_ever
        window = list(self.recent)[-self.history:]
        return max(window, key=lambda sv: sv[1]) if window else None

    def observe(self, step: int, value: float) -> dict[str, Any] | None:
        if not _finite(value):
            return None
        value = float(value)
        best = self.best()
        frac_thr = self.fraction * best[1] if self.fraction is not None and best is not None and best[1] > 0 \
            and self.count >= self.min_history else None
        below_fraction = frac_thr is not None and value < frac_thr
        below_floor = self.floor is not None and self.above_floor and value < self.floor
        self.count += 1
        self.recent.append((step, value))
        if self.best_ever is None or value > self.best_ever[1]:
            self.best_ever = (step, value)
        if self.floor is not None and value >= self.floor:
            self.above_floor = True
        if not (below_fraction or below_floor):
            self.in_episode = False
            return None
        if self.in_episode:
            return None
        self.in_episode = True
        return {"metric": self.metric, "value": value, "best": best[1] if best else None,
                "best_step": best[0] if best else None, "fraction": self.fraction, "fraction_threshold": frac_thr,
                "floor": self.floor, "below": "fraction" if below_fraction else "floor",
                "threshold": frac_thr if below_fraction else self.floor,
                "recent": [[s, v] for s, v in list(self.recent)[-RECENT:]]}

    def state_dict(self) -> dict[str, Any]:
        return {"recent": [[s, v] for s, v in self.recent],
                "best_ever": list(self.best_ever) if self.best_ever else None, "count": self.count,
                "above_floor": self.above_floor, "in_episode": self.in_episode}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.recent = deque(((int(s), float(v)) for s, v in state["recent"]), maxlen=self.recent.maxlen)
        best = state.get("best_ever")
        self.best_ever = (int(best[0]), float(best[1])) if best else None
        self.count = int(state["count"])
        self.above_floor = bool(state["above_floor"])
        self.in_episode = bool(state["in_episode"])


class DipDetector:
    """kNN accuracy (percent) observed at irregular steps; a dip is a drop of more than `points` below the
    best of the last `history` observations. One alert per episode: it re-arms once accuracy is back within
    ``rearm_fraction * points`` of the recent best (or the old best has left the history)."""

    def __init__(self, points: float, history: int = 8, *, metric: str = "knn_top1", min_history: int = 3,
                 rearm_fraction: float = 0.5) -> None:
        if points <= 0:
            raise ValueError(f"points must be > 0, got {points}")
        self.points = points
        self.history = history
        self.metric = metric
        self.min_history = max(1, min_history)
        self.rearm_fraction = rearm_fraction
        self.recent: deque[tuple[int, float]] = deque(maxlen=max(history, RECENT))
        self.in_episode = False

    def best(self) -> tuple[int, float] | None:
        window = list(self.recent)[-self.history:]
        return max(window, key=lambda sv: sv[1]) if window else None

    def observe(self, step: int, top1: float) -> Alert | None:
        if not _finite(top1):
            return None
        top1 = float(top1)
        prior = list(self.recent)[-self.history:]
        self.recent.append((step, top1))
        if len(prior) < self.min_history:
            return None
        best_step, best = max(prior, key=lambda sv: sv[1])
        drop = best - top1
        if drop <= self.rearm_fraction * self.points:
            self.in_episode = False
        if drop <= self.points or self.in_episode:
            return None
        self.in_episode = True
        evidence: dict[str, Any] = {
            "recent": [[s, v] for s, v in list(self.recent)[-RECENT:]],
            "best": best, "best_step": best_step, "drop": drop, "points": self.points, "history": self.history,
        }
        message = (f"kNN top-1 fell to {top1:.2f}% at step {step}, {drop:.2f} points below the recent best of "
                   f"{best:.2f}% (step {best_step}; a dip is more than {self.points:g} points).")
        remedy = ("Watch whether it recovers (the paper's dips partially restart training and cost 1-3% in the end). "
                  "If dips recur, lower optim.base_lr or optim.batch_size, or freeze the patch projection "
                  "(model.stop_grad_patch_proj=true).")
        return Alert(kind="knn_dip", step=step, metric=self.metric, value=top1, baseline=best,
                     threshold=best - self.points, severity="warning", message=message, remedy=remedy,
                     evidence=evidence)

    def state_dict(self) -> dict[str, Any]:
        return {"recent": [[s, v] for s, v in self.recent], "in_episode": self.in_episode}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.recent = deque(((int(s), float(v)) for s, v in state["recent"]), maxlen=self.recent.maxlen)
        self.in_episode = bool(state["in_episode"])


def _update_rank(key: str) -> tuple[int, str]:
    group = key.split("/", 1)[1] if "/" in key else key
    return (UPDATE_GROUPS.index(group), key) if group in UPDATE_GROUPS else (len(UPDATE_GROUPS), key)


def _layer_rank(key: str) -> tuple[int, str]:
    """Order for naming a multi-layer gradient spike: known layers shallow to deep, other per-layer keys,
    then the global norm."""
    if key == GLOBAL_GRAD:
        return (len(GRAD_LAYERS) + 1, key)
    layer = key.split("/", 1)[1] if "/" in key else key
    return (GRAD_LAYERS.index(layer), key) if layer in GRAD_LAYERS else (len(GRAD_LAYERS), key)


class StabilityMonitor:
    """All detectors of a run, fed step by step (`observe_step`) and at kNN evaluations (`observe_knn` for the
    accuracy, `observe_signals` for the attention entropies, RankMe and feat_std).

    ``values`` of a step may hold 'loss', 'grad_norm' (global), 'grad_norm/<layer>' for patch_proj,
    first_block, last_block, projector, predictor (or others), 'update_ratio/<group>' for patch_proj,
    first_block, last_block, heads, and 'nonfinite' (1.0 when any gradient was non-finite); other keys (lr,
    momentum, ...) are ignored. Absent keys and zero gradient norms (a frozen
    patch projection) are skipped.
    """

    STATE_VERSION = 2
    READS_VERSIONS = (1, 2)  # a version-1 state (before the SSL signals) resumes with fresh signal detectors

    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.loss = SpikeDetector("loss", cfg.warmup_steps, cfg.window, cfg.loss_spike_z, None,
                                  kind="loss_spike", rel_floor=LOSS_REL_FLOOR)
        self.grads: dict[str, SpikeDetector] = {}
        self.updates: dict[str, SpikeDetector] = {}
        self.entropy = {key: DropDetector(key, cfg.entropy_collapse_fraction, cfg.collapse_history,
                                          floor=cfg.entropy_floor, min_history=cfg.collapse_min_evals)
                        for key in ENTROPY_KEYS}
        self.rank = DropDetector("rankme", cfg.rank_collapse_fraction, None, min_history=cfg.collapse_min_evals)
        self.std = DropDetector("feat_std", None, None, min_history=cfg.collapse_min_evals)
        self.knn = DipDetector(cfg.dip_points)
        self.grad_spikes: list[dict[str, Any]] = []  # recent gradient-spike alerts, for spike-then-dip
        self.last_alert_step: int | None = None
        self.last_critical_step: int | None = None
        self.last_step: int | None = None

    def _grad_detector(self, key: str) -> SpikeDetector:
        det = self.grads.get(key)
        if det is None:
            det = SpikeDetector(key, self.cfg.warmup_steps, self.cfg.window, self.cfg.spike_z, self.cfg.spike_ratio,
                                kind="grad_spike")
            self.grads[key] = det
        return det

    def _update_detector(self, key: str) -> SpikeDetector:
        det = self.updates.get(key)
        if det is None:
            det = SpikeDetector(key, self.cfg.warmup_steps, self.cfg.window, self.cfg.update_spike_z,
                                self.cfg.update_spike_ratio, kind="update_spike")
            self.updates[key] = det
        return det

    def healthy_since(self, step: int) -> bool:
        """True when no alert was raised at `step` or later."""
        return self.last_alert_step is None or self.last_alert_step < step

    def _record(self, alerts: list[Alert]) -> list[Alert]:
        for alert in alerts:
            self.last_alert_step = alert.step if self.last_alert_step is None else max(self.last_alert_step,
                                                                                       alert.step)
            if alert.severity == "critical":
                self.last_critical_step = (alert.step if self.last_critical_step is None
                                           else max(self.last_critical_step, alert.step))
        return alerts

    def observe_step(self, step: int, values: Mapping[str, float]) -> list[Alert]:
        self.last_step = step
        alerts: list[Alert] = []
        grad_keys = sorted((k for k in values if k == GLOBAL_GRAD or k.startswith(GLOBAL_GRAD + "/")), key=_layer_rank)
        flagged = float(values.get("nonfinite", 0.0) or 0.0)
        bad = {k: values[k] for k in ["loss", *grad_keys] if k in values and not _finite(values[k])}
        grad_bad = not _finite(flagged) or flagged > 0.5 or any(k != "loss" for k in bad)
        if bad or grad_bad:
            alerts.append(self._non_finite(step, values, bad, grad_bad))
        loss = values.get("loss")
        if loss is not None:
            spike = self.loss.observe(step, loss)
            if spike is not None:
                alerts.append(spike)
        if not grad_bad:  # a non-finite step's gradient norms are unreliable: keep them out of every baseline
            spiked: list[tuple[str, Alert]] = []
            for key in grad_keys:
                value = values[key]
                if value <= 0.0:  # frozen or absent layer
                    continue
                alert = self._grad_detector(key).observe(step, value)
                if alert is not None:
                    spiked.append((key, alert))
            if spiked:
                alerts.append(self._grad_alert(step, spiked))
            update = self._observe_updates(step, values)
            if update is not None:
                alerts.append(update)
        return self._record(alerts)

    def _observe_updates(self, step: int, values: Mapping[str, float]) -> Alert | None:
        """The update-to-weight ratios of one step: one alert per episode, an episode lasting while any group's
        ratio stays above its threshold; it names the shallowest group that spiked at its first step (the paper's
        instability starts in the patch projection)."""
        keys = sorted((k for k in values if k.startswith(UPDATE_RATIO + "/")), key=_update_rank)
        ongoing = [k for k, d in self.updates.items() if d.in_episode]
        spiked: list[tuple[str, Alert]] = []
        for key in keys:
            value = values[key]
            if not _finite(value) or value <= 0.0:  # a frozen group, or a skipped step: nothing was updated
                continue
            alert = self._update_detector(key).observe(step, value)
            if alert is not None:
                spiked.append((key, alert))
        if not spiked or ongoing:
            return None
        primary_key, primary = spiked[0]
        others = [k for k, _ in spiked[1:]]
        groups = {k: {"value": a.value, "median": a.baseline, "threshold": a.threshold,
                      "ratio_to_median": a.evidence["ratio_to_median"]} for k, a in spiked}
        message = primary.message if not others else primary.message[:-1] + f"; also: {', '.join(others)}."
        return Alert(kind="update_spike", step=step, metric=primary_key, value=primary.value,
                     baseline=primary.baseline, threshold=primary.threshold, severity="warning", message=message,
                     remedy=primary.remedy, evidence={**primary.evidence, "groups": groups,
                                                      "order": [k for k, _ in spiked]})

    def observe_signals(self, step: int, values: Mapping[str, float], feat_dim: int | None = None) -> list[Alert]:
        """The kNN monitor's collapse signals at an evaluation: attn_entropy/first_block, attn_entropy/last_block
        (ViT), rankme and feat_std of its held-out features; feat_dim (d) sets feat_std's floor,
        feat_std_fraction / sqrt(d). Absent keys are skipped."""
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        alerts: list[Alert] = []
        entropy = self._collapse_group(step, values, list(self.entropy.values()))
        if entropy:
            alerts.append(self._entropy_alert(step, entropy))
        if feat_dim:
            self.std.floor = self.cfg.feat_std_fraction / math.sqrt(feat_dim)
        rank = self._collapse_group(step, values, [self.rank, self.std])
        if rank:
            alerts.append(self._rank_alert(step, rank, feat_dim))
        return self._record(alerts)

    @staticmethod
    def _collapse_group(step: int, values: Mapping[str, float], detectors: list[DropDetector]) -> list[dict[str, Any]]:
        """Feed each detector its value; -> the evidence of those that fell, when the group starts an episode
        (none of its detectors was in one): one alert per episode of the group."""
        ongoing = any(d.in_episode for d in detectors)
        fell = [e for d in detectors if d.metric in values and (e := d.observe(step, values[d.metric])) is not None]
        return [] if ongoing else fell

    def _entropy_alert(self, step: int, fell: list[dict[str, Any]]) -> Alert:
        first = fell[0]
        parts = "; ".join(f"{e['metric']} {_fmt(e['value'])} nats" + (
            f" ({e['value'] / e['best']:.0%} of its recent best {_fmt(e['best'])} at step {e['best_step']})"
            if e["below"] == "fraction" else f" (under the floor of {_fmt(e['floor'])})") for e in fell)
        return Alert(kind="entropy_collapse", step=step, metric=first["metric"], value=first["value"],
                     baseline=first["best"], threshold=first["threshold"], severity="warning",
                     message=f"Attention entropy collapsed at step {step}: {parts}.",
                     remedy=("Attention is concentrating on few tokens, which precedes ViT divergence (Zhai et al. "
                             "2023): lower optim.base_lr (e.g. x0.5) or lengthen optim.warmup_epochs; with "
                             "policy rollback the run replays from the last healthy checkpoint with a lower lr."),
                     evidence={"signals": {e["metric"]: e for e in fell}})

    def _rank_alert(self, step: int, fell: list[dict[str, Any]], feat_dim: int | None) -> Alert:
        first = fell[0]
        parts = "; ".join(
            f"RankMe {_fmt(e['value'])}, {e['value'] / e['best']:.0%} of its best {_fmt(e['best'])} (step "
            f"{e['best_step']})" if e["metric"] == "rankme" else
            f"feat_std {_fmt(e['value'])}, under {self.cfg.feat_std_fraction:g}/sqrt({feat_dim}) = {_fmt(e['floor'])}"
            for e in fell)
        return Alert(kind="rank_collapse", step=step, metric=first["metric"], value=first["value"],
                     baseline=first["best"], threshold=first["threshold"], severity="critical",
                     message=f"The representation is collapsing at step {step}: {parts}.",
                     remedy=("The held-out features are losing dimensions (RankMe) or spread (feat_std) before the "
                             "kNN accuracy shows it: check the framework's anti-collapse parts (predictor, momentum "
                             "encoder, BN in the heads, temperature), lower optim.base_lr, or roll back to the last "
                             "healthy checkpoint."),
                     evidence={"signals": {e["metric"]: e for e in fell}, "feat_dim": feat_dim})

    def _non_finite(self, step: int, values: Mapping[str, float], bad: Mapping[str, float], grad_bad: bool) -> Alert:
        parts = [f"{k}={v}" for k, v in bad.items()]
        if grad_bad and not any(k != "loss" for k in bad):
            parts.append("gradients flagged non-finite")
        metric = next(iter(bad), "nonfinite")  # 'loss' first when the loss itself is non-finite
        value = float(bad[metric]) if metric in bad else float(values.get("nonfinite", float("nan")))
        return Alert(
            kind="non_finite", step=step, metric=metric, value=value, baseline=None, threshold=None,
            severity="critical",
            message=f"Non-finite values at step {step}: {', '.join(parts)}.",
            remedy=("Roll back to the last healthy checkpoint and resume with a lower lr (optim.base_lr x "
                    f"{self.cfg.rollback_lr_factor:g}); with fp16, check for overflow (train.precision=bf16 or fp32)."),
            evidence={"non_finite": dict(bad), "nonfinite_flag": values.get("nonfinite"),
                      "recent_loss": [[s, v] for s, v in self.loss.recent]})

    def _grad_alert(self, step: int, spiked: list[tuple[str, Alert]]) -> Alert:
        primary_key, primary = spiked[0]
        layers = {key: {"value": a.value, "median": a.baseline, "mad": a.evidence["mad"], "threshold": a.threshold,
                        "ratio_to_median": a.evidence["ratio_to_median"]} for key, a in spiked}
        others = [key for key, _ in spiked[1:]]
        ongoing = sorted((k for k, d in self.grads.items() if d.in_episode and k not in layers), key=_layer_rank)
        message = primary.message if not others else primary.message[:-1] + f"; also spiked: {', '.join(others)}."
        evidence = {**primary.evidence, "layers": layers, "order": [k for k, _ in spiked], "ongoing": ongoing}
        self.grad_spikes.append({"step": step, "metric": primary_key, "layers": [k for k, _ in spiked]})
        self._prune_spikes(step)
        return Alert(kind="grad_spike", step=step, metric=primary_key, value=primary.value, baseline=primary.baseline,
                     threshold=primary.threshold, severity="warning", message=message,
                     remedy=grad_remedy(primary_key), evidence=evidence)

    def _prune_spikes(self, step: int) -> None:
        horizon = step - self.cfg.dip_after_spike_steps
        self.grad_spikes = [s for s in self.grad_spikes if s["step"] >= horizon]

    def observe_knn(self, step: int, top1: float) -> list[Alert]:
        dip = self.knn.observe(step, top1)
        if dip is None:
            return []
        alerts = [dip]
        linked = [s for s in self.grad_spikes if step - self.cfg.dip_after_spike_steps <= s["step"] <= step]
        if linked:
            first = linked[0]
            layers_first: dict[str, int] = {}
            for s in linked:
                for layer in s["layers"]:
                    layers_first.setdefault(layer, s["step"])
            drop = dip.evidence["drop"]
            lag = step - first["step"]
            order = " then ".join(f"{k} (step {v})" for k, v in sorted(layers_first.items(), key=lambda kv: kv[1]))
            alerts.append(Alert(
                kind="spike_then_dip", step=step, metric=first["metric"], value=dip.value, baseline=dip.baseline,
                threshold=dip.threshold, severity="critical",
                message=(f"kNN dip of {drop:.2f} points at step {step} follows a gradient spike in {first['metric']} "
                         f"at step {first['step']} ({lag} steps earlier): the instability of MoCo v3 §4 "
                         f"(spikes: {order})."),
                remedy=("Roll back to the last healthy checkpoint before step "
                        f"{first['step']} and resume with a lower lr (optim.base_lr x {self.cfg.rollback_lr_factor:g})"
                        + ("; freeze the patch projection (model.stop_grad_patch_proj=true)."
                           if any(k.endswith("patch_proj") for k in layers_first) else
                           "; a smaller optim.batch_size or longer optim.warmup_epochs also helps.")),
                evidence={"spike_step": first["step"], "spike_metric": first["metric"], "dip_step": step,
                          "steps_between": lag, "drop": drop, "spikes": [dict(s) for s in linked],
                          "first_spike_by_layer": layers_first, "dip": dip.evidence}))
        return self._record(alerts)

    def state_dict(self) -> dict[str, Any]:
        return {"version": self.STATE_VERSION, "loss": self.loss.state_dict(),
                "grads": {k: d.state_dict() for k, d in self.grads.items()}, "knn": self.knn.state_dict(),
                "updates": {k: d.state_dict() for k, d in self.updates.items()},
                "entropy": {k: d.state_dict() for k, d in self.entropy.items()}, "rank": self.rank.state_dict(),
                "feat_std": {**self.std.state_dict(), "floor": self.std.floor},
                "grad_spikes": [dict(s) for s in self.grad_spikes], "last_alert_step": self.last_alert_step,
                "last_critical_step": self.last_critical_step, "last_step": self.last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        version = state.get("version")
        if version not in self.READS_VERSIONS:
            raise ValueError(f"monitor state version {version!r}; this code reads versions "
                             f"{', '.join(map(str, self.READS_VERSIONS))}")
        self.loss.load_state_dict(state["loss"])
        self.grads = {}
        for key, sub in state["grads"].items():
            self._grad_detector(key).load_state_dict(sub)
        self.knn.load_state_dict(state["knn"])
        self.updates = {}
        for key, sub in state.get("updates", {}).items():
            self._update_detector(key).load_state_dict(sub)
        for key, sub in state.get("entropy", {}).items():
            if key in self.entropy:
                self.entropy[key].load_state_dict(sub)
        if "rank" in state:
            self.rank.load_state_dict(state["rank"])
        if "feat_std" in state:
            self.std.load_state_dict(state["feat_std"])
            self.std.floor = state["feat_std"].get("floor")
        self.grad_spikes = [{"step": int(s["step"]), "metric": str(s["metric"]), "layers": list(s["layers"])}
                            for s in state["grad_spikes"]]
        self.last_alert_step = state.get("last_alert_step")
        self.last_critical_step = state.get("last_critical_step")
        self.last_step = state.get("last_step")
