"""The CLI: help for every command, one-line errors with exit status 2, a real tiny run end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mocov3_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.parametrize("command", ["pretrain", "knn", "linear", "finetune"])
def test_help_explains_options(command: str) -> None:
    out = cli(command, "--help")
    assert out.returncode == 0 and "--set" in out.stdout and "KEY=VALUE" in out.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["pretrain", "--preset", "fmnist_tiny", "--set", "optim.bogus=1"], "optim.bogus"),
    (["pretrain", "--preset", "fmnist_tiny", "--set", "optim.base_lr=-1"], "optim.base_lr"),
    (["pretrain", "--preset", "fmnist_tiny", "--set", "noequals"], "key=value"),
    (["knn", "--checkpoint", "/nonexistent/run.pt"], "not found"),
    (["linear", "--set", "epochs=zero"], "epochs"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    out = cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_schema_and_presets_print() -> None:
    schema = json.loads(cli("schema", "linear").stdout)
    assert schema["properties"]["base_lr"]["default"] is None  # by backbone: 3 for ViT, 0.1 for ResNet-50
    assert "3 for ViT, 0.1 for ResNet-50" in schema["properties"]["base_lr"]["description"]
    assert "fmnist_small" in cli("presets").stdout


@pytest.mark.fmnist
def test_pretrain_then_knn_from_the_command_line(tmp_path: Path) -> None:
    out = cli("pretrain", "--preset", "fmnist_tiny", "--out", str(tmp_path / "run"), "--no-progress",
              "--set", "train.max_steps=4", "--set", "data.limit=256", "--set", "monitor.knn_every=0")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["step"] == 4
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert {e["type"] for e in events} >= {"config", "status", "metrics", "checkpoint"}
    out = cli("knn", "--checkpoint", str(tmp_path / "run"), "--set", "k=10", "--set", "data.limit=500",
              "--set", "data.crop_size=28", "--out", str(tmp_path / "knn"), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "knn" / "result.json").read_text())["top1"] > 10
