"""Checkpoint files: loaded without running pickled code, an index that survives damage, and a resume that
falls back past an unreadable checkpoint with an alert."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mocov3_core.config import KnnConfig
from mocov3_core.eval import evaluate
from mocov3_core.events import ListSink
from mocov3_core.presets import build_spec
from mocov3_core.train import pretrain
from mocov3_core.train.checkpoint import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_index,
    save_checkpoint,
    write_index,
)


class WritesMarker:
    """Unpickling this calls open(marker, 'w'): if the marker appears, the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": WritesMarker(marker)}, path)
    return path, marker


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    path, marker = crafted(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt: refused, it would import io\.open"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_knn_evaluation_of_a_crafted_checkpoint_fails_without_running_it(tmp_path: Path) -> None:
    path, marker = crafted(tmp_path)
    with pytest.raises(UnsafeCheckpointError):
        evaluate(KnnConfig(checkpoint=str(path)), [ListSink()])
    assert not marker.exists()


def test_save_converts_numpy_and_paths_so_the_file_loads_weights_only(tmp_path: Path) -> None:
    state = {"order": np.arange(5), "scalar": np.float32(0.5), "where": tmp_path, "nested": [(np.int64(3), "x")],
             "weights": torch.ones(2)}
    save_checkpoint(tmp_path / "step_0000001.pt", state)
    back = torch.load(tmp_path / "step_0000001.pt", weights_only=True)
    assert torch.equal(back["order"], torch.arange(5)) and back["scalar"] == 0.5 and back["where"] == str(tmp_path)
    assert back["nested"] == [(3, "x")] and torch.equal(back["weights"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_checkpoint_is_reported_as_corrupt(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(tmp_path / "step_0000001.pt", {"model": {"w": torch.randn(64, 64)}})
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00garbage" * 50, "empty": b""}[damage])
    with pytest.raises(CorruptCheckpointError, match=r"step_0000001\.pt: not a readable checkpoint"):
        load_checkpoint(path)


def test_a_garbage_index_falls_back_to_the_previous_one_and_the_files_on_disk(tmp_path: Path) -> None:
    for step in (4, 8, 12):
        (tmp_path / f"step_{step:07d}.pt").write_bytes(b"x")
    write_index(tmp_path, [{"file": "step_0000004.pt", "step": 4, "healthy": True, "seq": 10}])
    write_index(tmp_path, [{"file": "step_0000004.pt", "step": 4, "healthy": True, "seq": 10},
                           {"file": "step_0000008.pt", "step": 8, "healthy": True, "seq": 20}])
    assert load_index(tmp_path) == ([{"file": "step_0000004.pt", "step": 4, "healthy": True, "seq": 10},
                                     {"file": "step_0000008.pt", "step": 8, "healthy": True, "seq": 20}], None)
    (tmp_path / "index.json").write_text('[{"file": "step_00')  # torn
    entries, problem = load_index(tmp_path)
    assert problem is not None and "index.json is unreadable" in problem
    # index.prev.json (one write back) lists step 4; steps 8 and 12 come from their files, health unknown
    assert [(e["step"], e["healthy"]) for e in entries] == [(4, True), (8, False), (12, False)]
    # an index naming a file outside the folder is damage too, never a path to follow
    (tmp_path / "index.json").write_text(json.dumps([{"file": "../../etc/passwd", "step": 1}]))
    assert load_index(tmp_path)[1] is not None
    assert not list(tmp_path.glob("*.tmp"))


TINY = ["data.limit=512", "optim.batch_size=32", "train.log_every=4", "train.ckpt_every=8",
        "monitor.knn_every=0", "optim.epochs=2", "train.max_steps=24"]


def resumed_alerts(run: Path) -> tuple[int, list[dict], ListSink]:
    sink = ListSink()
    result = pretrain(build_spec("pretrain", "fmnist_tiny", TINY), run, sinks=[sink], resume="auto")
    assert result.status == "succeeded" and result.step == 24
    started = next(e for e in sink.events if e.type == "status" and e.payload.get("state") == "running")
    return int(started.payload["step"]), [e.payload for e in sink.of_type("alert")], sink


@pytest.mark.fmnist
def test_resume_past_a_truncated_checkpoint_and_a_garbage_index(tmp_path: Path) -> None:
    stop = {"n": 0}

    def after_17() -> bool:
        stop["n"] += 1
        return stop["n"] > 17

    first = pretrain(build_spec("pretrain", "fmnist_tiny", TINY), tmp_path, resume=None, should_stop=after_17)
    assert first.status == "stopped" and first.step == 17
    ckpts = tmp_path / "checkpoints"
    latest = ckpts / "step_0000017.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # a disk that filled up mid-write
    (ckpts / "index.json").write_text("\x00\x00 not json")

    step, alerts, _ = resumed_alerts(tmp_path)
    assert step == 16  # the previous good checkpoint
    assert [a["kind"] for a in alerts] == ["checkpoint_unreadable", "checkpoint_unreadable"]
    assert "index.json is unreadable" in alerts[0]["message"]
    assert "step_0000017.pt: not a readable checkpoint" in alerts[1]["message"]
    assert alerts[1]["step"] == 17 and alerts[1]["last_healthy_checkpoint"].endswith("step_0000016.pt")
    assert (ckpts / "step_0000017.pt.corrupt").exists()  # set aside, not retried by the next resume
    assert json.loads((ckpts / "index.json").read_text())[-1]["step"] == 24
