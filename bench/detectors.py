"""The stability detectors measured on a labelled set of recorded runs: what they catch, what they cry wolf on,
and how late they are.

    PYTHONPATH=. python bench/detectors.py                      # replay bench/traces/ and print the table
    PYTHONPATH=. python bench/detectors.py --monitor default    # MonitorConfig() instead of each run's own monitor
    PYTHONPATH=. python bench/detectors.py --set spike_z=6 --set spike_ratio=2   # alternative thresholds
    PYTHONPATH=. python bench/detectors.py record [NAME ...]    # (re)train and record runs of RUNS (CPU minutes)
    PYTHONPATH=. python bench/detectors.py import NAME OUT/events.jsonl   # record an existing run's events

Each run of `RUNS` was trained once with the engine's CLI and kept as a compact trace,
``bench/traces/<name>.jsonl.gz``: a header (the resolved spec), then every ``metrics`` event's values and every
``alert`` event of the live run, in the order the engine emitted them. Replaying a trace feeds the same values, in
the same order, to a fresh `StabilityMonitor` (the loop calls ``observe_step`` for each step's row and
``observe_knn`` after each kNN evaluation), so the replay under the run's own monitor settings raises the alerts
the live run raised (the ``live`` column says whether it did), and under other settings shows what they would
have raised.

Labels (``bench/traces/labels.json``) come from a rule that does not use the detectors (`label_trace`):

- a run with an injected fault is unstable from the fault's step (``faults.nan_grad_at_step``,
  ``faults.spike_at_step``);
- a non-finite loss or gradient norm makes a run unstable from that step;
- otherwise a **spike** is a step whose gradient norm (global or any per-layer group) exceeds ``SPIKE_K`` times the
  median of that norm over the previous ``SPIKE_HISTORY`` steps (at least ``SPIKE_MIN_HISTORY`` of them), and a
  **dip** is a kNN evaluation ``DIP_POINTS`` or more below the best kNN accuracy seen so far in the run. A run is
  unstable when a dip follows a spike within ``CONFIRM_STEPS`` steps; its onset is its first spike (the first
  spike of the run, whether or not it was the one confirmed). Every other run is stable.

These differ from the detectors on purpose: a plain ratio to a longer trailing median over every value (the
detectors use a median + MAD z-score and a ratio over the values they accepted, after a warm-up), a dip against
the run's best so far (the detectors: the best of the last 8 evaluations) and a larger dip (5 points, not 3).
A detector alert counts as catching an unstable run when it comes at or after the onset; every alert on a
stable run is a false alarm (the summary also counts the critical ones alone).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocov3_core.config import VIT_SHAPES, MonitorConfig
from mocov3_core.monitor.detectors import Alert, StabilityMonitor

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "bench" / "traces"
LABELS = TRACES / "labels.json"

SPIKE_K = 3.0
SPIKE_HISTORY = 100
SPIKE_MIN_HISTORY = 20
DIP_POINTS = 5.0
CONFIRM_STEPS = 200

# Values kept in a trace: what the monitor reads, what the results page draws, and the engine's newer signals.
EVAL_SIGNALS = ("attn_entropy/", "rankme", "feat_std")  # measured at the kNN monitor's evaluations
KEEP_PREFIXES = ("loss", "grad_norm", "nonfinite", "lr", "knn_top1", "update_ratio/", "attn_entropy/", "rankme",
                 "feat_std")

_TINY_LONG = ["optim.epochs=4", "monitor.knn_every=8"]  # fmnist_tiny for 128 steps, kNN every 8 steps


@dataclass(frozen=True)
class RunDef:
    preset: str
    overrides: tuple[str, ...] = ()
    note: str = ""
    fork_at: int | None = None  # train to this step, then fork from its checkpoint with fork_overrides
    fork_overrides: tuple[str, ...] = ()


# The labelled set. Each is one `python -m mocov3_core pretrain --preset P --set ...` on this machine's CPU.
RUNS: dict[str, RunDef] = {
    "unstable_learned": RunDef("fmnist_unstable", (), "learned patch projection, lr 1e-2: the paper's instability"),
    "unstable_frozen": RunDef("fmnist_unstable_frozen", (), "the same run with a frozen random patch projection"),
    "small_learned_lr1e-3": RunDef("fmnist_unstable", ("optim.base_lr=1e-3", "train.max_steps=150"),
                                   "the unstable regime at fmnist_small's lr 1e-3 (learned), 150 steps"),
    "tiny": RunDef("fmnist_tiny", tuple(_TINY_LONG), "fmnist_tiny, 128 steps"),
    "tiny_seed1": RunDef("fmnist_tiny", (*_TINY_LONG, "train.seed=1"), "fmnist_tiny, 128 steps, seed 1"),
    "tiny_learned_lr3e-3": RunDef("fmnist_tiny", (*_TINY_LONG, "model.stop_grad_patch_proj=false",
                                                  "optim.base_lr=3e-3"), "fmnist_tiny, learned, lr 3e-3"),
    "tiny_spike": RunDef("fmnist_tiny", (*_TINY_LONG, "faults.spike_at_step=80"),
                         "fmnist_tiny with a gradient spike injected at step 80 (inputs x1000)"),
    "tiny_nan": RunDef("fmnist_tiny_nan", (), "the NaN preset: a non-finite gradient at step 12, policy stop"),
    # tests/core/test_collapse.py's run: BYOL forked at step 32 into momentum 0 (target = online encoder), a collapse
    "tiny_byol_collapse": RunDef(
        "fmnist_tiny_byol", ("optim.base_lr=5e-3", "optim.epochs=4", "train.log_every=4", "train.ckpt_every=32",
                             "monitor.knn_every=4", "monitor.knn_eval_samples=2000", "monitor.knn_queue=2048"),
        "fmnist_tiny_byol forked at step 32 into byol.momentum=0: a representation collapse", fork_at=32,
        fork_overrides=("train.max_steps=60", "byol.momentum=0")),
}


# ------------------------------------------------------------------ traces
def _keep(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k.startswith(KEEP_PREFIXES)}


def trace_from_events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """events.jsonl lines -> trace records: {"h": spec} once, {"s": step, "v": values}, {"s": step, "a": alert},
    {"end": status payload}; in the engine's order (seq)."""
    events = sorted((json.loads(line) for line in lines if line.strip()), key=lambda e: e["seq"])
    out: list[dict[str, Any]] = []
    for event in events:
        payload = event["payload"]
        if event["type"] == "config":
            out.append({"h": payload["spec"]})
        elif event["type"] == "metrics":
            values = _keep(payload["values"])
            if values:
                out.append({"s": payload["step"], "v": values})
        elif event["type"] == "alert":
            alert = {k: payload.get(k) for k in ("kind", "metric", "value", "severity")}
            out.append({"s": payload["step"], "a": alert})
        elif event["type"] == "status" and payload.get("state") not in (None, "running"):
            out.append({"end": {k: payload.get(k) for k in ("state", "step", "message", "final_loss")}})
    return out


def write_trace(name: str, records: list[dict[str, Any]]) -> Path:
    TRACES.mkdir(parents=True, exist_ok=True)
    path = TRACES / f"{name}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:  # mtime 0 below: same bytes for same run
        fh.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    data = gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=9, mtime=0)
    path.write_bytes(data)
    return path


def read_trace(name: str) -> list[dict[str, Any]]:
    with gzip.open(TRACES / f"{name}.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def header(trace: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r["h"] for r in trace if "h" in r)


def step_rows(trace: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(step, values) of the per-step rows (those with a loss), in order."""
    for r in trace:
        if "v" in r and "loss" in r["v"]:
            yield r["s"], r["v"]


def knn_points(trace: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["s"], r["v"]["knn_top1"]) for r in trace if "v" in r and "knn_top1" in r["v"]]


def live_alerts(trace: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["a"]["kind"], r["s"]) for r in trace if "a" in r]


# ------------------------------------------------------------------ labels (independent of the detectors)
def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def rule_spikes(trace: list[dict[str, Any]]) -> list[tuple[int, str, float]]:
    """(step, metric, ratio) of every step whose gradient norm exceeds SPIKE_K x its trailing median."""
    history: dict[str, list[float]] = {}
    spikes: list[tuple[int, str, float]] = []
    for step, values in step_rows(trace):
        for key, value in values.items():
            if not key.startswith("grad_norm") or not _finite(value) or value <= 0:
                continue
            past = history.setdefault(key, [])
            if len(past) >= SPIKE_MIN_HISTORY:
                med = statistics.median(past[-SPIKE_HISTORY:])
                if med > 0 and value > SPIKE_K * med:
                    spikes.append((step, key, value / med))
            past.append(value)
    return spikes


def rule_dips(trace: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, drop) of every kNN evaluation DIP_POINTS or more below the run's best so far."""
    best: float | None = None
    dips: list[tuple[int, float]] = []
    for step, top1 in knn_points(trace):
        if best is not None and best - top1 >= DIP_POINTS:
            dips.append((step, best - top1))
        best = top1 if best is None else max(best, top1)
    return dips


def label_trace(trace: list[dict[str, Any]]) -> dict[str, Any]:
    spec = header(trace)
    faults = spec.get("faults", {})
    spikes, dips = rule_spikes(trace), rule_dips(trace)
    first_spike = min((s for s, _, _ in spikes), default=None)
    info: dict[str, Any] = {"spikes": [[s, k, round(r, 2)] for s, k, r in spikes][:20],
                            "dips": [[s, round(d, 2)] for s, d in dips]}
    forked = next((r["fork"] for r in trace if "fork" in r), None)
    if forked is not None:
        return {"label": "unstable", "onset": forked["step"], "by": f"fork with {', '.join(forked['overrides'])}",
                **info}
    injected = [(faults.get(k), k) for k in ("nan_grad_at_step", "spike_at_step") if faults.get(k) is not None]
    if injected:
        step, fault = min(injected)
        return {"label": "unstable", "onset": step, "by": f"injected faults.{fault}", **info}
    bad = next((s for s, v in step_rows(trace) if any(not _finite(v[k]) for k in v if k.startswith(("loss",
                                                                                                 "grad_norm")))), None)
    if bad is not None:
        return {"label": "unstable", "onset": bad, "by": "non-finite loss or gradient", **info}
    confirmed = [(s, d) for s, d in dips if any(0 <= s - sp <= CONFIRM_STEPS for sp, _, _ in spikes)]
    if confirmed:
        return {"label": "unstable", "onset": first_spike,
                "by": f"spike > {SPIKE_K:g}x median, then a kNN dip of {confirmed[0][1]:.1f} points at step "
                      f"{confirmed[0][0]}", **info}
    return {"label": "stable", "onset": None, "by": "no spike followed by a kNN dip", **info}


# ------------------------------------------------------------------ replay
@dataclass
class Replay:
    name: str
    label: str
    onset: int | None
    alerts: list[Alert] = field(default_factory=list)
    live_match: bool | None = None

    @property
    def kinds(self) -> Counter[str]:
        return Counter(a.kind for a in self.alerts)

    @property
    def first_alert(self) -> int | None:
        return min((a.step for a in self.alerts), default=None)

    @property
    def catch(self) -> Alert | None:
        """The first alert at or after the onset (an unstable run's catch)."""
        if self.onset is None:
            return None
        onset = self.onset
        return min((a for a in self.alerts if a.step >= onset), key=lambda a: a.step, default=None)

    @property
    def caught_at(self) -> int | None:
        return None if self.catch is None else self.catch.step


def monitor_config(spec: dict[str, Any], mode: str, overrides: dict[str, Any]) -> MonitorConfig:
    base = spec.get("monitor", {}) if mode == "run" else {}
    return MonitorConfig(**{**base, **overrides})


def replay(trace: list[dict[str, Any]], cfg: MonitorConfig) -> list[Alert]:
    """Feed the trace to a fresh monitor as the training loop does: each step's row to observe_step, each kNN
    evaluation to observe_knn."""
    monitor = StabilityMonitor(cfg)
    feat_dim = feature_dim(header(trace))
    alerts: list[Alert] = []
    for r in trace:
        if "v" not in r:
            continue
        values = r["v"]
        if "loss" in values:
            alerts += monitor.observe_step(r["s"], values)
        elif "knn_top1" in values or any(k.startswith(EVAL_SIGNALS) for k in values):
            if hasattr(monitor, "observe_signals"):  # the collapse signals of the kNN monitor's evaluation
                alerts += monitor.observe_signals(r["s"], values, feat_dim=feat_dim)
            if "knn_top1" in values:
                alerts += monitor.observe_knn(r["s"], values["knn_top1"])
    return alerts


def feature_dim(spec: dict[str, Any]) -> int | None:
    """Width of the kNN monitor's features (the backbone's), which sets feat_std's floor in the monitor."""
    model = spec.get("model", {})
    arch = model.get("arch")
    if arch in VIT_SHAPES:
        return int(model.get("embed_dim") or VIT_SHAPES[arch][1])
    return 2048 if arch == "resnet50" else None


def run_bench(names: list[str], mode: str, overrides: dict[str, Any]) -> list[Replay]:
    labels = json.loads(LABELS.read_text())
    out = []
    for name in names:
        trace = read_trace(name)
        cfg = monitor_config(header(trace), mode, overrides)
        rep = Replay(name, labels[name]["label"], labels[name]["onset"], replay(trace, cfg))
        if mode == "run" and not overrides:
            rep.live_match = [(a.kind, a.step) for a in rep.alerts] == live_alerts(trace)
        out.append(rep)
    return out


def _kinds(counter: Counter[str]) -> str:
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(counter.items())) or "-"


def table(reps: list[Replay]) -> str:
    rows = ["| run | label | alerts raised (kinds) | first alert step | first spike step | delay (steps) | caught by "
            "| live |", "|---|---|---|---|---|---|---|---|"]
    for r in reps:
        delay = "" if r.onset is None else ("missed" if r.caught_at is None else str(r.caught_at - r.onset))
        by = "" if r.catch is None else f"{r.catch.kind} ({r.catch.metric})"
        live = "" if r.live_match is None else ("same" if r.live_match else "DIFFERS")
        first = "-" if r.first_alert is None else r.first_alert
        onset = "-" if r.onset is None else r.onset
        rows.append(f"| {r.name} | {r.label} | {_kinds(r.kinds)} | {first} | {onset} | {delay} | {by} | {live} |")
    return "\n".join(rows)


def summary(reps: list[Replay]) -> str:
    unstable = [r for r in reps if r.label == "unstable"]
    stable = [r for r in reps if r.label == "stable"]
    caught = [r for r in unstable if r.caught_at is not None]
    false = [r for r in stable if r.alerts]
    false_crit = [r for r in stable if any(a.severity == "critical" for a in r.alerts)]
    delays = [r.caught_at - r.onset for r in caught if r.caught_at is not None and r.onset is not None]
    med = f"{statistics.median(delays):g}" if delays else "n/a"
    return (f"unstable runs caught: {len(caught)}/{len(unstable)}; false alarms on stable runs: {len(false)}/"
            f"{len(stable)} (critical: {len(false_crit)}/{len(stable)}); median delay: {med} steps "
            f"(delays: {', '.join(map(str, delays)) or '-'})")


# ------------------------------------------------------------------ recording
def _train(preset: str, overrides: Iterable[str], out: Path, python: str) -> None:
    cmd = [python, "-m", "mocov3_core", "pretrain", "--preset", preset, "--resume", "none", "--no-progress",
           "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    print("$", " ".join(cmd[1:]), flush=True)
    # a run the monitor stops (the NaN preset's policy) exits non-zero: its events are what is recorded
    code = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
    if not (out / "events.jsonl").exists():
        raise SystemExit(f"{preset}: the run wrote no events (exit status {code})")


def record(name: str, python: str = sys.executable) -> None:
    run = RUNS[name]
    with tempfile.TemporaryDirectory(prefix=f"bench-detectors-{name}-") as tmp:
        out = Path(tmp)
        if run.fork_at is None:
            _train(run.preset, run.overrides, out / "run", python)
            import_events(name, out / "run" / "events.jsonl")
            return
        _train(run.preset, [*run.overrides, f"train.max_steps={run.fork_at}"], out / "parent", python)
        ckpt = out / "parent" / "checkpoints" / f"step_{run.fork_at:07d}.pt"
        _train(run.preset, [*run.overrides, *run.fork_overrides, f"fork_from={ckpt}"], out / "fork", python)
        import_events(name, out / "parent" / "events.jsonl", fork=(out / "fork" / "events.jsonl", run.fork_at,
                                                                   run.fork_overrides))


def import_events(name: str, events: Path, fork: tuple[Path, int, tuple[str, ...]] | None = None) -> None:
    """A run's events (and a fork's, after a {"fork": ...} record: each stream has its own seq) -> its trace and
    its label."""
    with events.open(encoding="utf-8") as fh:
        trace = trace_from_events(fh)
    if fork is not None:
        path, step, overrides = fork
        with path.open(encoding="utf-8") as fh:
            trace += [{"fork": {"step": step, "overrides": list(overrides)}},
                      *(r for r in trace_from_events(fh) if "h" not in r)]
    path = write_trace(name, trace)
    labels = json.loads(LABELS.read_text()) if LABELS.exists() else {}
    run = RUNS.get(name)
    labels[name] = {**label_trace(trace), "preset": run.preset if run else None,
                    "overrides": list(run.overrides) if run else None, "note": run.note if run else ""}
    LABELS.write_text(json.dumps(dict(sorted(labels.items())), indent=1) + "\n")
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes, label {labels[name]['label']} "
          f"(onset {labels[name]['onset']}, {labels[name]['by']})")


# ------------------------------------------------------------------ the picture (docs/screenshots/instability.png)
PANELS = (("grad_norm", "gradient norm, whole network (log)", True),
          ("grad_norm/patch_proj", "gradient norm, patch projection (log)", True),
          ("grad_norm/last_block", "gradient norm, last block (log)", True),
          ("loss", "loss", False), ("knn_top1", "kNN top-1 (%)", False))
EVAL_KINDS = ("knn_dip", "spike_then_dip", "rank_collapse", "entropy_collapse")  # drawn on the kNN panel
COLOURS = ((214, 69, 40), (40, 110, 200), (60, 150, 60), (150, 90, 170))


def plot(names: list[str], out: Path, width: int = 1400, panel_h: int = 200) -> None:
    """Each panel one signal, the runs overlaid; each alert a line in its run's colour on the panel of its metric
    (those raised at kNN evaluations on the kNN panel), with its kind."""
    from PIL import Image, ImageDraw, ImageFont

    font_path = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    font: Any
    small: Any
    try:
        font, small = ImageFont.truetype(font_path, 15), ImageFont.truetype(font_path, 12)
    except OSError:
        font = small = ImageFont.load_default()
    traces = {n: read_trace(n) for n in names}
    series: dict[str, dict[str, list[tuple[int, float]]]] = {
        n: {key: [(r["s"], float(r["v"][key])) for r in t if "v" in r and _finite(r["v"].get(key))]
            for key, _, _ in PANELS} for n, t in traces.items()}
    last = max(s for t in traces.values() for s, _ in step_rows(t))
    left, right, top, gap = 90, 30, 60, 46
    img = Image.new("RGB", (width, top + len(PANELS) * (panel_h + gap) + 20), "white")
    d = ImageDraw.Draw(img)
    legend_x = left
    for i, name in enumerate(names):
        d.rectangle([legend_x, 18, legend_x + 24, 30], fill=COLOURS[i % len(COLOURS)])
        d.text((legend_x + 30, 14), name, fill="black", font=font)
        legend_x += 60 + int(d.textlength(name, font=font))
    plot_w = width - left - right

    def x_of(step: float) -> float:
        return left + plot_w * step / max(last, 1)

    for p, (key, title, log) in enumerate(PANELS):
        y0 = top + p * (panel_h + gap)
        values = [v for n in names for _, v in series[n][key] if not log or v > 0]
        if not values:
            continue
        tr = (lambda v: math.log10(v)) if log else (lambda v: v)  # noqa: E731
        lo, hi = min(map(tr, values)), max(map(tr, values))
        pad = 0.05 * (hi - lo or 1.0)
        lo, hi = lo - pad, hi + pad

        def y_of(v: float, y0: int = y0, lo: float = lo, hi: float = hi, tr: Any = tr) -> float:
            return y0 + panel_h - panel_h * (tr(v) - lo) / (hi - lo)

        d.rectangle([left, y0, left + plot_w, y0 + panel_h], outline=(160, 160, 160))
        d.text((left, y0 - 20), title, fill="black", font=font)
        for j in range(5):  # y ticks
            tv = lo + (hi - lo) * j / 4
            y = y0 + panel_h - panel_h * j / 4
            d.line([left - 4, y, left, y], fill="black")
            label = f"{10 ** tv:.3g}" if log else f"{tv:.3g}"
            d.text((left - 8 - d.textlength(label, font=small), y - 7), label, fill="black", font=small)
        for sx in range(0, last + 1, 50):  # x ticks
            d.line([x_of(sx), y0 + panel_h, x_of(sx), y0 + panel_h + 4], fill="black")
            d.text((x_of(sx) - 8, y0 + panel_h + 5), str(sx), fill=(90, 90, 90), font=small)
        for i, name in enumerate(names):
            colour = COLOURS[i % len(COLOURS)]
            pts = [(x_of(s), y_of(v)) for s, v in series[name][key] if not log or v > 0]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2 if key == "knn_top1" else 1)
            if key == "knn_top1":
                for x, y in pts:
                    d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            if key == "grad_norm/patch_proj" and not pts:
                d.text((left + 8, y0 + 8 + 16 * i), f"{name}: frozen (no gradient)", fill=colour, font=small)
            for rec in traces[name]:  # this panel's alerts
                a = rec.get("a")
                at_eval = a is not None and a["kind"] in EVAL_KINDS
                if a is None or not ((key == "knn_top1" and at_eval) or (a["metric"] == key and not at_eval)):
                    continue
                x = x_of(rec["s"])
                d.line([x, y0, x, y0 + panel_h], fill=colour, width=1)
                row = EVAL_KINDS.index(a["kind"]) * len(names) + i if at_eval else i
                d.text((x + 3, y0 + 3 + 14 * row), a["kind"], fill=colour, font=small)
    d.text((left + plot_w - 40, img.height - 22), "step", fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    print(f"{out}: {img.width}x{img.height}")


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in MonitorConfig.model_fields:
            raise SystemExit(f"--set {item}: expected KEY=VALUE with KEY a MonitorConfig field "
                             f"({', '.join(MonitorConfig.model_fields)})")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    rec = sub.add_parser("record", help="train and record runs (all of RUNS by default)")
    rec.add_argument("names", nargs="*")
    imp = sub.add_parser("import", help="record an existing run's events.jsonl under a name")
    imp.add_argument("name")
    imp.add_argument("events", type=Path)
    pic = sub.add_parser("plot", help="draw recorded runs' curves and alerts as a PNG")
    pic.add_argument("names", nargs="+")
    pic.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "instability.png")
    parser.add_argument("--monitor", choices=["run", "default"], default="run",
                        help="each run's own monitor settings (what it ran with) or MonitorConfig()'s defaults")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a MonitorConfig field for every run, e.g. spike_z=6")
    parser.add_argument("--runs", nargs="*", help="replay only these traces")
    args = parser.parse_args(argv)
    if args.cmd == "record":
        for name in args.names or list(RUNS):
            if name not in RUNS:
                raise SystemExit(f"unknown run {name!r}; known: {', '.join(RUNS)}")
            record(name)
        return 0
    if args.cmd == "plot":
        plot(args.names, args.out)
        return 0
    if args.cmd == "import":
        import_events(args.name, args.events)
        return 0
    overrides = _parse_set(args.sets)
    labels = json.loads(LABELS.read_text())
    names = args.runs or [n for n in RUNS if n in labels] + sorted(n for n in labels if n not in RUNS)
    reps = run_bench(names, args.monitor, overrides)
    what = "each run's own monitor settings" if args.monitor == "run" else "MonitorConfig() defaults"
    print(f"detectors replayed on {len(reps)} recorded runs ({what}"
          f"{'; ' + ', '.join(f'{k}={v}' for k, v in overrides.items()) if overrides else ''})\n")
    print(table(reps))
    print()
    print(summary(reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
