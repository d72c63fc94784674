"""One rank of a run an agent launched with torchrun: `python -m worker.rank <job.json>` (torchrun's entrypoint).

torchrun gives every process RANK, WORLD_SIZE and LOCAL_RANK; the engine joins the process group from them
(c10d rendezvous, gloo on CPUs, NCCL on GPUs). Rank 0 speaks for the run, as in a one-GPU run: it emits the
worker's `running` status (with the gang's machines), the engine's events, and the final status. The other
ranks train and say nothing, except when they fail: their error, with rank and host, goes into the gang's hash
(``error:<agent>:<rank>``), and the node task that launched them puts it into the run's log.

A rank whose peer died (a machine lost, a rank crashed) ends without a final status: that is not the run's
failure, and the scheduler resumes it as the next attempt on machines that work.

job.json (written by the node task, on the agent's local disk): run_id, kind, spec, attempt, gang, agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mocov3_core.config import ConfigError, PretrainConfig, validate_spec
from mocov3_core.events import EventSink

from . import gang
from ._redis import OUTAGE_ERRORS, connect
from .runner import EVAL_KINDS, StopWatch, _Run, refused_path, resolve_paths
from .settings import Settings
from .sink import RedisStreamSink, last_seq
from .workdir import ProgressSink, WorkerDir

log = logging.getLogger("mocolab.worker.rank")


class _Rank0(_Run):
    """Rank 0 of a gang: a one-GPU run's life (spec, paths, engine, outcome) without the run lock (the gang's
    reservation already makes it the only execution of this attempt) and without a verdict on a lost peer."""

    def __init__(self, job: dict[str, Any], settings: Settings) -> None:
        super().__init__(job["run_id"], job["kind"], job["spec"], int(job["attempt"]), settings)
        self.gang = str(job["gang"])
        self.world = int(os.environ.get("WORLD_SIZE", "1"))

    def execute(self) -> str:
        self.sink = RedisStreamSink(self.settings.redis_url, spool_dir=self.settings.spool_dir)
        state = "failed"
        try:
            self.sink.flush(10.0)
            delivered = self._with_redis(lambda: last_seq(self.redis, self.run_id))
            self.delivered = -1 if delivered is None else delivered
            outcome = self._engine()
            if outcome is None:
                state = "lost"
                return state
            state, message, extra = outcome
            self.status(state, message, gang=self.gang, **extra)
            return state
        finally:
            self.sink.close(timeout=15.0)
            if state != "lost":
                self._record(state)
                self._safe(lambda: self.redis.delete(f"mocolab:cancel:{self.run_id}"))

    def _engine(self) -> tuple[str, str, dict[str, Any]] | None:
        assert self.sink is not None
        quick = connect(self.settings.redis_url, timeout=1.0, connect_timeout=0.5)
        watch = StopWatch(quick, self.run_id, self.workdir).start()
        try:
            spec = self._resolve_paths(dict(self.spec))
            try:
                cfg = validate_spec(EVAL_KINDS.get(self.kind, self.kind), spec)
            except ConfigError as exc:
                return "failed", f"invalid spec: {exc}", {"field": exc.path}
            refused = self._refused_path(cfg)
            if refused is not None:
                return "failed", f"invalid spec: {refused[0]}: {refused[1]}", {"field": refused[0]}
            self.status("running", f"started on {self.world} process(es), gang {self.gang} (attempt {self.attempt})",
                        final=False, host=socket.gethostname(), pid=os.getpid(), world_size=self.world,
                        gang=self.gang)
            progress = ProgressSink(self.workdir, self.run_id)
            sinks: list[EventSink] = [self.sink, progress]
            try:
                state, message, extra = self._call_engine(cfg, sinks, watch, self.next_seq())
                if state == "failed" and message == "stop requested":  # another rank's machine is shutting down
                    return "queued", f"stopped with the machines of the run: back to the queue to resume " \
                                     f"(checkpoint at step {extra.get('step')})", extra
                return state, message, extra
            except Exception as exc:
                from mocov3_core.train.distributed import peer_lost

                message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                if peer_lost(exc):
                    return None
                self.emit("log", level="error", message=f"rank 0 on {socket.gethostname()}: run failed: {message}",
                          traceback=traceback.format_exc(), rank=0, host=socket.gethostname())
                return "failed", message, {}
            finally:
                progress.close()
        finally:
            watch.stop()


def _other_rank(job: dict[str, Any], settings: Settings, rank: int) -> int:
    """A rank other than 0: train silently; a failure of its own goes to the gang's hash for the log."""
    from mocov3_core.train import pretrain

    try:
        spec = resolve_paths(job["kind"], job["spec"], settings)  # as rank 0 does: relative to the storage
        try:
            cfg = validate_spec(EVAL_KINDS.get(job["kind"], job["kind"]), spec)
        except ConfigError:
            return 0  # rank 0 reports the bad spec
        if not isinstance(cfg, PretrainConfig) or refused_path(cfg, settings) is not None:
            return 0  # evaluations run on one process; rank 0 reports a path this worker must not open
        # its own machine's agent shutting down stops the run on every machine (the stop is all-reduced)
        stopping = WorkerDir(settings.spool_dir, settings.worker_id).stop_requested
        pretrain(cfg, settings.run_dir(job["run_id"]), [], run_id=job["run_id"], resume="auto", should_stop=stopping)
        return 0
    except Exception as exc:
        from mocov3_core.train.distributed import peer_lost

        if not peer_lost(exc):
            report = {"rank": rank, "host": socket.gethostname(), "time": time.time(),
                      "message": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                      "traceback": traceback.format_exc()[-4000:]}
            with contextlib.suppress(*OUTAGE_ERRORS):
                connect(settings.redis_url).hsetnx(gang.gang_key(job["gang"]), f"error:{job['agent']}:{rank}",
                                                   json.dumps(report))
        raise


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m worker.rank JOB.json (started by the agent under torchrun)\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = json.loads(Path(args[0]).read_text())
    settings = Settings.from_env()
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        state = _Rank0(job, settings).execute()
        return 0 if state in ("succeeded", "cancelled", "queued") else 1
    return _other_rank(job, settings, rank)


if __name__ == "__main__":
    sys.exit(main())
