"""`mocolab datasets` against a live server: add and prepare follow their run with the progress bar (images
done of each phase's total, images/s) until the dataset is ready or prepared, list and show print what the scan
found, and every refusal of the server is one line on stderr with exit status 2. The worker's part is played
by pushing its events into the stream once the run is queued."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from mocolab import cli
from server.core.config import Settings

from server_factories import LiveServer, Member, cli_member, ev, push

API = "/api/v1"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    return settings.model_copy(update={"dataset_roots": str(tmp_path / "data")})


@pytest.fixture
def member(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Member:
    return cli_member(live, monkeypatch)


def pets(root: Path) -> Path:
    for i, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.full((12, 16, 3), 40 * i + j, np.uint8)).save(root / name / f"{j}.jpg")
    return root


INFO: dict[str, Any] = {"kind": "imagefolder", "splits": {"train": {"images": 6}}, "classes": ["cat", "dog"],
                        "mean": [0.1, 0.2, 0.3], "std": [0.2, 0.25, 0.3], "stats_images": 6,
                        "image_size": {"min": [12, 16], "median": [12, 16], "max": [12, 16]}, "sample_labels": [0, 1],
                        "skipped": ["cat/x.jpg"], "skipped_count": 1}


class Worker:
    """Plays the worker for the run the CLI waits on: once the dataset names it, its events go to the stream."""

    def __init__(self, live: LiveServer, member: Member, redis_client: redis.Redis) -> None:
        self.live, self.member, self.redis = live, member, redis_client
        self.threads: list[threading.Thread] = []

    def serve(self, name: str, field: str, events: Any) -> None:
        def work() -> None:
            for _ in range(400):
                response = httpx.get(f"{self.live.url}{API}/datasets/{name}", headers=self.member.headers)
                run_id = response.json().get(field) if response.status_code == 200 else None
                if run_id and not (field == "prepare_run_id" and response.json()["prepare_status"] != "preparing"):
                    push(self.redis, events(run_id))
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture
def worker(live: LiveServer, member: Member, redis_client: redis.Redis) -> Iterator[Worker]:
    w = Worker(live, member, redis_client)
    yield w
    w.join()


def scan_events(run: str, root: str, fail: str | None = None) -> list[dict[str, Any]]:
    done = [ev(run, 4, "status", state="failed", worker_id="w", attempt=1, final=True, message=fail)] if fail else [
        ev(run, 4, "dataset", **INFO, root=root),
        ev(run, 5, "status", state="succeeded", worker_id="w", attempt=1, final=True)]
    return [ev(run, 0, "status", state="running", worker_id="w", attempt=1),
            ev(run, 1, "metrics", step=2, total_steps=6, phase="scan", images_per_s=50.0),
            ev(run, 2, "metrics", step=6, total_steps=6, phase="scan", images_per_s=60.0),
            ev(run, 3, "metrics", step=6, total_steps=6, phase="stats", images_per_s=70.0), *done]


def test_add_and_prepare_wait_with_a_progress_bar_then_list_and_show(
        live: LiveServer, member: Member, worker: Worker, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = pets(tmp_path / "data" / "pets")
    worker.serve("pets", "scan_run_id", lambda run: scan_events(run, str(folder)))
    assert cli.run(["datasets", "add", "pets", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "pets: scanning (run " in out and out.rstrip().splitlines()[-1].split()[:4] == \
        ["pets", "imagefolder", "ready", "6"]
    assert "scan pets" in err and "6/6" in err and "img/s" in err, err  # the bar, fed by the run's metrics

    packed = {"root": "/w/x", "short_side": 64, "quality": 90, "shards": 1, "bytes": 2_000_000,
              "splits": {"train": {"images": 6}}, "seconds": 1.0}
    worker.serve("pets", "prepare_run_id", lambda run: [
        ev(run, 0, "status", state="running", worker_id="w", attempt=1),
        ev(run, 1, "metrics", step=3, total_steps=6, phase="pack", images_per_s=40.0),
        ev(run, 2, "metrics", step=6, total_steps=6, phase="pack", images_per_s=41.0),
        ev(run, 3, "dataset", **INFO, root=str(folder), packed=packed),
        ev(run, 4, "status", state="succeeded", worker_id="w", attempt=1, final=True)])
    assert cli.run(["datasets", "prepare", "pets", "--short-side", "64"]) == 0
    out, err = capsys.readouterr()
    assert out.rstrip().splitlines()[-1].endswith("yes (64)") and "prepare pets (pack)" in err and "6/6" in err

    assert cli.run(["datasets", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["NAME", "KIND", "STATUS", "TRAIN", "VAL", "CLASSES", "PREPARED"]
    assert listed[1].split() == ["fashion-mnist", "fashion_mnist", "ready", "60,000", "10,000", "10", "-"]
    assert listed[2].split() == ["pets", "imagefolder", "ready", "6", "-", "2", "yes", "(64)"]
    assert cli.run(["datasets", "show", "pets"]) == 0
    shown = capsys.readouterr().out
    assert "images:     train 6" in shown and "classes:    2: cat, dog" in shown
    assert "mean:       0.1000 0.2000 0.3000" in shown and "(from 6 images)" in shown
    assert "image size: min 12x16, median 12x16, max 12x16" in shown and "skipped:    1 unreadable images, e.g. " \
        "cat/x.jpg" in shown
    assert "packed:     datasets/" in shown and "short side 64, quality 90, 1 shards, 2.0 MB" in shown
    assert cli.run(["datasets", "show", "fashion-mnist"]) == 0
    assert "classes:    10: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, ... (2 more)" in \
        capsys.readouterr().out
    assert cli.run(["datasets", "rm", "pets"]) == 0
    assert "removed" in capsys.readouterr().out and folder.is_dir()


def test_a_failed_scan_ends_with_its_error_and_exit_1(live: LiveServer, member: Member, worker: Worker,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = pets(tmp_path / "data" / "pets")
    worker.serve("pets", "scan_run_id", lambda run: scan_events(run, str(folder), fail="OSError: disk gone"))
    assert cli.run(["datasets", "add", "pets", str(folder)]) == 1
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-2].split()[:3] == ["pets", "imagefolder", "failed"] and out[-1] == "error: OSError: disk gone"


def test_no_wait_returns_at_once(live: LiveServer, member: Member, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["datasets", "add", "pets", str(pets(tmp_path / "data" / "pets")), "--no-wait"]) == 0
    assert capsys.readouterr().out.startswith("pets: scanning (run ")


@pytest.mark.parametrize("argv, message", [
    (["add", "x", "/etc"], "HTTP 422: path: must be inside one of the allowed dataset roots"),
    (["add", "Bad", "{data}"], "HTTP 422: name: String should match pattern"),
    (["add", "x", "{data}/missing"], "HTTP 422: path: {data}/missing does not exist"),
    (["add", "x", "{data}", "--kind", "jpegs"], "HTTP 422: kind: Input should be"),
    (["add", "x", "{data}"], "HTTP 422: kind: cannot tell the format"),
    (["add", "fashion-mnist", "{data}"], "HTTP 422: name: 'fashion-mnist' is taken"),
    (["show", "nope"], "HTTP 404: dataset 'nope' not found"),
    (["show", "fashion-mnist", "--team", "team-b"], "HTTP 404: team 'team-b' not found among yours"),
    (["rm", "fashion-mnist"], "HTTP 409: 'fashion-mnist' is built in"),
    (["prepare", "fashion-mnist", "--short-side", "8"], "HTTP 422: short_side: Input should be greater than"),
    (["prepare", "fashion-mnist", "--short-side", "big"], "--short-side 'big': expected a whole number"),
])
def test_every_refusal_is_one_line_and_exit_2(argv: list[str], message: str, live: LiveServer, member: Member,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    with pytest.raises(SystemExit) as exited:
        cli.main(["datasets", *(a.replace("{data}", data) for a in argv)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message.replace("{data}", data) in err, err


def test_a_prepare_runs_progress_counts_images_per_phase() -> None:
    from mocolab.progress import RunProgress

    p = RunProgress(label="scan pets")
    p.apply({"seq": 0, "type": "metrics", "payload": {"step": 40, "total_steps": 100, "phase": "scan",
                                                        "images_per_s": 12.5}})
    assert (p.step, p.total, p.phase, p.postfix()) == (40, 100, "scan", "queued, 12 img/s")
    p.apply({"seq": 1, "type": "metrics", "payload": {"step": 10, "total_steps": 50, "phase": "stats"}})
    assert (p.step, p.total, p.phase) == (10, 50, "stats")  # a new phase counts from its own start
    p.apply({"seq": 2, "type": "metrics", "payload": {"step": 5, "total_steps": 50, "phase": "stats"}})
    assert p.step == 10  # never backwards
    training = RunProgress(label="pretrain")
    training.apply({"seq": 0, "type": "metrics", "payload": {"step": 31, "values": {"loss": 1.0}}})
    assert training.step == 32  # a training step's metrics: that step done
