"""Sending runs to the workers: a Celery client that only publishes, by task name (no import of worker/).

The task id is "<run_id>.<attempt>", so a re-send of the same attempt is recognisable and revoke needs no
lookup. Publishing retries briefly and then gives up: the run stays queued and the watchdog re-sends it.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery

from worker import gang, protocol

log = logging.getLogger(__name__)


def task_id(run_id: str, attempt: int) -> str:
    return f"{run_id}.{attempt}"


class Dispatcher:
    def __init__(self, redis_url: str) -> None:
        self.app = Celery("mocolab-server", broker=redis_url, set_as_current=False)
        self.app.conf.update(
            task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=False,
            broker_connection_timeout=3, broker_connection_max_retries=1,
            broker_transport_options={"visibility_timeout": protocol.VISIBILITY_TIMEOUT_S,
                                      "socket_connect_timeout": 3, "socket_timeout": 5})
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=3, decode_responses=True)

    def send(self, run_id: str, kind: str, spec: dict[str, Any], attempt: int, queue: str) -> str:
        """Publish the run's task; raises when the broker cannot be reached."""
        tid = task_id(run_id, attempt)
        self.app.send_task(protocol.TASK_RUN, args=[run_id, kind, spec, attempt], queue=queue, task_id=tid,
                           retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                                     "interval_max": 1.0})
        return tid

    def send_node(self, run_id: str, kind: str, spec: dict[str, Any], attempt: int, placement: dict[str, Any],
                  queue: str, task: str) -> None:
        """Publish one machine's part of a run placed on agents, to that agent's own queue."""
        self.app.send_task(protocol.TASK_NODE, args=[run_id, kind, spec, attempt, placement], queue=queue, task_id=task,
                           retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                                     "interval_max": 1.0})

    def agents_serve(self, queue: str) -> bool:
        """Does a live agent serve `queue`? Then the scheduler places the queue's runs (an unreachable Redis: no)."""
        try:
            return any(a.queue == queue for a in gang.live_agents(self.redis, with_slots=False))
        except redis.RedisError:
            return False

    def revoke(self, tid: str, signal: str = "SIGTERM") -> None:
        """The backstop of a cooperative cancel: terminate the task's process (SIGKILL: a stalled run's, which
        would not honour a SIGTERM while it hangs)."""
        self.app.control.revoke(tid, terminate=True, signal=signal)

    def close(self) -> None:
        self.app.close()
        self.redis.close()
