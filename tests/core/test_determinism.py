"""A seeded run gives the same digits in two processes (docs/results.md, "Determinism").

Each run is a fresh interpreter, as a worker's run is: pretraining of fmnist_tiny for a few steps (on a small
written image set, so that the test takes seconds), then the kNN and linear evaluations of its checkpoint. The two
processes differ in what must not matter: the string-hash seed (set and dict order of strings) and
OMP_NUM_THREADS, which `train.threads` overrides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

THREADS = 2

SCRIPT = """
import json, sys
from pathlib import Path
from mocov3_core import build_spec, evaluate, pretrain
from mocov3_core.events import JsonlSink

out, data_root, threads = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
common = {"train.threads": threads, "data.dataset": "npz", "data.root": data_root}
spec = build_spec("pretrain", "fmnist_tiny", {**common, "train.max_steps": 6, "data.limit": None,
                                              "optim.batch_size": 32, "monitor.knn_every": 0})
sink = JsonlSink(out / "events.jsonl")
result = pretrain(spec, out, [sink], resume=None)
sink.close()
base = {"checkpoint": result.checkpoint}
knn = evaluate(build_spec("knn", None, {**common, "k": 20}, base=base))
linear = evaluate(build_spec("linear", None, {**common, "epochs": 3, "batch_size": 32}, base=base))
print(json.dumps({"losses": result.losses, "knn": knn, "linear": linear}))
"""


def write_images(root: Path) -> None:
    """A small 10-class set of 28x28 images (the class is the bright band's position, under noise)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 256), ("test", 200)):
        labels = rng.integers(0, 10, count)
        images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 * y + 4: 2 * y + 8, :] += 150
        np.savez(root / f"{split}.npz", images=images, labels=labels)


def seeded_run(out: Path, data_root: Path, hash_seed: str, omp_threads: str | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    env.pop("OMP_NUM_THREADS", None)
    if omp_threads is not None:
        env["OMP_NUM_THREADS"] = omp_threads
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(data_root), str(THREADS)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def losses_in_events(run_dir: Path) -> list[tuple[int, float]]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [(e["payload"]["step"], e["payload"]["values"]["loss"]) for e in events
            if e["type"] == "metrics" and "loss" in e["payload"]["values"]]


def test_two_seeded_runs_in_fresh_processes_give_the_same_digits(tmp_path: Path) -> None:
    write_images(tmp_path)
    a = seeded_run(tmp_path / "a", tmp_path, hash_seed="1", omp_threads=None)
    b = seeded_run(tmp_path / "b", tmp_path, hash_seed="2", omp_threads="1")  # unpinned: 1 thread, other digits
    assert len(a["losses"]) == 6 and a["losses"] == b["losses"]  # every step's loss, bit for bit
    assert losses_in_events(tmp_path / "a") == losses_in_events(tmp_path / "b")
    for protocol in ("knn", "linear"):
        assert a[protocol]["threads"] == b[protocol]["threads"] == THREADS
        assert (a[protocol]["top1"], a[protocol]["top5"]) == (b[protocol]["top1"], b[protocol]["top5"]), protocol
    config = [json.loads(line) for line in (tmp_path / "b" / "events.jsonl").read_text().splitlines()]
    assert [e["payload"]["threads"] for e in config if e["type"] == "config"] == [THREADS]
