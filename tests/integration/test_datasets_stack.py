"""A registered dataset through the whole service, as `mocolab up` runs it: a small image folder in an allowed
dataset root is registered (a real worker scans it), prepared (the worker writes its packed copy into the team's
folder of the storage), and a pretraining run naming it reads the packed copy and succeeds."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mocolab.client import Client
from mocolab.stack import Stack

from stack_fixture import running_stack, wait_for

pytestmark = [pytest.mark.slow]

CLASSES = ("red", "green", "blue", "grey")


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    (tmp_path / "data").mkdir()
    with running_stack(tmp_path, monkeypatch, MOCOLAB_DATASET_ROOTS=str(tmp_path / "data")) as s:
        yield s


def shapes(root: Path) -> Path:
    """40 small JPEGs in 4 class folders: a coloured square on noise, a different colour per class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 80, (36, 40, 3), dtype=np.uint8)
            y, x = rng.integers(0, 16, 2)
            pixels[y:y + 20, x:x + 20] = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (150, 150, 150)][c]
            Image.fromarray(pixels).save(root / name / f"{i:02d}.jpg", quality=90)
    return root


def dataset(c: Client, name: str) -> dict[str, Any]:
    found: dict[str, Any] = c.get(f"/datasets/{name}")
    return found


def test_a_folder_is_registered_prepared_and_trained_on_by_name(stack: Stack, tmp_path: Path) -> None:
    c = Client(stack.url, stack.token)
    folder = shapes(tmp_path / "data" / "shapes")
    assert c.post("/datasets", {"name": "shapes", "path": str(folder)})["status"] == "scanning"
    ready = wait_for(lambda: (d := dataset(c, "shapes"))["status"] != "scanning" and d, "the scan", timeout=180)
    assert ready["status"] == "ready", ready["error"]
    assert ready["kind"] == "imagefolder" and ready["splits"]["train"]["images"] == 40
    assert ready["classes"] == sorted(CLASSES) and ready["has_samples"] and len(ready["mean"]) == 3
    grid = Image.open(io.BytesIO(c.http.get("/datasets/shapes/samples.jpg").content))
    assert grid.format == "JPEG" and grid.size[0] == 8 * 64
    scan = c.run(ready["scan_run_id"])
    assert scan["kind"] == "prepare" and scan["status"] == "succeeded" and scan["total_steps"]

    assert c.post("/datasets/shapes/prepare", {"short_side": 32})["prepare_status"] == "preparing"
    prepared = wait_for(lambda: (d := dataset(c, "shapes"))["prepare_status"] != "preparing" and d, "the packing",
                        timeout=180)
    assert prepared["prepare_status"] == "prepared", prepared["error"]
    packed = prepared["packed"]
    assert packed["root"].startswith("datasets/") and packed["root"].endswith("/shapes/packed-32")
    meta = json.loads((stack.state / "storage" / packed["root"] / "meta.json").read_text())
    assert meta["complete"] is True

    run = c.submit({"kind": "pretrain", "preset": "fmnist_tiny", "name": "on shapes", "overrides": {
        "data.name": "shapes", "optim.batch_size": 16, "train.max_steps": 4, "monitor.knn_every": 0}})
    assert (run["spec"]["data"]["dataset"], run["spec"]["data"]["root"]) == ("packed", packed["root"])
    assert run["spec"]["data"]["mean"] == prepared["mean"] and run["dataset"] == "shapes"
    final = wait_for(lambda: (r := c.run(run["id"]))["status"] in ("succeeded", "failed", "cancelled") and r,
                     "the pretraining run", timeout=300)
    assert final["status"] == "succeeded", (final["error"], final["message"])
    assert final["step"] == 4
