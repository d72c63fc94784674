"""The kNN evaluation protocol: frozen features of the whole train and test sets, classified by the weighted
kNN of `mocov3_core.knn` (the same classifier the pretraining's kNN monitor scores with)."""

from __future__ import annotations

from typing import Any

from ..knn import weighted_knn

__all__ = ["knn_eval", "weighted_knn"]


def knn_eval(cfg: Any, sinks: list[Any] | None = None, run_id: str | None = None,
             should_stop: Any = None, first_seq: int = 0) -> dict[str, Any]:  # noqa: ARG001 (nothing to stop)
    """The kNN protocol on frozen features of the whole train and test sets (or on raw pixels)."""
    from .common import extract, setup

    s = setup(cfg, sinks, run_id, need_backbone=cfg.features == "backbone", first_seq=first_seq)
    total = len(s.train.labels) + len(s.test.labels)
    s.emitter.emit("status", state="running", phase="knn", step=0, total_steps=total,
                   message=f"kNN (k={cfg.k}) on {s.data_cfg.dataset}")
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        s.emitter.emit("metrics", step=done - 1, values={"images_encoded": done})

    train_x, train_y = extract(s, s.train, cfg.batch_size, progress)
    test_x, test_y = extract(s, s.test, cfg.batch_size, progress)
    top1, top5 = weighted_knn(train_x, train_y, test_x, test_y, s.num_classes, cfg.k, cfg.temperature)
    result = {"protocol": "knn", "top1": top1, "top5": top5, "k": cfg.k, "dataset": s.data_cfg.dataset,
              "features": cfg.features, **s.source}
    s.emitter.emit("eval_result", **result)
    s.emitter.emit("status", state="succeeded", message=f"kNN top-1 {top1:.2f}%")
    return result
