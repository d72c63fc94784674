"""A run of kind prepare on the worker with the real engine: a scan (no `out`) reports the dataset with the
run's own seq numbering, progress as step/total_steps, one `dataset` event and the worker's final word; a packing
writes under <storage>/datasets from a storage-relative `out`; an `out` anywhere else is refused before the engine
runs, and so is a relative data.root leaving the roots."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from worker import Settings, execute_run
from worker._redis import Redis

from worker_helpers import stream_events


@pytest.fixture
def roots(settings: Settings, tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    return dataclasses.replace(settings, dataset_roots=(tmp_path / "data",))


def pets(root: Path, per_class: int = 5) -> Path:
    for i, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            Image.fromarray(np.full((20, 24, 3), 60 * i + 5 * j, np.uint8)).save(root / name / f"{j}.jpg")
    return root


def spec(root: Path | str | None, out: str | None = None, **more: Any) -> dict[str, Any]:
    return {"data": {"dataset": "imagefolder", "root": str(root) if root else None}, "out": out, "workers": 0,
            "stats_images": 10, "samples": 4, **more}


def outcome(r: Redis, run_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = [e for e in stream_events(r, run_id) if e["type"] == "status"][-1]["payload"]
    return payload


def test_a_scan_reports_the_dataset_with_progress_in_the_runs_numbering(roots: Settings, r: Redis, run_id: str,
                                                                        tmp_path: Path) -> None:
    folder = pets(tmp_path / "data" / "pets")
    assert execute_run(run_id, "prepare", spec(folder), 1, roots) == "succeeded"
    events = stream_events(r, run_id)
    assert [e["seq"] for e in events] == list(range(len(events))) and {e["run_id"] for e in events} == {run_id}
    progress = [e["payload"] for e in events if e["type"] == "metrics"]
    assert progress and all(isinstance(p["step"], int) and p["total_steps"] >= p["step"] for p in progress)
    [dataset] = [e["payload"] for e in events if e["type"] == "dataset"]
    assert dataset["splits"] == {"train": {"images": 10}} and dataset["classes"] == ["cat", "dog"]
    assert dataset["packed"] is None and dataset["samples_jpeg"]
    final = outcome(r, run_id)
    assert final["state"] == "succeeded" and final["final"] is True
    assert final["message"] == "scanned 10 images (2 classes)"
    assert not (roots.storage / "datasets").exists()  # a scan writes no packed copy


def test_a_packing_writes_under_the_storages_datasets_from_a_relative_out(roots: Settings, r: Redis, run_id: str,
                                                                          tmp_path: Path) -> None:
    folder = pets(tmp_path / "data" / "pets")
    out = "datasets/7/pets/packed-32"
    assert execute_run(run_id, "prepare", spec(folder, out, short_side=32), 1, roots) == "succeeded"
    [dataset] = [e["payload"] for e in stream_events(r, run_id) if e["type"] == "dataset"]
    assert Path(dataset["packed"]["root"]).resolve() == (roots.storage / out).resolve()
    assert (roots.storage / out / "meta.json").is_file()
    assert outcome(r, run_id)["message"].startswith("packed 10 images into 1 shards at short side 32")


@pytest.mark.parametrize("out", ["{tmp}/elsewhere", "../elsewhere", "datasets", "datasets/../runs/x", "runs/x"])
def test_an_out_outside_the_storages_datasets_is_refused_before_the_engine(roots: Settings, r: Redis, run_id: str,
                                                                           tmp_path: Path, out: str) -> None:
    folder = pets(tmp_path / "data" / "pets")
    assert execute_run(run_id, "prepare", spec(folder, out.format(tmp=tmp_path)), 1, roots) == "failed"
    events = stream_events(r, run_id)
    assert [e["payload"]["state"] for e in events] == ["failed"] and events[0]["payload"]["field"] == "out"
    assert not (tmp_path / "elsewhere").exists() and not (roots.storage / "runs" / "x").exists()
    assert not (roots.storage / "datasets").exists()


def test_a_relative_data_root_is_the_storages_and_may_not_leave_the_roots(roots: Settings, r: Redis, run_id: str,
                                                                          tmp_path: Path) -> None:
    pets(tmp_path / "outside")
    assert execute_run(run_id, "prepare", spec("../outside"), 1, roots) == "failed"
    assert outcome(r, run_id)["field"] == "data.root"
    inside = pets(roots.storage / "datasets" / "7" / "pets")
    assert execute_run(run_id + "b", "prepare", spec("datasets/7/pets"), 1, roots) == "succeeded"
    [dataset] = [e["payload"] for e in stream_events(r, run_id + "b") if e["type"] == "dataset"]
    assert Path(dataset["root"]).resolve() == inside.resolve()


def test_a_scan_reads_no_link_out_of_the_folder_and_names_each(roots: Settings, r: Redis, run_id: str,
                                                                tmp_path: Path) -> None:
    folder = pets(tmp_path / "data" / "pets")
    other_team = pets(roots.storage / "datasets" / "8" / "theirs")  # inside the storage, another team's
    (folder / "cat" / "theirs").symlink_to(other_team / "dog")
    (folder / "dog" / "home.jpg").symlink_to(pets(tmp_path / "home") / "cat" / "0.jpg")
    (folder / "dog" / "twin.jpg").symlink_to(folder / "cat" / "1.jpg")  # within the folder: read
    assert execute_run(run_id, "prepare", spec(folder), 1, roots) == "succeeded"
    [dataset] = [e["payload"] for e in stream_events(r, run_id) if e["type"] == "dataset"]
    assert dataset["splits"] == {"train": {"images": 11}} and dataset["skipped_count"] == 2
    assert dataset["skipped"] == [str(folder / "cat" / "theirs") + "/", str(folder / "dog" / "home.jpg")]
    assert all("outside the dataset's folder" in why for why in dataset["skipped_reasons"])


def _pool_in_a_daemon(out: Any) -> None:
    """What a Celery pool process (daemonic) does for a prepare run: start the engine's own pool of processes."""
    import multiprocessing

    from worker.runner import allow_engine_processes

    allow_engine_processes()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        out.value = sum(pool.map(abs, [-1, -2, -3]))


def test_the_engine_may_start_processes_in_celerys_daemonic_pool_process() -> None:
    import billiard

    ctx = billiard.get_context("spawn")  # as worker/celery_config.py starts the pool
    out = ctx.Value("i", 0)
    child = ctx.Process(target=_pool_in_a_daemon, args=(out,), daemon=True)
    child.start()
    child.join(60)
    assert child.exitcode == 0 and out.value == 6


def test_a_process_forked_during_a_run_dies_of_sigterm_as_any_process(settings: Settings, r: Redis,
                                                                      run_id: str) -> None:
    import os
    import signal

    from worker.runner import StopWatch
    from worker.workdir import WorkerDir

    watch = StopWatch(r, run_id, WorkerDir(settings.spool_dir, settings.worker_id))
    previous = signal.signal(signal.SIGTERM, watch.on_sigterm)
    try:
        pid = os.fork()
        if pid == 0:  # the child: SIGTERM's default action, not the run's handler
            os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 1)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert signal.getsignal(signal.SIGTERM) == watch.on_sigterm  # the run itself keeps its handler
    finally:
        signal.signal(signal.SIGTERM, previous)
