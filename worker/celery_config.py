"""Celery's delivery settings for hour-long GPU runs (`docs/operations.md`, "Celery").

The server's producer app and every worker must use the same broker transport options: kombu restores an
unacknowledged message after `visibility_timeout`, and a timeout shorter than a run makes it run twice.
"""

from __future__ import annotations

from typing import Any

from . import protocol

# Ack only when a run has ended, and give the message back if its process dies (at-least-once delivery;
# the run lock and resume-from-checkpoint make a second delivery safe).
task_acks_late = True
task_reject_on_worker_lost = True
# One run at a time per process: never hold a second run's message while the first trains for hours.
worker_prefetch_multiplier = 1
# A fresh process per run: no CUDA context, allocator cache or leaked memory carried from one run to the next.
worker_max_tasks_per_child = 1
# spawn, not fork: a forked child of a parent that has touched CUDA cannot use CUDA.
worker_pool_start_method = "spawn"
# A message whose ack cannot reach the broker any more is redelivered; stop the task instead of running it twice.
# The run stops at a checkpoint and ends 'queued'; its redelivery resumes it.
worker_cancel_long_running_tasks_on_connection_loss = True
broker_transport_options: dict[str, Any] = {"visibility_timeout": protocol.VISIBILITY_TIMEOUT_S}
broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # a worker waits for its broker for as long as it takes
# JSON only: task arguments are ids and specs, never pickled objects.
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"
# No result backend: a run's state travels as status events on the events stream.
result_backend = None
task_ignore_result = True
task_store_errors_even_if_ignored = False
task_default_queue = protocol.DEFAULT_QUEUE
task_create_missing_queues = True
worker_send_task_events = False
task_send_sent_event = False
