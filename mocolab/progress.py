"""A progress bar per run in the terminal (`mocolab submit --wait`, `mocolab demo`, `mocolab datasets add` and
`prepare`): step/total (a prepare run's images done of its phase's total), images/s, the loss and the latest
top-1, fed by the run's status and metrics events from the events API (the same events the browser's SSE stream
carries), read from where the last poll stopped."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from server.runs.lifecycle import TERMINAL

from .client import Client
from .terminal import safe

LOSS_KEYS = ("loss", "ft_loss", "linear_loss")
TOP1_KEYS = (("knn_top1", "kNN"), ("linear_top1", "linear"), ("ft_top1", "fine-tune"))
SHOWN = {*LOSS_KEYS, "imgs_per_s", *(k for k, _ in TOP1_KEYS)}
PAGES_PER_POLL = 20  # 20 pages of 2,000 events: a run far ahead is caught up over a few polls
NOT_A_TTY_EVERY_S = 30.0  # into a pipe or a log file: a line every 30 s (and at each change of state)


@dataclass
class RunProgress:
    """What a run's events say so far."""

    label: str
    step: int = 0
    total: int | None = None
    phase: str | None = None
    status: str = "queued"
    message: str = ""
    values: dict[str, float] = field(default_factory=dict)
    last_seq: int = -1

    def apply(self, event: dict[str, Any]) -> None:
        p = event.get("payload") or {}
        if isinstance(event.get("seq"), int):
            self.last_seq = max(self.last_seq, event["seq"])
        if event.get("type") == "status":
            if isinstance(p.get("total_steps"), int) and p["total_steps"] > 0:
                if p.get("phase") != self.phase:  # a new phase counts from its own start
                    self.step = 0
                self.total, self.phase = p["total_steps"], p.get("phase")
            if isinstance(p.get("step"), int) and p.get("total_steps"):
                self.step = max(self.step, p["step"])
            if isinstance(p.get("state"), str):
                self.status = p["state"]
            self.message = str(p.get("message") or self.message)
        elif event.get("type") == "metrics":
            if _count(p.get("step")) is not None and _count(p.get("total_steps")):  # work done of a total (a
                if p.get("phase") != self.phase:  # prepare run's images), per phase: scan, stats, pack, verify
                    self.step = 0
                self.total, self.phase = p["total_steps"], p.get("phase")
                self.step = max(self.step, p["step"])
                if isinstance(p.get("images_per_s"), int | float) and p["images_per_s"] == p["images_per_s"]:
                    self.values["imgs_per_s"] = float(p["images_per_s"])
            elif isinstance(p.get("step"), int):
                self.step = max(self.step, p["step"] + 1)  # metrics of step s: s + 1 steps done
            for key, value in (p.get("values") or {}).items():
                if key in SHOWN and isinstance(value, int | float) and value == value:  # not NaN
                    self.values[key] = float(value)

    def postfix(self) -> str:
        """'loss 0.523, 412 img/s, kNN 41.3%' (what is known), after the state when it is not 'running'."""
        parts = [] if self.status == "running" else [self.status]
        loss = next((self.values[k] for k in LOSS_KEYS if k in self.values), None)
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        if "imgs_per_s" in self.values:
            parts.append(f"{self.values['imgs_per_s']:.0f} img/s")
        parts += [f"{name} {self.values[key]:.1f}%" for key, name in TOP1_KEYS if key in self.values]
        return safe(", ".join(parts))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Bars:
    """One tqdm bar per followed run (on stderr, so stdout keeps only the results)."""

    def __init__(self, client: Client, file: IO[str] | None = None, every_s: float = 1.0,
                 tty: bool | None = None) -> None:
        self.client, self.file, self.every_s = client, file or sys.stderr, every_s
        self.runs: dict[str, RunProgress] = {}
        self.final: dict[str, dict[str, Any]] = {}
        self._bars: dict[str, Any] = {}
        self._drawn: dict[str, tuple[float, str]] = {}  # when each bar was last drawn, in which state
        self.tty = tty if tty is not None else hasattr(self.file, "isatty") and self.file.isatty()

    def add(self, run_id: str, label: str, unit: str = "step") -> None:
        from tqdm import tqdm

        self.runs[run_id] = RunProgress(label=safe(label))
        self._bars[run_id] = tqdm(total=None, desc=self.runs[run_id].label, unit=unit, file=self.file,
                                  dynamic_ncols=True, position=len(self._bars), leave=True)

    def poll(self) -> bool:
        """Read every followed run's new events and its state, redraw; -> whether all have ended."""
        for run_id, progress in self.runs.items():
            if run_id in self.final:
                continue
            run = self.client.run(run_id)  # first: a run seen ended has all its events stored already
            for _ in range(PAGES_PER_POLL):
                page = self.client.events_page(run_id, after_seq=progress.last_seq, types="status,metrics")
                for event in page:
                    progress.apply(event)
                if len(page) < self.client.EVENTS_PAGE:
                    break
            progress.status = run["status"]
            self.draw(run_id)
            if run["status"] in TERMINAL:
                self.final[run_id] = run
                self._bars[run_id].close()
        return len(self.final) == len(self.runs)

    def draw(self, run_id: str) -> None:
        progress, bar = self.runs[run_id], self._bars[run_id]
        last, state = self._drawn.get(run_id, (0.0, ""))
        now = time.monotonic()
        if not self.tty and state == progress.status and now - last < NOT_A_TTY_EVERY_S:
            return
        self._drawn[run_id] = (now, progress.status)
        label = progress.label + (f" ({progress.phase})" if progress.phase and progress.phase != "pretrain" else "")
        bar.set_description_str(label, refresh=False)
        bar.total = progress.total
        bar.n = min(progress.step, progress.total) if progress.total else progress.step
        bar.set_postfix_str(progress.postfix(), refresh=False)
        bar.refresh()

    def wait(self, check: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
        """Poll until every followed run has ended; -> the runs as they ended. `check` raises to stop early."""
        while True:
            if check is not None:
                check()
            if self.poll():
                return self.final
            time.sleep(self.every_s)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
