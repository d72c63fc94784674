"""The service's cost on a run's speed: one run on 1 and on P processes through the service (an agent places
it and launches torchrun) against the same run under a bare `torchrun`, same spec and global batch.

    python bench/scale.py                    # CPU: fmnist_tiny, 1 and 2 processes, 2 rounds, alternated
    python bench/scale.py --procs 1 8 --set train.device=cuda   # on a GPU machine: 1 and 8 GPUs

Each case trains `--steps` steps; images/s is read from the run's own metrics events (their emission times)
over the steps after `--warmup`, so start-up (torchrun, rendezvous, data loading) is left out on both sides;
the service side's start-up (placement, node task, rendezvous) is reported apart. Cases alternate (bare,
service, bare, service, ...) so that a machine's drift hits both alike. Prints images/s of each and the ratio
service / bare (1.00 = no cost).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _server import ROOT, bench_server

PRESET = "fmnist_tiny"


def throughput(events: list[dict[str, Any]], batch: int, warmup: int) -> float:
    """Global images/s between the first read-back at or after step `warmup - 1` and the last one (a read-back
    emits the metrics of every step since the last; its events carry the read-back's time)."""
    times = {e["payload"]["step"]: e["time"] for e in events if e["type"] == "metrics"
             and "imgs_per_s" in (e["payload"].get("values") or {})}
    steps = sorted(s for s in times if s >= warmup - 1)
    if len(steps) < 2:
        raise RuntimeError(f"too few steps after the warm-up ({len(times)} in all)")
    return (steps[-1] - steps[0]) * batch / (times[steps[-1]] - times[steps[0]])


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"optim.batch_size": args.batch, "train.max_steps": args.steps, "monitor.knn_every": 0,
                           "train.log_every": args.log_every, "train.ckpt_every": 10_000, "data.limit": args.batch * 8,
                           "optim.epochs": -(-args.steps // 8),  # epochs of 8 steps: the whole run is timed
                           "train.threads": args.threads}
    for item in args.set:
        key, _, value = item.partition("=")
        out[key] = json.loads(value) if value[:1] in "0123456789-[{tf" and value not in ("cpu", "cuda") else value
    return out


def bare(tmp: Path, procs: int, spec: dict[str, Any], args: argparse.Namespace) -> float:
    out = tmp / f"bare-{procs}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", "-m",
           "mocov3_core", "pretrain", "--preset", PRESET, "--out", str(out), "--no-progress"]
    for key, value in spec.items():
        cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=3600, cwd=ROOT)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return throughput(events, args.batch, args.warmup)


def served(api: Any, procs: int, spec: dict[str, Any], args: argparse.Namespace) -> tuple[float, float]:
    """-> (images/s, seconds from submission to the first step's metrics)."""
    body = {"kind": "pretrain", "preset": PRESET, "name": f"scale-{procs}", "overrides": spec,
            "resources": {"nodes": 1, "gpus_per_node": procs}}
    resp = api.post("/runs", json=body)
    resp.raise_for_status()
    run_id, submitted = resp.json()["id"], time.time()
    deadline = time.monotonic() + 3600
    while (run := api.get(f"/runs/{run_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not end")
        time.sleep(3.0)  # the bench's own polling stays out of the measured run's way
    if run["status"] != "succeeded":
        raise RuntimeError(f"run {run_id} {run['status']}: {run.get('error') or run.get('message')}")
    events: list[dict[str, Any]] = []
    after = -1
    while True:
        page = api.get(f"/runs/{run_id}/events", params={"after_seq": after, "limit": 1000}).json()
        page = page["data"] if isinstance(page, dict) else page
        if not page:
            break
        events += page
        after = page[-1]["seq"]
    first = min(e["time"] for e in events if e["type"] == "metrics")
    return throughput(events, args.batch, args.warmup), first - submitted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="processes (GPUs) per run")
    ap.add_argument("--batch", type=int, default=128, help="global batch")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8, help="steps left out of the timing")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=10, help="train.log_every: steps per metrics read-back")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (train.threads)")
    ap.add_argument("--set", action="append", default=[], help="more spec overrides, key=value")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    spec = overrides(args)
    results: dict[int, dict[str, list[float]]] = {p: {"bare": [], "service": [], "start_s": []} for p in args.procs}
    with tempfile.TemporaryDirectory(prefix="mocolab-scale-") as name:
        tmp = Path(name)
        with bench_server(tmp, f"sqlite:///{tmp / 'bench.db'}") as srv:
            kind = "gpus" if spec.get("train.device") == "cuda" else "cpu"
            slots = max(args.procs)
            env = {**os.environ, "REDIS_URL": srv.redis_url, "MOCOLAB_STORAGE": str(tmp / "storage"),
                   "MOCOLAB_DATASET_ROOTS": os.environ.get("MOCOLAB_DATASET_ROOTS", "/usr/share/datasets")}
            agent = subprocess.Popen([sys.executable, "-m", "worker", "--gpus",
                                      "all" if kind == "gpus" else f"cpu:{slots}", "--worker-id", "bench-agent",
                                      "--spool-dir", str(tmp / "spool"), "--loglevel", "WARNING"],
                                     env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=open(tmp / "agent.log", "wb"))  # noqa: SIM115
            try:
                for r in range(args.rounds):
                    for procs in args.procs:
                        order = ("bare", "service") if r % 2 == 0 else ("service", "bare")
                        for side in order:
                            if side == "bare":
                                results[procs]["bare"].append(bare(tmp, procs, spec, args))
                            else:
                                ips, start = served(srv.api, procs, spec, args)
                                results[procs]["service"].append(ips)
                                results[procs]["start_s"].append(start)
                            print(f"round {r + 1} {procs} proc {side:8s} {results[procs][side][-1]:9.1f} images/s",
                                  flush=True)
            finally:
                os.killpg(agent.pid, signal.SIGTERM)
                agent.wait(60)
    print(f"\n{platform.node()}  {PRESET}  global batch {args.batch}  {args.steps} steps ({args.warmup} warm-up)  "
          f"threads/proc {args.threads}  {' '.join(args.set)}")
    print(f"{'procs':>5}  {'bare torchrun':>14}  {'service':>10}  {'service/bare':>12}  {'start-up s':>10}")
    rows = []
    for procs, res in results.items():
        b, s = statistics.median(res["bare"]), statistics.median(res["service"])
        rows.append({"procs": procs, "bare": res["bare"], "service": res["service"], "ratio": s / b,
                     "start_s": res["start_s"]})
        print(f"{procs:>5}  {b:>14.1f}  {s:>10.1f}  {s / b:>12.3f}  {statistics.median(res['start_s']):>10.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
