"""A team's datasets through the REST API: the built-in Fashion-MNIST of every team, registering a folder (a
scan run on the shared queue; every bad field a 422 naming it, every hostile path refused), another team's
dataset a 404, the scan's and the packing's `dataset` event through the ingest into the row, a failed or
cancelled run marking it failed, and `data.name` resolved when a run or a study is submitted."""

from __future__ import annotations

import base64
import io
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.core.config import Settings
from server.datasets import builtin
from server.datasets.detect import detect
from server.events.ingest import Ingestor
from server.models import Dataset, Run, Team
from server.runs.dispatch import Dispatcher
from server.runs.watchdog import Watchdog
from worker import protocol

from server_factories import LiveServer, Member, drain, ev, make_member, push, queue_messages

API = "/api/v1"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The tests' own dataset root (tmp/data) besides the storage's packed copies."""
    (tmp_path / "data").mkdir()
    return settings.model_copy(update={"dataset_roots": f"{tmp_path / 'data'}:/usr/share/datasets"})


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3) -> Path:
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            Image.fromarray(np.full((12, 16, 3), 40 * i + j, np.uint8)).save(root / name / f"{j}.jpg")
    return root


def jpeg_b64(size: tuple[int, int] = (128, 64)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()


def info(root: str, packed: dict[str, Any] | None = None) -> dict[str, Any]:
    """A DatasetInfo as the engine's scan sends it (issue 12's contract)."""
    return {"kind": "imagefolder", "root": root, "splits": {"train": {"images": 6}},
            "classes": ["cat", "dog"], "mean": [0.1, 0.2, 0.3], "std": [0.2, 0.25, 0.3], "stats_images": 6,
            "image_size": {"min": [12, 16], "median": [12, 16], "max": [12, 16]}, "samples_jpeg": jpeg_b64(),
            "sample_labels": [0, 0, 1, 1], "skipped": ["dog/bad.jpg"], "skipped_count": 1,
            "skipped_reasons": ["OSError: image file is truncated"], "packed": packed}


def register(client: TestClient, member: Member, name: str, path: Path | str, **body: Any) -> httpx.Response:
    return client.post(f"{API}/datasets", headers=member.headers, json={"name": name, "path": str(path), **body})


def registered(client: TestClient, member: Member, name: str, path: Path | str, **body: Any) -> dict[str, Any]:
    response = register(client, member, name, path, **body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def scanned(client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, member: Member, name: str,
            folder: Path) -> dict[str, Any]:
    """A dataset registered and scanned: what a worker sends for its scan run, through the ingest."""
    ds = registered(client, member, name, image_folder(folder))
    run = ds["scan_run_id"]
    push(redis_client, [ev(run, 0, "status", state="running", worker_id="w", attempt=1),
                        ev(run, 1, "dataset", **info(str(folder))),
                        ev(run, 2, "status", state="succeeded", worker_id="w", attempt=1, final=True)])
    drain(ingestor)
    data: dict[str, Any] = client.get(f"{API}/datasets/{name}", headers=member.headers).json()
    return data


def error_at(response: httpx.Response) -> tuple[list[str], str]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return error["loc"], error["msg"]


def team_id(engine: Engine, name: str) -> int:
    with Session(engine) as s:
        team = s.exec(select(Team).where(Team.name == name)).one()
        assert team.id is not None
        return team.id


# ---------------------------------------------------------------- the built-in
class TestBuiltin:
    def test_every_team_has_fashion_mnist_ready_with_its_facts(self, client: TestClient, alice: Member,
                                                               bob: Member) -> None:
        for member in (alice, bob):
            [ds] = client.get(f"{API}/datasets", headers=member.headers).json()
            assert ds["name"] == "fashion-mnist" and ds["team"] == member.team and ds["builtin"] is True
            assert ds["kind"] == "fashion_mnist" and ds["status"] == "ready" and ds["prepare_status"] == "none"
            assert ds["splits"] == {"train": {"images": 60000}, "val": {"images": 10000}}
            assert ds["num_classes"] == 10 and ds["classes"][0] == "T-shirt/top" and ds["classes"][9] == "Ankle boot"
            assert ds["mean"] == [0.286] * 3 and ds["std"] == [0.353] * 3 and ds["has_samples"] is True
        assert client.get(f"{API}/datasets/fashion-mnist", headers=bob.headers).json()["team"] == "team-b"

    def test_its_facts_are_the_engines(self) -> None:
        from mocov3_core.data.readers import DATASET_STATS, DEFAULT_ROOTS, FASHION_MNIST_CLASSES

        engines = (list(FASHION_MNIST_CLASSES), DEFAULT_ROOTS["fashion_mnist"], DATASET_STATS["fashion_mnist"])
        assert engines == (builtin.CLASSES, builtin.ROOT, (tuple(builtin.MEAN), tuple(builtin.STD)))

    @pytest.mark.fmnist
    def test_its_sample_grid_is_drawn_from_the_idx_files_on_first_request_and_kept(
            self, client: TestClient, engine: Engine, alice: Member) -> None:
        response = client.get(f"{API}/datasets/fashion-mnist/samples.jpg", headers=alice.headers)
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        grid = Image.open(io.BytesIO(response.content))
        assert grid.size == (8 * 64, 4 * 64) and grid.format == "JPEG"
        labels = client.get(f"{API}/datasets/fashion-mnist", headers=alice.headers).json()["sample_labels"]
        assert len(labels) == 32 and labels == sorted(labels) and set(labels) == set(range(10))
        # each cell shows an image of its label: the first images of each class in the training file
        cells = np.asarray(grid.convert("L"), dtype=np.float32)
        assert cells[:64, :64].std() > 10  # a garment, not a blank cell
        with Session(engine) as s:
            row = s.exec(select(Dataset).where(Dataset.name == "fashion-mnist")).one()
            assert row.samples_jpeg is not None and base64.b64decode(row.samples_jpeg) == response.content
        again = client.get(f"{API}/datasets/fashion-mnist/samples.jpg", headers=alice.headers)
        assert again.content == response.content

    def test_it_cannot_be_removed(self, client: TestClient, alice: Member) -> None:
        response = client.delete(f"{API}/datasets/fashion-mnist", headers=alice.headers)
        assert response.status_code == 409 and "built in" in response.json()["detail"]
        assert client.get(f"{API}/datasets/fashion-mnist", headers=alice.headers).status_code == 200

    def test_concurrent_first_requests_make_one_row_and_no_error(self, live: LiveServer) -> None:
        from server.core.db import make_engine

        engine = make_engine(live.app.state.settings.database)
        try:
            member = make_member(engine, "carol", "team-c")
            answers: list[int] = []
            barrier = threading.Barrier(8)

            def first_list() -> None:
                barrier.wait()
                answers.append(httpx.get(f"{live.url}{API}/datasets", headers=member.headers, timeout=60).status_code)

            threads = [threading.Thread(target=first_list) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert answers == [200] * 8
            with Session(engine) as s:
                rows = s.exec(select(Dataset).where(Dataset.name == "fashion-mnist")).all()
                assert len(rows) == 1 and rows[0].builtin
        finally:
            engine.dispose()


# ---------------------------------------------------------------- registering
class TestRegister:
    def test_a_folder_is_registered_and_scanned_by_a_prepare_run_on_the_shared_queue(
            self, client: TestClient, redis_client: redis.Redis, tmp_path: Path, alice: Member) -> None:
        folder = image_folder(tmp_path / "data" / "pets")
        ds = registered(client, alice, "pets", folder)
        assert ds["status"] == "scanning" and ds["kind"] == "imagefolder" and ds["root"] == str(folder.resolve())
        assert ds["splits"] is None and ds["has_samples"] is False and ds["builtin"] is False
        run = client.get(f"{API}/runs/{ds['scan_run_id']}", headers=alice.headers).json()
        assert run["kind"] == "prepare" and run["name"] == "scan pets" and run["project"] == "datasets"
        assert (run["nodes"], run["gpus_per_node"], run["queue"]) == (1, 1, protocol.DEFAULT_QUEUE)
        assert run["spec"]["out"] is None and run["spec"]["data"]["root"] == str(folder.resolve())
        [message] = queue_messages(redis_client, protocol.DEFAULT_QUEUE)
        assert message["args"] == [run["id"], "prepare", run["spec"], 1]
        names = [d["name"] for d in client.get(f"{API}/datasets", headers=alice.headers).json()]
        assert names == ["fashion-mnist", "pets"]
        listed = client.get(f"{API}/runs", headers=alice.headers, params={"kind": "prepare"}).json()
        assert [r["id"] for r in listed["data"]] == [run["id"]]
        refused = client.post(f"{API}/runs", headers=alice.headers, json={"kind": "prepare", "spec": {"out": "x"}})
        assert error_at(refused)[0] == ["body", "kind"]  # only the datasets API makes prepare runs

    def test_the_kind_is_told_from_the_folder(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        image_folder(data / "flat")
        image_folder(data / "split" / "train")
        (data / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
        (data / "c100" / "cifar-100-python").mkdir(parents=True)
        (data / "arrays").mkdir()
        (data / "arrays" / "train.npz").write_bytes(b"")
        (data / "idx").mkdir()
        (data / "idx" / "train-images-idx3-ubyte.gz").write_bytes(b"")
        (data / "packed" / "train").mkdir(parents=True)
        (data / "packed" / "meta.json").write_text("{}")
        (data / "notes").mkdir()
        (data / "notes" / "readme.txt").write_text("hello")
        (data / "notes" / "sub").mkdir()
        (data / "notes" / "sub" / "a.txt").write_text("no images")
        found = {name: detect((data / name).resolve()) for name in
                 ("flat", "split", "cifar", "c100", "arrays", "idx", "packed", "notes")}
        assert found == {"flat": "imagefolder", "split": "imagefolder", "cifar": "cifar10", "c100": "cifar100",
                         "arrays": "npz", "idx": "idx", "packed": "packed", "notes": None}

    @pytest.mark.fmnist
    def test_debians_folder_is_fashion_mnist(self) -> None:
        assert detect(Path(builtin.ROOT).resolve()) == "fashion_mnist"

    def test_an_unknown_format_is_422_at_kind_and_a_given_kind_is_kept(self, client: TestClient, tmp_path: Path,
                                                                       alice: Member) -> None:
        (tmp_path / "data" / "notes").mkdir()
        (tmp_path / "data" / "notes" / "readme.txt").write_text("hello")
        loc, msg = error_at(register(client, alice, "notes", tmp_path / "data" / "notes"))
        assert loc == ["body", "kind"] and "cannot tell" in msg
        ds = registered(client, alice, "notes", tmp_path / "data" / "notes", kind="npz")
        assert ds["kind"] == "npz"
        loc, _ = error_at(register(client, alice, "other", tmp_path / "data" / "notes", kind="jpegs"))
        assert loc == ["body", "kind"]

    def test_bad_names_and_a_taken_one_are_422_at_name(self, client: TestClient, tmp_path: Path,
                                                       alice: Member) -> None:
        folder = image_folder(tmp_path / "data" / "pets")
        for bad in ("Pets", "../pets", "", "a b", "-x", "x" * 65, "pets\x00"):
            loc, _ = error_at(register(client, alice, bad, folder))
            assert loc == ["body", "name"], bad
        registered(client, alice, "pets", folder)
        for taken in ("pets", "fashion-mnist"):
            loc, msg = error_at(register(client, alice, taken, folder))
            assert loc == ["body", "name"] and "taken" in msg

    def test_every_hostile_or_bad_path_is_422_at_path_and_stores_nothing(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, settings: Settings, tmp_path: Path,
            alice: Member, bob: Member) -> None:
        data = tmp_path / "data"
        outside = image_folder(tmp_path / "outside")
        image_folder(data / "pets")
        (data / "escape").symlink_to(outside)
        (data / "file.jpg").write_bytes(b"\xff\xd8\xff")
        packed = settings.packed_datasets_root
        theirs = image_folder(packed / str(team_id(engine, "team-b")) / "pets" / "packed-256")
        cases = {
            "pets": "an absolute path",  # relative
            str(outside): "allowed dataset roots",
            f"{data}/pets/../../outside": "allowed dataset roots",  # traversal
            str(data / "escape"): "allowed dataset roots",  # a symlink out of the roots
            "/etc": "allowed dataset roots",
            str(data / "missing"): "does not exist",
            str(data / "file.jpg"): "is not a folder",
            str(theirs): "only your team's folder",  # another team's packed copy
            str(packed): "only your team's folder",  # every team's
        }
        for path, why in cases.items():
            loc, msg = error_at(register(client, alice, "x", path))
            assert loc == ["body", "path"] and why in msg, (path, msg)
        assert queue_messages(redis_client, protocol.DEFAULT_QUEUE) == []
        assert [d["name"] for d in client.get(f"{API}/datasets", headers=alice.headers).json()] == ["fashion-mnist"]
        # bob's own folder there is bob's to register
        assert registered(client, bob, "mine", theirs)["root"] == str(theirs.resolve())

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
    def test_an_unreadable_folder_is_422_at_path(self, client: TestClient, tmp_path: Path, alice: Member) -> None:
        folder = image_folder(tmp_path / "data" / "locked")
        folder.chmod(0)
        try:
            loc, msg = error_at(register(client, alice, "locked", folder))
            assert loc == ["body", "path"] and "cannot be read" in msg
        finally:
            folder.chmod(0o755)


# ---------------------------------------------------------------- two teams
class TestTeams:
    def test_another_teams_dataset_is_404_and_names_are_per_team(self, client: TestClient, redis_client: redis.Redis,
                                                                 ingestor: Ingestor, tmp_path: Path, alice: Member,
                                                                 bob: Member) -> None:
        scanned(client, redis_client, ingestor, alice, "pets", tmp_path / "data" / "pets")
        for method, path in (("GET", "pets"), ("GET", "pets/samples.jpg"), ("POST", "pets/prepare"),
                             ("DELETE", "pets")):
            response = client.request(method, f"{API}/datasets/{path}", headers=bob.headers)
            assert response.status_code == 404, (method, path, response.text)
            team = client.request(method, f"{API}/datasets/{path}", headers=bob.headers, params={"team": "team-a"})
            assert team.status_code == 404, (method, path)
        assert [d["name"] for d in client.get(f"{API}/datasets", headers=bob.headers).json()] == ["fashion-mnist"]
        assert client.get(f"{API}/datasets", headers=bob.headers, params={"team": "team-a"}).status_code == 404
        # the same name in bob's team is bob's own dataset
        ds = registered(client, bob, "pets", image_folder(tmp_path / "data" / "bobs"))
        assert ds["team"] == "team-b" and ds["status"] == "scanning"
        assert client.get(f"{API}/datasets/pets", headers=alice.headers).json()["status"] == "ready"

    def test_a_run_cannot_read_another_teams_packed_copy(self, client: TestClient, engine: Engine,
                                                         settings: Settings, alice: Member, bob: Member) -> None:
        theirs = settings.packed_datasets_root / str(team_id(engine, "team-b")) / "pets" / "packed-256"
        theirs.mkdir(parents=True)
        for root in (str(theirs), f"datasets/{team_id(engine, 'team-b')}/pets/packed-256",
                     f"datasets/{team_id(engine, 'team-a')}/../{team_id(engine, 'team-b')}/pets"):
            response = client.post(f"{API}/runs", headers=alice.headers, json={
                "preset": "fmnist_tiny", "queue": "testq", "overrides": {"data.dataset": "packed", "data.root": root}})
            loc, msg = error_at(response)
            assert loc == ["body", "spec", "data", "root"] and "only your team's folder" in msg, root
        own = {"data.dataset": "packed", "data.root": str(theirs)}
        response = client.post(f"{API}/runs", headers=bob.headers,
                               json={"preset": "fmnist_tiny", "queue": "testq", "overrides": own})
        assert response.status_code == 201, response.text


# ---------------------------------------------------------------- what the runs report
class TestProjection:
    def test_the_scan_fills_the_row_and_the_run_shows_its_progress(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, tmp_path: Path,
            alice: Member) -> None:
        folder = image_folder(tmp_path / "data" / "pets")
        ds = registered(client, alice, "pets", folder)
        run = ds["scan_run_id"]
        push(redis_client, [ev(run, 0, "status", state="running", worker_id="w", attempt=1),
                            ev(run, 1, "metrics", step=4, total_steps=6, phase="scan", images_per_s=120.0)])
        drain(ingestor)
        progress = client.get(f"{API}/runs/{run}", headers=alice.headers).json()
        assert (progress["step"], progress["total_steps"], progress["status"]) == (4, 6, "running")
        assert client.get(f"{API}/datasets/pets", headers=alice.headers).json()["status"] == "scanning"
        push(redis_client, [ev(run, 2, "dataset", **info(str(folder))),
                            ev(run, 3, "status", state="succeeded", worker_id="w", attempt=1, final=True)])
        drain(ingestor)
        ds = client.get(f"{API}/datasets/pets", headers=alice.headers).json()
        assert ds["status"] == "ready" and ds["error"] is None and ds["splits"] == {"train": {"images": 6}}
        assert ds["classes"] == ["cat", "dog"] and ds["num_classes"] == 2 and ds["mean"] == [0.1, 0.2, 0.3]
        assert ds["image_size"]["median"] == [12, 16] and ds["stats_images"] == 6 and ds["has_samples"] is True
        assert ds["sample_labels"] == [0, 0, 1, 1] and ds["packed"] is None and ds["prepare_status"] == "none"
        assert (ds["skipped_count"], ds["skipped"]) == (1, ["dog/bad.jpg"])
        assert ds["skipped_reasons"] == ["OSError: image file is truncated"]
        grid = client.get(f"{API}/datasets/pets/samples.jpg", headers=alice.headers)
        assert grid.status_code == 200 and Image.open(io.BytesIO(grid.content)).size == (128, 64)
        # the run's own pages take the new event type in their stride
        events = client.get(f"{API}/runs/{run}/events", headers=alice.headers).json()["data"]
        assert [e["type"] for e in events] == ["status", "metrics", "dataset", "status"]
        assert client.get(f"{API}/runs/{run}/metrics", headers=alice.headers).status_code == 200

    def test_a_hostile_payload_keeps_only_what_is_well_formed(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, tmp_path: Path,
            alice: Member) -> None:
        ds = registered(client, alice, "pets", image_folder(tmp_path / "data" / "pets"))
        run = ds["scan_run_id"]
        push(redis_client, [ev(run, 0, "dataset", splits={"train": {"images": "many"}, "val": {"images": 3}},
                               classes="cat,dog", mean=[0.5, 2.0, 0.1], std=[0.2, 0.2, 0.2], stats_images=-4,
                               image_size={"min": [1]}, sample_labels=[0, "x", 1], skipped="all",
                               skipped_count=True, skipped_reasons={"x": 1},
                               samples_jpeg=base64.b64encode(b"<svg onload=alert(1)>").decode(),
                               packed={"shards": "lots"})])
        drain(ingestor)
        ds = client.get(f"{API}/datasets/pets", headers=alice.headers).json()
        assert ds["status"] == "ready" and ds["splits"] == {"val": {"images": 3}} and ds["classes"] is None
        assert ds["mean"] is None and ds["std"] == [0.2, 0.2, 0.2] and ds["stats_images"] is None
        assert ds["image_size"] is None and ds["sample_labels"] == [0, 1] and ds["has_samples"] is False
        assert ds["skipped"] is None and ds["skipped_count"] is None and ds["skipped_reasons"] is None
        assert ds["packed"] is None  # a scan packs nothing, whatever it says
        assert client.get(f"{API}/datasets/pets/samples.jpg", headers=alice.headers).status_code == 404

    def test_a_failed_scan_fails_the_dataset_with_its_error_and_a_resume_scans_again(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, tmp_path: Path,
            alice: Member) -> None:
        ds = registered(client, alice, "pets", image_folder(tmp_path / "data" / "pets"))
        run = ds["scan_run_id"]
        push(redis_client, [ev(run, 0, "status", state="running", worker_id="w", attempt=1),
                            ev(run, 1, "status", state="failed", worker_id="w", attempt=1, final=True,
                               message="FileNotFoundError: image folder has no images")])
        drain(ingestor)
        ds = client.get(f"{API}/datasets/pets", headers=alice.headers).json()
        assert ds["status"] == "failed" and "has no images" in ds["error"]
        response = client.post(f"{API}/runs", headers=alice.headers,
                               json={"preset": "fmnist_tiny", "queue": "testq", "overrides": {"data.name": "pets"}})
        loc, msg = error_at(response)
        assert loc == ["body", "spec", "data", "name"] and "scan failed: FileNotFoundError" in msg
        assert client.post(f"{API}/runs/{run}/resume", headers=alice.headers).status_code == 200
        push(redis_client, [ev(run, 2, "status", state="running", worker_id="w", attempt=2)])
        drain(ingestor)
        ds = client.get(f"{API}/datasets/pets", headers=alice.headers).json()
        assert ds["status"] == "scanning" and ds["error"] is None

    def test_a_scan_cancelled_before_it_started_fails_the_dataset_at_the_watchdogs_next_pass(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, settings: Settings,
            tmp_path: Path, alice: Member) -> None:
        ds = registered(client, alice, "pets", image_folder(tmp_path / "data" / "pets"))
        assert client.post(f"{API}/runs/{ds['scan_run_id']}/cancel", headers=alice.headers).json()["status"] == \
            "cancelled"
        result = Watchdog(engine, redis_client, Dispatcher(settings.redis_url), settings).check()
        assert result.datasets == ["pets"]
        ds = client.get(f"{API}/datasets/pets", headers=alice.headers).json()
        assert ds["status"] == "failed" and "cancelled before it started" in ds["error"]

    def test_a_scan_that_succeeds_without_a_result_fails_the_dataset(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, tmp_path: Path,
            alice: Member) -> None:
        ds = registered(client, alice, "pets", image_folder(tmp_path / "data" / "pets"))
        push(redis_client, [ev(ds["scan_run_id"], 0, "status", state="succeeded", worker_id="w", attempt=1)])
        drain(ingestor)
        ds = client.get(f"{API}/datasets/pets", headers=alice.headers).json()
        assert ds["status"] == "failed" and "without a result" in ds["error"]


# ---------------------------------------------------------------- preparing, removing
class TestPrepare:
    def test_prepare_writes_the_packed_copy_into_the_teams_folder_and_runs_then_read_it(
            self, client: TestClient, engine: Engine, redis_client: redis.Redis, ingestor: Ingestor,
            tmp_path: Path, alice: Member) -> None:
        folder = tmp_path / "data" / "pets"
        scanned(client, redis_client, ingestor, alice, "pets", folder)
        response = client.post(f"{API}/datasets/pets/prepare", headers=alice.headers, json={"short_side": 64})
        assert response.status_code == 202, response.text
        ds = response.json()
        assert ds["prepare_status"] == "preparing" and ds["status"] == "ready"
        run = client.get(f"{API}/runs/{ds['prepare_run_id']}", headers=alice.headers).json()
        out = f"datasets/{team_id(engine, 'team-a')}/pets/packed-64"
        assert run["kind"] == "prepare" and run["name"] == "prepare pets" and (run["nodes"], run["gpus_per_node"]) == \
            (1, 1)
        assert run["spec"]["out"] == out and run["spec"]["short_side"] == 64 and run["spec"]["quality"] == 90
        assert run["spec"]["data"] == {**run["spec"]["data"], "dataset": "imagefolder", "root": str(folder.resolve())}
        again = client.post(f"{API}/datasets/pets/prepare", headers=alice.headers)
        assert again.status_code == 409 and "being prepared" in again.json()["detail"]
        # before it is packed, a run naming the dataset reads the source
        spec = client.post(f"{API}/runs", headers=alice.headers, json={
            "preset": "fmnist_tiny", "queue": "testq", "overrides": {"data.name": "pets"}}).json()["spec"]
        assert spec["data"]["dataset"] == "imagefolder" and spec["data"]["root"] == str(folder.resolve())
        packed = {"root": "/worker/storage/" + out, "short_side": 64, "quality": 90, "shards": 1, "bytes": 4096,
                  "splits": {"train": {"images": 6}}, "seconds": 0.5}
        push(redis_client, [ev(run["id"], 0, "dataset", **info(str(folder), packed)),
                            ev(run["id"], 1, "status", state="succeeded", worker_id="w", attempt=1, final=True)])
        drain(ingestor)
        ds = client.get(f"{API}/datasets/pets", headers=alice.headers).json()
        assert ds["prepare_status"] == "prepared" and ds["packed"]["root"] == out and ds["packed"]["shards"] == 1
        submitted = client.post(f"{API}/runs", headers=alice.headers, json={
            "preset": "fmnist_tiny", "queue": "testq", "overrides": {"data.name": "pets", "data.std": [0.5] * 3}})
        assert submitted.status_code == 201, submitted.text
        data = submitted.json()["spec"]["data"]
        assert (data["dataset"], data["root"], data["name"]) == ("packed", out, "pets")
        assert data["mean"] == [0.1, 0.2, 0.3] and data["std"] == [0.5] * 3  # the spec's own std stands
        assert submitted.json()["dataset"] == "pets"

    def test_a_failed_packing_keeps_the_dataset_ready_and_says_why(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, tmp_path: Path,
            alice: Member) -> None:
        scanned(client, redis_client, ingestor, alice, "pets", tmp_path / "data" / "pets")
        run = client.post(f"{API}/datasets/pets/prepare", headers=alice.headers).json()["prepare_run_id"]
        push(redis_client, [ev(run, 0, "status", state="failed", worker_id="w", attempt=1, message="disk full")])
        drain(ingestor)
        ds = client.get(f"{API}/datasets/pets", headers=alice.headers).json()
        assert (ds["status"], ds["prepare_status"], ds["error"]) == ("ready", "failed", "prepare failed: disk full")
        assert client.post(f"{API}/datasets/pets/prepare", headers=alice.headers).status_code == 202

    def test_bad_prepare_requests(self, client: TestClient, tmp_path: Path, alice: Member) -> None:
        registered(client, alice, "pets", image_folder(tmp_path / "data" / "pets"))
        response = client.post(f"{API}/datasets/pets/prepare", headers=alice.headers)
        assert response.status_code == 409 and "scanning" in response.json()["detail"]
        for body, field in (({"short_side": 8}, "short_side"), ({"quality": 101}, "quality"),
                            ({"out": "/etc"}, "out")):
            loc, _ = error_at(client.post(f"{API}/datasets/pets/prepare", headers=alice.headers, json=body))
            assert loc == ["body", field]
        assert client.post(f"{API}/datasets/nope/prepare", headers=alice.headers).status_code == 404
        assert client.get(f"{API}/datasets/Bad Name", headers=alice.headers).status_code in (404, 422)

    def test_remove_forgets_the_row_and_leaves_the_files(self, client: TestClient, engine: Engine,
                                                         tmp_path: Path, alice: Member) -> None:
        folder = image_folder(tmp_path / "data" / "pets")
        registered(client, alice, "pets", folder)
        assert client.delete(f"{API}/datasets/pets", headers=alice.headers).status_code == 204
        assert client.get(f"{API}/datasets/pets", headers=alice.headers).status_code == 404
        assert sorted(p.name for p in folder.iterdir()) == ["cat", "dog"]
        with Session(engine) as s:  # its scan run stays, as any run does
            assert s.exec(select(Run).where(col(Run.kind) == "prepare")).first() is not None
        assert registered(client, alice, "pets", folder)["status"] == "scanning"  # the name is free again


# ---------------------------------------------------------------- data.name in runs and studies
class TestResolution:
    def test_fashion_mnist_by_name_is_the_standard_reader_with_its_statistics(self, client: TestClient,
                                                                              alice: Member) -> None:
        response = client.post(f"{API}/runs", headers=alice.headers, json={
            "preset": "fmnist_tiny", "queue": "testq", "overrides": {"data.name": "fashion-mnist"}})
        assert response.status_code == 201, response.text
        data = response.json()["spec"]["data"]
        assert (data["dataset"], data["root"], data["mean"], data["std"]) == \
            ("fashion_mnist", None, [0.286] * 3, [0.353] * 3)

    def test_an_unknown_or_unready_name_is_422_at_data_name(self, client: TestClient, tmp_path: Path,
                                                            alice: Member, bob: Member) -> None:
        registered(client, bob, "secret", image_folder(tmp_path / "data" / "secret"))
        registered(client, alice, "pets", image_folder(tmp_path / "data" / "pets"))
        for name, why in (("nope", "no dataset named 'nope'; registered: fashion-mnist, pets"),
                          ("secret", "no dataset named 'secret'"),  # bob's: not alice's to name
                          ("pets", "still scanning")):
            for body in ({"overrides": {"data.name": name}}, {"spec": {"data": {"name": name}}}):
                loc, msg = error_at(client.post(f"{API}/runs", headers=alice.headers,
                                                json={"preset": "fmnist_tiny", "queue": "testq", **body}))
                assert loc == ["body", "spec", "data", "name"] and why in msg, (name, msg)
        loc, _ = error_at(client.post(f"{API}/runs", headers=alice.headers,
                                      json={"preset": "fmnist_tiny", "overrides": {"data.name": "Bad/Name"}}))
        assert loc == ["body", "spec", "data", "name"]
        assert client.get(f"{API}/runs", headers=alice.headers, params={"kind": "pretrain"}).json()["count"] == 0

    def test_a_study_resolves_the_name_or_refuses_it(self, client: TestClient, redis_client: redis.Redis,
                                                     alice: Member) -> None:
        body = {"name": "s", "preset": "fmnist_tiny", "queue": "studyq", "evaluations": ["knn"],
                "axes": [{"name": "lr", "path": "optim.base_lr", "values": [1e-4, 1e-3]}]}
        response = client.post(f"{API}/studies", headers=alice.headers,
                               json={**body, "overrides": {"data.name": "nope"}})
        loc, msg = error_at(response)
        assert loc == ["body", "overrides", "data", "name"] and "no dataset named" in msg
        response = client.post(f"{API}/studies", headers=alice.headers, json={
            **body, "overrides": {"data.name": "fashion-mnist"}, "eval_overrides": {"knn": {"data.name": "nope"}}})
        loc, _ = error_at(response)
        assert loc == ["body", "eval_overrides", "knn", "data", "name"]
        response = client.post(f"{API}/studies", headers=alice.headers,
                               json={**body, "overrides": {"data.name": "fashion-mnist"}})
        assert response.status_code == 201, response.text
        specs = [m["args"][2] for m in queue_messages(redis_client, "studyq")]
        assert len(specs) == 2 and all(s["data"]["mean"] == [0.286] * 3 and s["data"]["name"] == "fashion-mnist"
                                       for s in specs)
