"""The Celery tasks: a run on a one-GPU worker (runner.execute_run), and one machine's part of a run the
scheduler placed on agents (agent.execute_node)."""

from __future__ import annotations

from typing import Any

from celery.exceptions import Reject

from . import protocol
from .agent import execute_node
from .celery_app import app
from .runner import execute_run
from .settings import Settings


@app.task(name=protocol.TASK_RUN)
def run(run_id: str, kind: str, spec: dict[str, Any], attempt: int = 1) -> str:
    """Lock, validate, run the engine with the Redis sink, report the outcome as a status event."""
    state = execute_run(run_id, kind, spec, attempt, Settings.from_env())
    if state == "queued":  # interrupted at a checkpoint: give the message back so the run resumes
        raise Reject(f"run {run_id} interrupted: back to the queue", requeue=True)
    return state


@app.task(name=protocol.TASK_NODE)
def run_node(run_id: str, kind: str, spec: dict[str, Any], attempt: int, placement: dict[str, Any]) -> str:
    """This machine's part of a run the scheduler placed on agents: torchrun on the reserved devices."""
    return execute_node(run_id, kind, spec, attempt, placement, Settings.from_env())
