"""Keys from the global batch under torch.distributed: two CPU processes (gloo) give the loss and the
gradients of one process holding the whole batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mocov3_core.moco import symmetric_loss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, q: torch.Tensor, k: torch.Tensor, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = q.shape[1] // world
    q_local = q[:, rank * n:(rank + 1) * n].clone().requires_grad_(True)
    k_local = k[:, rank * n:(rank + 1) * n]
    loss = symmetric_loss(q_local[0], q_local[1], k_local[0], k_local[1], 0.2)
    loss.backward()
    # DDP averages gradients over ranks: emulate that on the query gradient
    grad = q_local.grad.clone() / world
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss.detach())
    grads = [torch.zeros_like(grad) for _ in range(world)]
    dist.all_gather(grads, grad)
    if rank == 0:
        out["loss"] = torch.stack(losses).mean()
        out["grad"] = torch.cat(grads, dim=1)
    dist.destroy_process_group()


def test_all_gathered_keys_match_the_single_process_global_batch() -> None:
    torch.manual_seed(0)
    q = torch.randn(2, 16, 8)  # [view, batch, dim]
    k = torch.randn(2, 16, 8)
    full_q = q.clone().requires_grad_(True)
    full = symmetric_loss(full_q[0], full_q[1], k[0], k[1], 0.2)
    full.backward()
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), q, k, out), nprocs=2, join=True)
    torch.testing.assert_close(out["loss"], full.detach())
    torch.testing.assert_close(out["grad"], full_q.grad)


@pytest.mark.fmnist
def test_torchrun_pretrains_with_two_cpu_processes(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_port", str(_free_port()), "-m", "mocov3_core", "pretrain",
         "--preset", "fmnist_tiny", "--out", str(tmp_path), "--no-progress", "--set", "train.max_steps=4",
         "--set", "train.device=cpu", "--set", "monitor.knn_every=0", "--set", "data.limit=512"],
        capture_output=True, text=True, timeout=300)
    # a rank's own error (an abort, a traceback) comes before torchrun's summary: show both
    ranks = [line for line in out.stderr.splitlines() if "Error" in line or "terminate" in line or "what()" in line]
    assert out.returncode == 0, "\n".join(ranks[:20]) + "\n...\n" + out.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "succeeded" and result["checkpoint"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    steps = [e["payload"]["step"] for e in events if e["type"] == "metrics"]
    assert steps == [0, 1, 2, 3]  # one process reports: no duplicates
