"""A real collapse, caught before the kNN accuracy shows it (docs/method.md §6.1).

BYOL with the target encoder equal to the online one (momentum 0; BYOL Table 5a: 0.3% top-1, a collapse) is
forked from a BYOL run on fmnist_tiny at step 32. In the fork the held-out features lose dimensions (RankMe)
and spread (feat_std) while the dense kNN accuracy holds at first: the monitor's rank_collapse alert comes
evaluations before any knn_dip, and before the kNN accuracy has fallen 3 points below its best."""

from pathlib import Path

import pytest

from mocov3_core.events import ListSink
from mocov3_core.presets import build_spec
from mocov3_core.train import pretrain

pytestmark = pytest.mark.fmnist

BASE = ["optim.base_lr=5e-3", "optim.epochs=4", "train.log_every=4", "train.ckpt_every=32", "monitor.knn_every=4",
        "monitor.knn_eval_samples=2000", "monitor.knn_queue=2048"]


def evaluations(sink: ListSink) -> list[tuple[int, dict[str, float]]]:
    return [(e.payload["step"], e.payload["values"]) for e in sink.of_type("metrics")
            if "knn_top1" in e.payload["values"]]


def test_rank_collapse_is_flagged_before_the_knn_accuracy_says_so(tmp_path: Path) -> None:
    parent_sink, fork_sink = ListSink(), ListSink()
    parent = pretrain(build_spec("pretrain", "fmnist_tiny_byol", [*BASE, "train.max_steps=32"]), tmp_path / "parent",
                      sinks=[parent_sink], resume=None)
    assert not [a for a in parent.alerts if a["kind"] == "rank_collapse"]
    ckpt = tmp_path / "parent" / "checkpoints" / "step_0000032.pt"
    fork = pretrain(build_spec("pretrain", "fmnist_tiny_byol", [*BASE, "train.max_steps=60", "byol.momentum=0",
                                                                f"fork_from={ckpt}"]),
                    tmp_path / "fork", sinks=[fork_sink], resume=None)
    history = evaluations(parent_sink) + evaluations(fork_sink)
    rank = [a for a in fork.alerts if a["kind"] == "rank_collapse"]
    assert rank, f"no rank_collapse: {[(s, round(v['rankme'], 2)) for s, v in history]}"
    flagged = rank[0]["step"]
    # the kNN accuracy's own verdicts come later: the fork's dip alerts, and the first of its evaluations 3 points
    # below the best of all before it (the parent's included; the parent's own early wobble, a dip at step 15 on
    # this tiny monitor, is before the collapsing setting began)
    dips = [a["step"] for a in fork.alerts if a["kind"] == "knn_dip"]
    falls = [s for i, (s, v) in enumerate(history) if s > 32 and v["knn_top1"] < max(
        w["knn_top1"] for _, w in history[:i]) - 3.0]
    curve = f"kNN {[(s, v['knn_top1']) for s, v in history]}, RankMe {[(s, round(v['rankme'], 2)) for s, v in history]}"
    assert falls, f"the kNN accuracy never fell: not a collapse this test can time; {curve}"
    assert all(flagged < d for d in dips) and flagged < falls[0], f"rank_collapse at {flagged}, dips {dips}; {curve}"
    assert rank[0]["severity"] == "critical" and rank[0]["metric"] in ("rankme", "feat_std")
    fork_evals = dict(evaluations(fork_sink))
    assert fork_evals[flagged]["rankme"] < 0.6 * max(v["rankme"] for _, v in history[: len(evaluations(parent_sink))])
