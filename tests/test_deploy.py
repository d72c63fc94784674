"""deploy/slurm/mocolab-agents.sbatch: it parses, asks Slurm for whole machines, and, run by bash as Slurm would,
starts `mocolab worker --gpus all` per machine with the team's Redis and storage and stops it with SIGTERM.

This machine has no Slurm: a stand-in `srun` runs the step's command as the one task of a one-machine
allocation (dropping srun's own options), and a stand-in `mocolab` records its arguments and environment and
exits when it gets SIGTERM. The batch script itself, its checks, its trap and its wait loop run for real.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "slurm" / "mocolab-agents.sbatch"
REDIS_URL = "redis://:secret@head.example:6379/0"

SRUN = """#!/bin/bash
while [[ $# -gt 0 && $1 == --* ]]; do shift; done
exec "$@"
"""
MOCOLAB = """#!/bin/bash
printf '%s\\n' "$@" > "$RECORD/argv"
env > "$RECORD/env"
trap 'echo term > "$RECORD/stopped"; exit 0' TERM
echo started > "$RECORD/started"
while :; do sleep 0.1; done
"""


def test_the_script_parses() -> None:
    out = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_it_asks_for_whole_machines_and_a_warning_before_the_time_limit() -> None:
    header = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", SCRIPT.read_text(), flags=re.M))
    assert header["ntasks-per-node"] == "1"  # one agent per machine: it owns every GPU there
    assert header["gres"] == "gpu:8"
    assert "exclusive" in header and "nodes" in header
    assert header["signal"] == "B:TERM@120"  # to the batch shell, whose trap passes it on to the agents


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("mocolab", MOCOLAB)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def batch_env(tmp_path: Path, tools: Path, **overrides: str) -> dict[str, str]:
    record = tmp_path / "record"
    record.mkdir(exist_ok=True)
    storage = tmp_path / "shared"
    storage.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MOCOLAB_STORAGE")}
    env.update(PATH=f"{tools}:{env['PATH']}", RECORD=str(record), SLURM_JOB_ID="4242", SLURM_CPUS_ON_NODE="2",
               REDIS_URL=REDIS_URL, MOCOLAB_STORAGE=str(storage))
    env.update(overrides)
    return {k: v for k, v in env.items() if v}


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60  # only so a broken script cannot hang the suite
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_it_starts_one_agent_with_every_gpu_and_stops_it_with_sigterm(tmp_path: Path, tools: Path) -> None:
    env = batch_env(tmp_path, tools)
    record = Path(env["RECORD"])
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for(record / "started", proc)
        host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
        assert (record / "argv").read_text().split("\n")[:5] == ["worker", "--gpus", "all", "--worker-id",
                                                                 f"{host}-4242"]
        agent_env = dict(line.split("=", 1) for line in (record / "env").read_text().splitlines() if "=" in line)
        assert agent_env["REDIS_URL"] == REDIS_URL
        assert agent_env["MOCOLAB_STORAGE"] == env["MOCOLAB_STORAGE"]
        assert not (record / "stopped").exists()
        proc.send_signal(signal.SIGTERM)  # what --signal=B:TERM@120 does before the time limit
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (record / "stopped").read_text() == "term\n"  # the agent got SIGTERM and exited on its own
    assert proc.returncode == 0, err
    assert "agents stopped (srun exit 0)" in err
    assert list(Path(env["MOCOLAB_STORAGE"]).iterdir()) == []  # the shared-storage marker is gone


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SLURM_JOB_ID", "", "submit this script with sbatch"),
    ("REDIS_URL", "", "REDIS_URL is not set"),
    ("MOCOLAB_STORAGE", "", "MOCOLAB_STORAGE is not set"),
    ("MOCOLAB_STORAGE", "relative/path", "must be an absolute path"),
    ("MOCOLAB_STORAGE", "/nonexistent/mocolab", "is not a writable folder"),
])
def test_a_missing_setting_stops_it_before_any_agent(tmp_path: Path, tools: Path, name: str, value: str,
                                                     message: str) -> None:
    env = batch_env(tmp_path, tools, **{name: value})
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr
    assert not (Path(env["RECORD"]) / "started").exists()
