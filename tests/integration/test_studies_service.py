"""The paper's framework comparison through the whole service: one study request queues a short run of
MoCo v3, SimCLR, BYOL and SwAV on Fashion-MNIST; a real worker trains each, the server queues each one's kNN
evaluation when it succeeds, and the study's table and the leaderboard fill in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mocolab.client import Client
from mocolab.stack import Stack

from stack_fixture import running_stack

pytestmark = [pytest.mark.fmnist, pytest.mark.slow]

FRAMEWORKS = {"MoCo v3": "mocov3", "SimCLR": "simclr", "BYOL": "byol", "SwAV": "swav"}


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with running_stack(tmp_path, monkeypatch) as s:
        yield s


def test_a_study_of_the_four_frameworks_runs_end_to_end_and_is_evaluated_by_knn(stack: Stack) -> None:
    c = Client(stack.url, stack.token)
    axes = [{"name": "framework", "values": [
        {"label": label, "overrides": {"framework": fw, **({"swav.num_prototypes": 30} if fw == "swav" else {})}}
        for label, fw in FRAMEWORKS.items()]}]
    study = c.post("/studies", {
        "name": "frameworks, tiny", "template": "frameworks", "preset": "fmnist_tiny", "axes": axes,
        "overrides": {"train.max_steps": 12, "monitor.knn_every": 0, "train.ckpt_every": 12},
        "evaluations": ["knn"], "eval_overrides": {"knn": {"data.limit": 2048}}})
    assert study["runs"] == 4 and [r["paper"] for r in study["rows"]] == [72.5, 69.0, 71.0, 67.1]

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        study = c.get(f"/studies/{study['id']}")
        cells = [row["evals"].get("knn") for row in study["rows"]]
        if all(cell and cell["status"] in ("succeeded", "failed", "cancelled") for cell in cells):
            break
        assert not {"failed", "cancelled"} & set(study["progress"]), study["progress"]
        time.sleep(2)
    else:
        raise AssertionError(f"the study did not finish: {study['progress']}")

    for row in study["rows"]:
        run = row["run"]
        assert run["status"] == "succeeded" and run["framework"] == FRAMEWORKS[row["labels"][0]], run
        assert run["step"] == 12
        cell = row["evals"]["knn"]
        assert cell["status"] == "succeeded" and 10.0 < cell["top1"] <= 100.0, (row["labels"], cell)
        spec = c.run(run["id"])["spec"]
        assert spec["framework"] == FRAMEWORKS[row["labels"][0]]
        loss = c.get(f"/runs/{run['id']}/metrics", keys="loss")["series"][0]["value"]
        assert len(loss) == 12 and all(isinstance(v, float) for v in loss)  # finite every step
    board = c.get("/leaderboard", protocol="knn")["data"]
    assert sorted(r["framework"] for r in board) == sorted(FRAMEWORKS.values())
    assert [r["rank"] for r in board] == [1, 2, 3, 4] and board[0]["top1"] >= board[-1]["top1"]
    table = c.get(f"/studies/{study['id']}/table.md", text=True)
    assert "| SwAV |" in table and "Table 4" in table
