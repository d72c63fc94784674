"""Preparation and packed sets on small real files: round trip, resume, verification, hostile files, events, CLI."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mocov3_core.config import DataConfig, PrepareConfig
from mocov3_core.data import ImageFolderSet, PackedSet, TrainStream, eval_batches, load_dataset
from mocov3_core.data import packed as fmt
from mocov3_core.data.paths import OUTSIDE_ROOT, OutsideRootError
from mocov3_core.data.prepare import run_prepare
from mocov3_core.events import EVENT_TYPES, ListSink

SHORT = 32


def smooth(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth colour image (JPEG keeps it within a few levels), different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phase = rng.uniform(0, 6, 3)
    planes = [127 + 100 * np.sin(3 * x + 2 * y + phase[c]) for c in range(3)]
    return np.stack(planes, -1).clip(0, 255).astype(np.uint8)


def make_folder(root: Path, per_class: int = 6, val_per_class: int = 2) -> Path:
    """root/{train,val}/c{k}/: JPEGs of varied sizes, one PNG and one image smaller than SHORT per split."""
    for split, n in (("train", per_class), ("val", val_per_class)):
        for k in range(3):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed = 100 * k + 10 * i + (split == "val")
                h, w = (24, 30) if i == 1 else (40 + 3 * i, 64 - 2 * i)
                ext = "png" if i == 2 else "jpg"
                Image.fromarray(smooth(h, w, seed)).save(folder / f"{i}.{ext}", quality=95)
    return root


def prepare(src: Path, out: Path | None, sink: Any = None, **kw: Any) -> dict[str, Any]:
    cfg = {"short_side": SHORT, "workers": 0, "samples": 6, **{k: v for k, v in kw.items() if k != "shard_images"}}
    spec = PrepareConfig(data=DataConfig(dataset="imagefolder", root=str(src)), out=str(out) if out else None, **cfg)
    return run_prepare(spec, sink if sink is not None else ListSink(), shard_images=kw.get("shard_images", 5))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any], ListSink]:
    root = tmp_path_factory.mktemp("packed")
    src = make_folder(root / "src")
    sink = ListSink()
    info = prepare(src, root / "out", sink)
    return src, root / "out", info, sink


def expected_size(height: int, width: int) -> tuple[int, int]:
    short = min(height, width)
    if short <= SHORT:
        return height, width
    return round(height * SHORT / short), round(width * SHORT / short)


def test_round_trip_pixels_labels_classes(prepared: tuple[Path, Path, dict[str, Any], ListSink]) -> None:
    src, out, info, _ = prepared
    for split in ("train", "val"):
        source = ImageFolderSet(src / split)
        data = load_dataset(DataConfig(dataset="packed", root=str(out)), train=split == "train")
        assert isinstance(data, PackedSet) and len(data) == len(source)
        assert data.classes == source.classes == ["c0", "c1", "c2"]
        assert torch.equal(data.labels, source.labels)
        for i in range(len(data)):
            with Image.open(source.paths[i]) as im:
                h, w = expected_size(im.height, im.width)
                want = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
            got = data.load(i)
            assert data.size(i) == (h, w) == tuple(got.shape[1:])  # never upscaled; short side SHORT
            assert np.abs(got.permute(1, 2, 0).numpy() - want).mean() < 4.0  # re-encoded at quality 90
    assert data.mean == pytest.approx(tuple(info["mean"])) and data.std == pytest.approx(tuple(info["std"]))
    overridden = load_dataset(DataConfig(dataset="packed", root=str(out), mean=(0.5,) * 3, std=(0.2,) * 3), True)
    assert overridden.mean == (0.5,) * 3 and overridden.std == (0.2,) * 3
    assert info["packed"]["splits"] == {"train": {"images": 18}, "val": {"images": 6}}
    assert info["packed"]["shards"] == 4 + 2 and info["packed"]["bytes"] == sum(
        p.stat().st_size for p in out.rglob("shard-*.bin"))
    assert not list(out.rglob("part-*")) and not (out / "plan.json").exists()  # tidy once complete


def test_events_and_dataset_payload(prepared: tuple[Path, Path, dict[str, Any], ListSink]) -> None:
    _, _, info, sink = prepared
    assert "dataset" in EVENT_TYPES
    assert sink.events[0].type == "status" and sink.events[0].payload["state"] == "running"
    assert sink.events[-1].payload["state"] == "succeeded"
    metrics = sink.of_type("metrics")
    assert {m.payload["phase"] for m in metrics} == {"scan", "stats", "pack", "verify"}
    for m in metrics:
        assert set(m.payload) == {"step", "total_steps", "phase", "images_per_s"}
        assert 0 <= m.payload["step"] <= m.payload["total_steps"]
    last_pack = [m.payload for m in metrics if m.payload["phase"] == "pack"][-1]
    assert last_pack["step"] == last_pack["total_steps"] == 24
    (event,) = sink.of_type("dataset")
    assert event.payload == json.loads(json.dumps(info))
    assert set(info) >= {"kind", "root", "splits", "classes", "mean", "std", "stats_images", "image_size",
                         "samples_jpeg", "sample_labels", "packed"}
    assert info["kind"] == "imagefolder" and info["splits"] == {"train": {"images": 18}, "val": {"images": 6}}
    assert info["stats_images"] == 18 and info["skipped_count"] == 0
    assert info["image_size"]["min"] == [24, 30] and info["image_size"]["max"] == [55, 64]
    assert info["sample_labels"] == sorted(info["sample_labels"]) and set(info["sample_labels"]) == {0, 1, 2}
    grid = Image.open(io.BytesIO(base64.b64decode(info["samples_jpeg"])))
    assert grid.format == "JPEG" and grid.size == (6 * 64, 64)
    # mean/std are those of the training pixels (measured here on the same decoded files)
    pixels = np.concatenate([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255
                             for p in ImageFolderSet(Path(info["root"]) / "train").paths])
    assert info["mean"] == pytest.approx(pixels.mean(0).tolist(), abs=1e-4)
    assert info["std"] == pytest.approx(pixels.std(0).tolist(), abs=1e-4)


def test_rerun_of_a_finished_preparation_writes_nothing(prepared: tuple[Path, Path, dict[str, Any], ListSink]
                                                         ) -> None:
    src, out, info, _ = prepared
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = prepare(src, out)
    assert again["packed"]["shards_written"] == 0 and again["packed"]["splits"] == info["packed"]["splits"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_resume_after_a_stop_between_shards(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    out = tmp_path / "out"

    def two_shards_done() -> bool:
        return len(list((out / "train").glob("part-*.npz"))) >= 2

    stopped = run_prepare(
        PrepareConfig(data=DataConfig(dataset="imagefolder", root=str(src)), out=str(out), short_side=SHORT,
                      workers=0, samples=0), ListSink(), should_stop=two_shards_done, shard_images=4)
    assert stopped["stopped"] is True and stopped["packed"]["shards_done"] == 2
    with pytest.raises((FileNotFoundError, ValueError)):
        PackedSet(out)  # no meta.json: not loadable until finished
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "train").glob("shard-*.bin")}
    assert len(done) == 2
    sink = ListSink()
    resumed = run_prepare(PrepareConfig(data=DataConfig(dataset="imagefolder", root=str(src)), out=str(out),
                                        short_side=SHORT, workers=0, samples=0), sink, shard_images=4)
    assert resumed["packed"]["shards"] == 5 + 2 and resumed["packed"]["shards_written"] == 5
    assert {n: ((out / "train" / n).stat().st_ino, (out / "train" / n).stat().st_mtime_ns) for n in done} == done
    assert any("2 shards done before" in e.payload.get("message", "") for e in sink.of_type("log"))
    fresh = tmp_path / "fresh"
    run_prepare(PrepareConfig(data=DataConfig(dataset="imagefolder", root=str(src)), out=str(fresh),
                              short_side=SHORT, workers=2, samples=0), ListSink(), shard_images=4)  # forked workers
    for split in ("train", "val"):
        a, b = PackedSet(out, split), PackedSet(fresh, split)
        assert len(a) == len(b) and torch.equal(a.labels, b.labels)
        assert all(bytes(a.jpeg_bytes(i)) == bytes(b.jpeg_bytes(i)) for i in range(len(a)))


def test_truncated_shard_is_refused(prepared: tuple[Path, Path, dict[str, Any], ListSink], tmp_path: Path) -> None:
    _, out, _, _ = prepared
    copy = tmp_path / "copy"
    for path in out.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(out)).write_bytes(path.read_bytes())
    shard = copy / "train" / "shard-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match="shard-00001.bin.*truncated"):
        PackedSet(copy)
    (copy / "train" / "shard-00002.bin").unlink()
    with pytest.raises(ValueError, match="missing"):
        PackedSet(copy)


def test_corrupt_source_images_are_reported_not_fatal(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    good = (src / "train" / "c0" / "0.jpg").read_bytes()
    (src / "train" / "c1" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (src / "train" / "c2" / "notes.jpg").write_text("not an image")
    sink = ListSink()
    info = prepare(src, tmp_path / "out", sink)
    assert info["skipped_count"] == 2
    assert sorted(Path(p).name for p in info["skipped"]) == ["notes.jpg", "truncated.jpg"]
    assert info["splits"]["train"] == {"images": 20} and info["packed"]["splits"]["train"] == {"images": 18}
    assert any("unreadable" in e.payload["message"] for e in sink.of_type("log"))
    assert len(PackedSet(tmp_path / "out")) == 18


def test_links_out_of_the_source_are_reported_with_their_reason_and_never_packed(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    private = make_folder(tmp_path / "private", per_class=1, val_per_class=1)
    (src / "train" / "c0" / "inside.jpg").symlink_to(src / "val" / "c1" / "0.jpg")  # read
    (src / "train" / "c1" / "stolen.jpg").symlink_to(private / "train" / "c0" / "0.jpg")
    (src / "val" / "c2" / "other-team").symlink_to(private / "val")
    good = (src / "train" / "c0" / "0.jpg").read_bytes()
    (src / "train" / "c2" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    sink = ListSink()
    info = prepare(src, tmp_path / "out", sink)
    links = [str(src / "train" / "c1" / "stolen.jpg"), str(src / "val" / "c2" / "other-team") + "/"]
    assert info["skipped_count"] == 3 and info["skipped"][:2] == sorted(links)  # links out listed first
    assert info["skipped_reasons"] == [OUTSIDE_ROOT, OUTSIDE_ROOT, info["skipped_reasons"][2]]
    assert Path(info["skipped"][2]).name == "truncated.jpg" and "Error" in info["skipped_reasons"][2]
    assert info["splits"] == {"train": {"images": 20}, "val": {"images": 6}}  # 18 + inside.jpg + truncated.jpg
    assert info["packed"]["splits"] == {"train": {"images": 19}, "val": {"images": 6}}
    assert any("outside the dataset" in e.payload["message"] for e in sink.of_type("log"))


def test_a_shard_linked_out_of_the_packed_folder_is_refused(
        prepared: tuple[Path, Path, dict[str, Any], ListSink], tmp_path: Path) -> None:
    _, out, _, _ = prepared
    copy = tmp_path / "copy"
    for path in out.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(out)).write_bytes(path.read_bytes())
    shard = copy / "train" / "shard-00001.bin"
    (copy / "train" / "spare.bin").write_bytes(shard.read_bytes())
    shard.unlink()
    shard.symlink_to(copy / "train" / "spare.bin")  # within the folder: fine
    assert len(PackedSet(copy)) == 18
    shard.unlink()
    (tmp_path / "elsewhere.bin").write_bytes((copy / "train" / "spare.bin").read_bytes())
    shard.symlink_to(tmp_path / "elsewhere.bin")
    with pytest.raises(OutsideRootError, match="shard-00001.bin: a symlink leading outside"):
        PackedSet(copy)
    with pytest.raises(OutsideRootError, match="shard-00001.bin: a symlink leading outside"):
        load_dataset(DataConfig(dataset="packed", root=str(copy)), train=True)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)


def hostile_index(split: Path, rows: int = 3, shard_bytes: int = 100, **changes: np.ndarray) -> None:
    arrays = {"offsets": np.array([0, 10, 20]), "lengths": np.array([10, 10, 10]), "labels": np.array([0, 1, 0]),
              "heights": np.array([4, 4, 4]), "widths": np.array([4, 4, 4]), "shard": np.array([0, 0, 0])}
    arrays = {k: v[:rows] for k, v in arrays.items()}
    arrays.update(changes)
    write_npz(split / "index.npz", **arrays)
    (split / "shard-00000.bin").write_bytes(b"\0" * shard_bytes)


def meta(**changes: Any) -> dict[str, Any]:
    base = {"format": fmt.FORMAT, "version": fmt.VERSION, "classes": ["a", "b"], "complete": True,
            "splits": {"train": {"images": 3, "shards": 1}}, "mean": [0.5] * 3, "std": [0.25] * 3}
    return {**base, **changes}


@pytest.mark.parametrize(("meta_text", "index", "match"), [
    ("{not json", {}, "not valid JSON"),
    (json.dumps([1, 2]), {}, "expected a JSON object"),
    (json.dumps(meta(complete=False)), {}, "did not finish"),
    (json.dumps(meta(format="zip")), {}, "not a mocolab-packed"),
    (json.dumps(meta(classes=[])), {}, "classes"),
    (json.dumps(meta(splits={"train": {"images": 10**15, "shards": 1}})), {}, "positive counts"),
    (json.dumps(meta(splits={"train": {"images": 4, "shards": 1}})), {}, "meta.json says 4"),
    (json.dumps(meta(std=[0.0, 0.1, 0.1])), {}, "std must be"),
    (json.dumps(meta()), {"offsets": np.array([0, 10, 95])}, "ends at byte 105"),
    (json.dumps(meta()), {"lengths": np.array([10, -5, 10])}, "non-positive lengths"),
    (json.dumps(meta()), {"offsets": np.array([0, -10, 20])}, "negative offsets"),
    (json.dumps(meta()), {"labels": np.array([0, 2, 0])}, "labels outside"),
    (json.dumps(meta()), {"shard": np.array([0, 1, 0])}, "shard numbers"),
    (json.dumps(meta()), {"heights": np.array([4, 0, 4])}, "heights outside"),
    (json.dumps(meta()), {"widths": np.array([[4, 4, 4]])}, "1-D integer"),
    (json.dumps(meta()), {"labels": np.array([0.0, 1.0, 0.0])}, "1-D integer"),
])
def test_hostile_packed_files_raise_value_errors(tmp_path: Path, meta_text: str, index: dict[str, np.ndarray],
                                                 match: str) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "meta.json").write_text(meta_text)
    hostile_index(tmp_path / "train", **index)
    with pytest.raises(ValueError, match=match):
        PackedSet(tmp_path)


def test_index_claiming_huge_counts_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "meta.json").write_text(json.dumps(meta()))
    hostile_index(tmp_path / "train")
    # rewrite offsets.npy's header to claim 10**12 rows (8 TB) over the same few bytes
    path = tmp_path / "train" / "index.npz"
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
    members["offsets.npy"] = buf.getvalue() + members["offsets.npy"][128:]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match="claims 1000000000000 rows"):
        PackedSet(tmp_path)
    (tmp_path / "train" / "index.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not a readable index"):
        PackedSet(tmp_path)
    (tmp_path / "meta.json").write_bytes(b" " * (fmt.MAX_META_BYTES + 1))
    with pytest.raises(ValueError, match="more than a packed set's metadata"):
        PackedSet(tmp_path)


def test_in_memory_sets_inspect_and_pack(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = np.stack([smooth(20, 20, s) for s in range(12)])
    labels = rng.integers(0, 3, 12)
    root = tmp_path / "npz"
    root.mkdir()
    write_npz(root / "train.npz", images=images, labels=labels, classes=np.array(["x", "y", "z"]))
    write_npz(root / "test.npz", images=images[:4], labels=labels[:4], classes=np.array(["x", "y", "z"]))
    cfg = PrepareConfig(data=DataConfig(dataset="npz", root=str(root)), out=None, samples=4)
    info = run_prepare(cfg, ListSink())
    x = images.reshape(-1, 3) / 255.0
    assert info["mean"] == pytest.approx(x.mean(0).tolist(), abs=1e-5)
    assert info["std"] == pytest.approx(x.std(0).tolist(), abs=1e-5)
    assert info["stats_images"] == 12 and info["packed"] is None and info["classes"] == ["x", "y", "z"]
    assert info["image_size"] == {"min": [20, 20], "median": [20, 20], "max": [20, 20]}
    packed_info = run_prepare(cfg.model_copy(update={"out": str(tmp_path / "out")}), ListSink())
    assert packed_info["packed"]["splits"] == {"train": {"images": 12}, "val": {"images": 4}}
    data = PackedSet(tmp_path / "out")
    assert data.labels.tolist() == labels.tolist() and data.classes == ["x", "y", "z"]
    decoded = torch.stack([data.load(i) for i in range(12)]).permute(0, 2, 3, 1).float()
    assert (decoded - torch.from_numpy(images).float()).abs().mean() < 4.0


def test_packed_stream_is_deterministic_and_resumable(prepared: tuple[Path, Path, dict[str, Any], ListSink]
                                                      ) -> None:
    _, out, _, _ = prepared
    data = PackedSet(out)
    stream = TrainStream(data, 4, seed=5, crop_size=16, decode="cpu")
    seen = {step: stream.batch(step) for step in range(6)}
    assert seen[0][0].shape == (2, 4, 3, 16, 16) and seen[0][0].dtype == torch.uint8
    assert torch.equal(seen[0][1], data.labels[stream.indices(0)])
    restarted = TrainStream(PackedSet(out), 4, seed=5, crop_size=16, num_workers=1, decode="cpu")
    for step in (3, 4, 5, 1, 2):  # resumed at 3, then a rollback to 1: the loader restarts there
        images, labels = restarted.batch(step)
        assert torch.equal(images, seen[step][0]) and torch.equal(labels, seen[step][1])
    restarted.close()


def test_device_decode_matches_cpu_geometry(prepared: tuple[Path, Path, dict[str, Any], ListSink]) -> None:
    src, out, _, _ = prepared
    for data in (PackedSet(out), ImageFolderSet(src / "train")):
        cpu = TrainStream(data, 6, seed=2, crop_size=24, decode="cpu")
        dev = TrainStream(data, 6, seed=2, crop_size=24, decode="device", device="cpu")  # decode_jpeg on a list
        assert dev.decode_on_device and not cpu.decode_on_device
        for step in range(2):
            a, la = cpu.batch(step)
            b, lb = dev.batch(step)
            assert b.dtype == torch.float32 and b.shape == a.shape == (2, 6, 3, 24, 24)
            assert torch.equal(la, lb)
            assert (a.float() / 255 - b).abs().mean() < 0.02  # same boxes and flips, two resamplers
    test = PackedSet(out, "val")
    x_cpu = torch.cat([x for x, _ in eval_batches(test, 4, 16)])
    x_dev = torch.cat([x for x, _ in eval_batches(test, 4, 16, decode="device")])
    assert x_cpu.shape == x_dev.shape == (6, 3, 16, 16) and (x_cpu - x_dev).abs().mean() < 0.05


def test_out_must_not_overlap_the_source(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=2, val_per_class=1)
    for out in (src, src / "train" / "packed", tmp_path):
        with pytest.raises(ValueError, match="must not contain one another"):
            prepare(src, out)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mocov3_core", "prepare", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_prepare_progress_and_summary(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=3, val_per_class=1)
    out = cli("--dataset", "imagefolder", "--root", str(src), "--out", str(tmp_path / "out"), "--short-side", "32",
              "--workers", "0", "--grid", str(tmp_path / "grid.jpg"), "--events", str(tmp_path / "events.jsonl"))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert "samples_jpeg" not in summary and summary["packed"]["splits"]["train"] == {"images": 9}
    assert "pack: 100%" in out.stderr and "verify: 100%" in out.stderr and "[succeeded]" in out.stderr
    assert Image.open(tmp_path / "grid.jpg").format == "JPEG"
    types = [json.loads(line)["type"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert types.count("dataset") == 1 and types[0] == "status"
    bad = cli("--dataset", "imagefolder", "--root", str(src), "--short-side", "1")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: short_side") and "Traceback" not in bad.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_decode_matches_cpu_geometry(prepared: tuple[Path, Path, dict[str, Any], ListSink]) -> None:
    _, out, _, _ = prepared
    data = PackedSet(out)
    cpu = TrainStream(data, 6, seed=2, crop_size=24, decode="cpu")
    gpu = TrainStream(data, 6, seed=2, crop_size=24, device="cuda", num_workers=1)  # auto: nvJPEG for JPEGs
    assert gpu.decode_on_device
    for step in range(3):
        a, la = cpu.batch(step)
        b, lb = gpu.batch(step)
        assert b.device.type == "cuda" and b.shape == a.shape and torch.equal(la, lb.cpu())
        assert (a.float() / 255 - b.cpu()).abs().mean() < 0.02
    gpu.close()


def test_a_packed_set_is_a_source_too(prepared: tuple[Path, Path, dict[str, Any], ListSink], tmp_path: Path) -> None:
    _, out, info, _ = prepared
    spec = PrepareConfig(data=DataConfig(dataset="packed", root=str(out)), out=str(tmp_path / "again"), workers=0,
                         short_side=SHORT, samples=3)
    again = run_prepare(spec, ListSink())
    assert again["kind"] == "packed" and again["classes"] == info["classes"] and again["splits"] == info["splits"]
    repacked, first = PackedSet(tmp_path / "again"), PackedSet(out)
    assert torch.equal(repacked.labels, first.labels) and repacked.meta["source"]["kind"] == "packed"
    assert [repacked.size(i) for i in range(len(first))] == [first.size(i) for i in range(len(first))]
