"""The agent's side of a run placed by the scheduler: one node task per machine of the run, which launches
torchrun on the devices the scheduler reserved and watches it.

An agent (`mocolab worker --gpus all|0,1,3|cpu:N`) is a Celery worker that consumes only its own queue
(`gang.node_queue(id)`), with one pool process per device it owns, so it never holds more node tasks than it
has devices. A node task:

1. checks the gang is still the run's (not aborted, this agent a member) and joins it (HSETNX joined:<agent>:
   a redelivered message of a task that already joined does nothing);
2. member 0 picks a free port for torchrun's c10d rendezvous and publishes it; every member waits until all
   members have joined (all or nothing: until then no process starts, and the scheduler gives a gang that
   does not form within its timeout its devices back);
3. runs ``torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint <member 0>:<port>
   --rdzv-id <gang> -m worker.rank <job>`` with CUDA_VISIBLE_DEVICES set to its devices (none on CPU slots);
4. while it runs, stops it (SIGTERM to its process group, SIGKILL after a grace) when the gang is aborted or
   another member's heartbeat vanishes (its machine is gone: gloo or NCCL alone could wait minutes);
5. records torchrun's exit code (``exit:<agent>``), aborts the gang if torchrun failed (so the other machines
   stop too), copies its ranks' errors into the run's log, and gives its devices back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from mocov3_core.events import Event

from . import gang, protocol
from ._redis import OUTAGE_ERRORS, Redis, connect
from .settings import Settings
from .sink import RedisStreamSink
from .workdir import WorkerDir

log = logging.getLogger("mocolab.worker.agent")

POLL_S = 0.5
KILL_GRACE_S = 10.0  # after SIGTERM, how long torchrun gets to stop its ranks before SIGKILL
WARM_STOP_S = 90.0  # the agent shutting down: how long the ranks get to reach a checkpoint before they are stopped
PEER_CHECK_S = 2.0  # how often a member checks the other members' heartbeats


def parse_devices(text: str, detected: int | None = None) -> tuple[str, list[int]]:
    """`--gpus` value -> (device kind, devices): 'all' (every GPU NVML sees), '0,1,3', or 'cpu:N'."""
    value = text.strip().lower()
    if value.startswith("cpu:"):
        n = value[4:]
        if not n.isdigit() or not 1 <= int(n) <= 256:
            raise ValueError(f"--gpus {text}: cpu:N needs N from 1 to 256")
        return "cpu", list(range(int(n)))
    if value == "all":
        if detected is None:
            from .cli import gpu_count

            detected = gpu_count()
        if detected == 0:
            raise ValueError("--gpus all: no GPU found on this machine (NVML sees none); use cpu:N for CPU slots")
        return "gpu", list(range(detected))
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"--gpus {text}: expected all, a list of GPU indices such as 0,1,3, or cpu:N")
    devices = sorted({int(p) for p in parts})
    return "gpu", devices


def agent_info(settings: Settings, redis: Redis | None) -> dict[str, Any] | None:
    """The `agent` part of this worker's heartbeat (see worker/gang.py), or None for a one-GPU worker."""
    if not settings.agent_devices:
        return None
    held: dict[int, str] = {}
    if redis is not None:
        with contextlib.suppress(*OUTAGE_ERRORS):
            raw: dict[Any, Any] = redis.hgetall(gang.slots_key(settings.worker_id))
            held = {int(_text(k)): _text(v) for k, v in raw.items() if _text(k).isdigit()}
    slots = []
    for device in settings.agent_devices:
        parsed = gang.parse_token(held[device]) if device in held else None
        slots.append({"device": device, "run_id": parsed[0] if parsed else None,
                      "attempt": parsed[1] if parsed else None})
    return {"devices": list(settings.agent_devices), "device_kind": settings.agent_kind,
            "storage": str(settings.storage.resolve()), "node_queue": gang.node_queue(settings.worker_id),
            "slots": slots}


def reset_slots(settings: Settings) -> None:
    """At agent start: what its slot hash holds was held by its previous life, which is gone."""
    with contextlib.suppress(*OUTAGE_ERRORS):
        connect(settings.redis_url).delete(gang.slots_key(settings.worker_id))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class NodeTask:
    def __init__(self, run_id: str, kind: str, spec: dict[str, Any], attempt: int, placement: dict[str, Any],
                 settings: Settings) -> None:
        self.run_id, self.kind, self.spec, self.attempt = run_id, kind, spec, attempt
        self.settings = settings
        self.me = settings.worker_id
        self.token = str(placement["gang"])
        self.members: list[str] = list(placement["members"])
        self.hosts: dict[str, str] = dict(placement.get("hosts") or {})
        self.devices: list[int] = [int(d) for d in placement["devices"][self.me]]
        self.gpus_per_node = int(placement["gpus_per_node"])
        self.form_timeout = float(placement.get("form_timeout_s") or gang.FORM_TIMEOUT_S)
        self.redis = connect(settings.redis_url)
        self.key = gang.gang_key(self.token)
        self.workdir = WorkerDir(settings.spool_dir, settings.worker_id)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping: str | None = None
        self._stopping_at = 0.0
        self._term_at: float | None = None

    # ------------------------------------------------------------------ the steps
    def execute(self) -> str:
        current = gang.read_gang(self.redis, self.token)
        if current is None or current.abort or self.me not in current.members:
            log.warning("gang %s: no longer current (%s): dropping this node task", self.token,
                        "aborted" if current and current.abort else "gone")
            return "stale"
        if not self.redis.hsetnx(self.key, f"joined:{self.me}", time.time()):
            log.warning("gang %s: this agent already joined it (a redelivered message): not starting twice", self.token)
            return "duplicate"
        rc: int | None = None
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            port = self._rendezvous()
            if port is None:
                return "stale"
            self.workdir.write_progress(self.run_id, None)
            rc = self._torchrun(port)
            return "ok" if rc == 0 else f"exit {rc}"
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._finish(rc)

    def _rendezvous(self) -> int | None:
        """Member 0 publishes a free port; all wait until every member joined. -> the port, None if the gang
        was aborted or did not form in time."""
        if self.members[0] == self.me:
            self.redis.hset(self.key, "rdzv_port", _free_port())
        deadline = time.monotonic() + self.form_timeout
        while time.monotonic() < deadline and not self.stopping:
            current = gang.read_gang(self.redis, self.token)
            if current is None or current.abort:
                return None
            if current.formed and current.rdzv_port:
                return current.rdzv_port
            time.sleep(POLL_S / 2)
        last = gang.read_gang(self.redis, self.token)
        missing = [m for m in self.members if last is None or m not in last.joined]
        gang.abort(self.redis, self.token, f"did not form within {self.form_timeout:.0f} s: "
                   f"{', '.join(missing) or 'a member'} never joined")
        return None

    def _job_file(self) -> Path:
        folder = self.settings.spool_dir / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.token}.{self.me}.json".replace("/", "_")
        path.write_text(json.dumps({"run_id": self.run_id, "kind": self.kind, "spec": self.spec,
                                    "attempt": self.attempt, "gang": self.token, "agent": self.me}))
        return path

    def command(self, port: int, job: Path) -> list[str]:
        host0 = self.hosts.get(self.members[0]) or "127.0.0.1"
        is_host = 1 if self.members[0] == self.me else 0
        return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(self.members)}",
                f"--nproc-per-node={self.gpus_per_node}", "--rdzv-backend=c10d", f"--rdzv-endpoint={host0}:{port}",
                f"--rdzv-id={self.token}", f"--rdzv-conf=is_host={is_host},join_timeout={int(self.form_timeout)}",
                "--max-restarts=0", "--monitor-interval=0.5", "-m", "worker.rank", str(job)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.settings.agent_kind == "gpu":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in self.devices)
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        env.pop("MOCOLAB_GPU", None)
        env.update(MOCOLAB_GANG=self.token, PYTHONUNBUFFERED="1")
        return env

    def _torchrun(self, port: int) -> int:
        job = self._job_file()
        try:
            # its own session: a signal to the agent's process group reaches torchrun only through this task;
            # and it dies with this task's process (PDEATHSIG), so no rank outlives an agent killed outright
            self.proc = subprocess.Popen(self.command(port, job), env=self.environment(), start_new_session=True,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509 (only prctl, no locks)
            log.info("gang %s: torchrun pid %d on devices %s (member %d of %d)", self.token, self.proc.pid,
                     self.devices, self.members.index(self.me), len(self.members))
            next_peer_check = time.monotonic() + PEER_CHECK_S
            while self.proc.poll() is None:
                time.sleep(POLL_S)
                if self.stopping:
                    # the agent shutting down (its stop file): the ranks stop at a checkpoint by themselves and
                    # hand the run back; a revoke (no stop file): stop them now
                    warm = self.workdir.stop_requested()
                    if not warm or time.monotonic() - self._stopping_at > WARM_STOP_S:
                        self._stop_torchrun(self.stopping)
                    continue
                try:
                    current = gang.read_gang(self.redis, self.token)
                    if current is not None and current.abort:
                        self._stop_torchrun(f"gang aborted: {current.abort}")
                    elif time.monotonic() >= next_peer_check:
                        next_peer_check = time.monotonic() + PEER_CHECK_S
                        others = [m for m in self.members if m != self.me]
                        dead = [m for m, ok in gang.alive(self.redis, others).items() if not ok]
                        if dead:
                            gang.abort(self.redis, self.token, f"machine {', '.join(dead)} lost (no heartbeat)")
                except OUTAGE_ERRORS:
                    pass  # a Redis outage is no reason to stop training
            return int(self.proc.returncode)
        finally:
            job.unlink(missing_ok=True)

    def _stop_torchrun(self, why: str) -> None:
        """SIGTERM to torchrun's process group (its ranks stop), SIGKILL to the group after the grace."""
        assert self.proc is not None
        if self._term_at is None:
            log.warning("gang %s: stopping torchrun: %s", self.token, why)
            self._term_at = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        elif time.monotonic() - self._term_at > KILL_GRACE_S:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        """A revoke (terminate) or the pool shutting down: stop the ranks too."""
        self.stopping = f"node task terminated by signal {signum}"
        self._stopping_at = time.monotonic()

    def _finish(self, rc: int | None) -> None:
        try:
            if rc is not None:
                self.redis.hset(self.key, f"exit:{self.me}", rc)
                if rc != 0:
                    gang.abort(self.redis, self.token, f"torchrun on {self.me} exited with code {rc}")
                self._report_rank_errors()
            else:
                self.redis.hset(self.key, f"exit:{self.me}", -1)
        except OUTAGE_ERRORS as exc:
            log.warning("gang %s: cannot record the end: %s", self.token, exc)
        finally:
            with contextlib.suppress(*OUTAGE_ERRORS):
                gang.release(self.redis, self.me, self.token, self.devices)
            self.workdir.clear_progress()

    def _report_rank_errors(self) -> None:
        """This machine's ranks' own errors, as `log` events of the run (after its processes are gone)."""
        raw = {_text(k): _text(v) for k, v in self.redis.hgetall(self.key).items()}
        prefix = f"error:{self.me}:"
        errors = []
        for field, text in raw.items():
            if field.startswith(prefix) and not raw.get(f"reported:{field}"):
                with contextlib.suppress(ValueError):
                    errors.append((field, json.loads(text)))
        if not errors:
            return
        sink = RedisStreamSink(self.settings.redis_url, spool_dir=self.settings.spool_dir)
        try:
            seq = int(self.redis.get(protocol.seq_key(self.run_id)) or -1)
            for field, report in sorted(errors, key=lambda e: int(e[1].get("rank", 0))):
                seq += 1
                sink.write(Event(run_id=self.run_id, seq=seq, time=float(report.get("time") or time.time()),
                                 type="log", payload={"level": "error", "rank": report.get("rank"),
                                                      "host": report.get("host"), "worker_id": self.me,
                                                      "message": f"rank {report.get('rank')} on {report.get('host')}: "
                                                                 f"{report.get('message')}",
                                                      "traceback": report.get("traceback")}))
                self.redis.hset(self.key, f"reported:{field}", 1)
        finally:
            sink.close(timeout=10.0)


def _libc() -> Any:
    """libc, loaded in the parent: the child between fork and exec only calls into it (no loader locks there)."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux prctl PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        with contextlib.suppress(Exception):
            _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def execute_node(run_id: str, kind: str, spec: dict[str, Any], attempt: int, placement: dict[str, Any],
                 settings: Settings | None = None) -> str:
    return NodeTask(run_id, kind, spec, attempt, placement, settings or Settings.from_env()).execute()
