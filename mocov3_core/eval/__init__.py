"""Evaluation protocols: weighted kNN, linear probe (paper recipe and cached-feature variant), fine-tuning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import FinetuneConfig, KnnConfig, LinearConfig
from ..events import EventSink
from .finetune import finetune
from .knn import knn_eval, weighted_knn
from .linear import linear_probe

__all__ = ["evaluate", "finetune", "knn_eval", "linear_probe", "weighted_knn"]


def evaluate(cfg: KnnConfig | LinearConfig | FinetuneConfig, sinks: list[EventSink] | None = None,
             run_id: str | None = None, should_stop: Callable[[], bool] | None = None,
             first_seq: int = 0) -> dict[str, Any]:
    """Run the evaluation `cfg.kind` names; its result is returned and emitted as an eval_result event."""
    runner = {"knn": knn_eval, "linear": linear_probe, "finetune": finetune}[cfg.kind]
    return runner(cfg, sinks, run_id, should_stop, first_seq)
