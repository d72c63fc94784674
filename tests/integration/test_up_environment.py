"""`mocolab up` as a user starts it: settings from the environment (MOCOLAB_STATE, MOCOLAB_HOST,
MOCOLAB_PORT; a flag wins), the state folder of mode 700, the embedded Redis behind a password generated
once (mode 600), and a second `mocolab up` on a busy port refused in one line."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from mocolab.cli import _parser
from mocolab.stack import redis_password
from server.embedded_redis import EmbeddedRedis, free_port

MOCOLAB = str(Path(sys.executable).with_name("mocolab"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_up_and_demo_take_their_defaults_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    for name in ("MOCOLAB_STATE", "MOCOLAB_HOST", "MOCOLAB_PORT", "MOCOLAB_GPU"):
        monkeypatch.delenv(name, raising=False)
    args = _parser().parse_args(["up"])
    assert (args.state, args.host, args.port, args.gpu) == (".mocolab", "127.0.0.1", 8000, None)
    monkeypatch.setenv("MOCOLAB_STATE", str(tmp_path / "st"))
    monkeypatch.setenv("MOCOLAB_HOST", "0.0.0.0")
    monkeypatch.setenv("MOCOLAB_PORT", "8123")
    monkeypatch.setenv("MOCOLAB_GPU", "1")
    for command in ("up", "demo"):
        args = _parser().parse_args([command])
        assert (args.state, args.host, args.port, args.gpu) == (str(tmp_path / "st"), "0.0.0.0", 8123, "1")
    flags = _parser().parse_args(["up", "--state", "s2", "--host", "127.0.0.1", "--port", "9000", "--gpu", "0"])
    assert (flags.state, flags.host, flags.port, flags.gpu) == ("s2", "127.0.0.1", 9000, "0")  # a flag wins


def test_a_bad_port_in_the_environment_is_one_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "MOCOLAB_PORT": "eighty", "MOCOLAB_STATE": str(tmp_path / "st")}
    out = subprocess.run([MOCOLAB, "up"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "MOCOLAB_PORT" in out.stderr and "'eighty'" in out.stderr
    assert not (tmp_path / "st").exists()


def test_the_embedded_redis_refuses_a_client_without_the_password(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    password = redis_password(state)
    assert redis_password(state) == password and len(password) >= 32  # generated once, kept
    assert mode(state / "redis.password") == 0o600
    with EmbeddedRedis(state / "redis", password=password) as server:
        assert password in server.url
        assert raw_ping(server.port).startswith(b"-NOAUTH")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, password="wrong").ping()
        assert redis.Redis.from_url(server.url).ping()
        assert password not in " ".join(Path(f"/proc/{server.proc.pid}/cmdline").read_text().split("\0"))  # ps
        assert mode(state / "redis" / "auth.conf") == 0o600


def raw_ping(port: int) -> bytes:
    """PING on a fresh connection, as any local process could send it; -> the reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(200)


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "MOCOLAB_CONFIG": str(tmp_path / "client.json"), "MOCOLAB_STATE": str(tmp_path / "state"),
           "MOCOLAB_HOST": "127.0.0.1", "MOCOLAB_PORT": str(free_port())}
    for name in ("REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def up(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([MOCOLAB, "up", "--no-worker"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"mocolab is up"):
                break
        else:
            pytest.fail("mocolab up ended before its banner")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def redis_port_of(proc: subprocess.Popen[bytes]) -> int:
    """The port of the stack's own redis-server, from its process title ('redis-server 127.0.0.1:PORT')."""
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        title = Path(f"/proc/{pid}/cmdline").read_text()
        found = re.search(r"redis-server[^:]*:(\d+)", title)
        if found:
            return int(found.group(1))
    raise AssertionError("no redis-server child")


def test_up_reads_the_environment_and_a_second_up_on_the_busy_port_says_so(up_env: dict[str, str]) -> None:
    state = Path(up_env["MOCOLAB_STATE"])
    with up(up_env) as first:
        health = httpx.get(f"http://127.0.0.1:{up_env['MOCOLAB_PORT']}/api/v1/health", timeout=5)
        assert health.status_code == 200  # on MOCOLAB_PORT, with its state in MOCOLAB_STATE
        assert (state / "mocolab.db").is_file() and mode(state) == 0o700
        assert mode(state / "redis.password") == 0o600
        port = redis_port_of(first)
        assert raw_ping(port).startswith(b"-NOAUTH")
        password = (state / "redis.password").read_text().strip()
        assert redis.Redis(port=port, password=password).ping()
        second = subprocess.run([MOCOLAB, "up", "--no-worker", "--state", str(state.parent / "other")],
                                capture_output=True, text=True, env=up_env, timeout=60)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1
        assert f"port {up_env['MOCOLAB_PORT']} on 127.0.0.1 is busy" in second.stderr
        assert first.poll() is None  # the first stack is untouched
        assert httpx.get(f"http://127.0.0.1:{up_env['MOCOLAB_PORT']}/api/v1/health", timeout=5).status_code == 200
