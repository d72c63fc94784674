"""`python -m worker --queue Q [--gpu N | --gpus all|0,1|cpu:N]` (and `mocolab worker`): one Celery worker with
its heartbeat. With --gpus it is an agent (worker/agent.py): it owns those devices and the server's scheduler
places runs on them, one device or many, alone or with other machines.

One process per GPU: --gpu N sets CUDA_VISIBLE_DEVICES=N before anything touches CUDA. Without a GPU the
pool processes get glibc malloc settings that spare a CPU run most of its page faults
(`docs/operations.md`: 11 -> 17 images/s at batch 256). Each run gets a fresh process.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import protocol
from .settings import default_worker_id

# glibc: no mmap for big blocks, never trim, grow the heap in 1 GiB steps (docs/operations.md).
CPU_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}


def parser(prog: str = "python -m worker") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queue", "-Q", default=os.environ.get("MOCOLAB_QUEUE") or protocol.DEFAULT_QUEUE,
                    help="the Celery queue to take runs from (default: MOCOLAB_QUEUE, else %(default)s)")
    ap.add_argument("--gpu", type=int, default=None,
                    help="the GPU index this worker owns (sets CUDA_VISIBLE_DEVICES); default: none given")
    ap.add_argument("--gpus", default=None, metavar="all|0,1,3|cpu:N",
                    help="run as an agent that owns these devices and runs any mix of runs on them, one GPU or many, "
                         "across machines with other agents (all: every GPU; cpu:N: N CPU slots); the scheduler "
                         "places runs on them. Without it: a one-GPU worker on the shared queue")
    ap.add_argument("--concurrency", "-c", type=int, default=1,
                    help="runs at once (default 1: one worker per GPU; more only for CPU runs)")
    ap.add_argument("--redis-url", default=None, help="broker and events Redis (default: REDIS_URL)")
    ap.add_argument("--storage", default=None, help="storage root for run directories (default: MOCOLAB_STORAGE)")
    ap.add_argument("--spool-dir", default=None, help="local folder for events held during Redis outages")
    ap.add_argument("--worker-id", default=None, help="name in heartbeats and locks (default: <host>-<pid>)")
    ap.add_argument("--loglevel", "-l", default="INFO", help="Celery log level (default %(default)s)")
    return ap


def gpu_count() -> int:
    """GPUs NVML sees, without touching CUDA in this process."""
    from .telemetry import Telemetry

    telemetry = Telemetry()
    try:
        return len(telemetry.gpus())
    finally:
        telemetry.close()


def configure(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the environment the main process and its pool processes share; -> the variables set."""
    env = os.environ if environ is None else environ
    worker_id = args.worker_id or env.get("MOCOLAB_WORKER_ID") or default_worker_id()
    changes: dict[str, str] = {"MOCOLAB_QUEUE": args.queue, "MOCOLAB_WORKER_ID": worker_id}
    for flag, name in ((args.redis_url, "REDIS_URL"), (args.storage, "MOCOLAB_STORAGE"),
                       (args.spool_dir, "MOCOLAB_SPOOL_DIR")):
        if flag:
            changes[name] = str(flag)
    if getattr(args, "gpus", None):
        from .agent import parse_devices

        kind, devices = parse_devices(args.gpus)
        changes["MOCOLAB_AGENT_DEVICES"] = f"cpu:{len(devices)}" if kind == "cpu" else ",".join(map(str, devices))
        if kind == "cpu":
            changes.update({k: v for k, v in CPU_MALLOC_ENV.items() if k not in env})
    elif args.gpu is not None:
        changes.update(MOCOLAB_GPU=str(args.gpu), CUDA_VISIBLE_DEVICES=str(args.gpu))
    elif env.get("CUDA_VISIBLE_DEVICES", None) == "" or gpu_count() == 0:
        changes.update({k: v for k, v in CPU_MALLOC_ENV.items() if k not in env})
    env.update(changes)
    return changes


def main(argv: list[str] | None = None, prog: str = "python -m worker") -> int:
    """Start the worker (blocks until it shuts down); `mocolab worker` calls main(argv, prog="mocolab worker")."""
    ap = parser(prog)
    args = ap.parse_args(argv)
    if args.concurrency < 1:
        ap.error("--concurrency must be at least 1")
    if args.gpus is not None and args.gpu is not None:
        ap.error("--gpus (an agent owning several devices) and --gpu (a one-GPU worker) exclude each other")
    try:
        configure(args)
    except ValueError as exc:
        ap.error(str(exc))
    from .celery_app import app
    from .settings import Settings

    app.conf.broker_url = Settings.from_env().redis_url  # in case the app was imported before configure()
    worker_id = os.environ["MOCOLAB_WORKER_ID"]
    queue, concurrency = args.queue, args.concurrency
    if args.gpus is not None:  # an agent: only its own node tasks, one pool process per device it owns
        from .gang import node_queue

        queue, concurrency = node_queue(worker_id), len(Settings.from_env().agent_devices)
    app.worker_main(["worker", "--queues", queue, "--concurrency", str(concurrency), "--pool", "prefork",
                     "--max-tasks-per-child", "1", "--hostname", f"{worker_id}@%h", "--loglevel", args.loglevel,
                     "--without-gossip"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
