"""The contract between the workers and the server over Redis: key names and message shapes.

Pure constants and small helpers, no Celery and no torch, so the server imports it too.

Events. Workers append the engine's events to ONE Redis Stream, ``EVENTS_STREAM``, in batches: each
stream entry has one field ``b`` holding a JSON list of events ``{run_id, seq, time, type, payload}``
(the schema of ``mocov3_core.events.Event``). The server's ingest loop reads it with the consumer group
``INGEST_GROUP``, writes the events to SQL idempotently on (run_id, seq), then XACKs. The stream is
trimmed approximately to ``EVENTS_MAXLEN`` entries.

Runs. The server sends one Celery task per run, named ``TASK_RUN``, with JSON arguments
``(run_id: str, kind: str, spec: dict, attempt: int)`` to the queue the run names (default
``DEFAULT_QUEUE``). The run's directory is ``<storage root>/runs/<run_id>/`` (checkpoints/ inside);
the worker resumes from its latest checkpoint when the run starts again.

Run outcome. The engine emits its own ``status`` events (running, succeeded, stopped, failed); the worker
adds its own, in the same seq numbering, with ``worker_id`` and ``attempt`` in the payload: ``running``
(``final: false``) when it takes the run, and one ``final: true`` event at the end whose ``state`` is
succeeded, failed, cancelled, or queued (stopped at a checkpoint because the worker is shutting down or
Celery cancelled the task on a broker connection loss; the message goes back to the queue and the run
resumes on its next delivery, same attempt). A redelivery of an attempt that already ended is skipped.

Per-run keys:
- ``lock_key(run_id)``: SET NX PX by the worker running it (value: worker id), refreshed with the
  heartbeat; a redelivered task finding it held by a live worker exits without running.
- ``cancel_key(run_id)``: set by the server to ask for a cooperative cancel, checked every step.
- ``deliveries_key(run_id, attempt)``: how many deliveries of this attempt started the engine and never came
  back (their process died: OOM killer, segfault, SIGKILL). INCR before the engine starts, DECR when it
  returns; the delivery that finds ``MAX_DELIVERIES`` there fails the run instead of dying once more.
- ``restart_key(run_id, attempt)``: set by the server's stall watch just before it terminates that attempt's
  task (revoke with SIGKILL) to restart the run as its next attempt: the worker's revoke hook then leaves the
  run alone (no cancel flag, no revoked marker), since the run goes on.
- ``seq_key(run_id)``: the highest seq of the run's events delivered to ``EVENTS_STREAM`` (set by the worker's
  sink in the same Lua call as the XADD), so a restarted run continues numbering and a replayed spool
  never appends an event twice.

Workers:
- ``worker_key(worker_id)``: a hash with the worker's latest heartbeat JSON (field ``hb``), with a TTL
  of ``HEARTBEAT_TTL_S``; it expires when the worker stops heart-beating.
- heartbeats are also events on ``EVENTS_STREAM`` with type ``heartbeat`` and run_id
  ``worker_run_id(worker_id)``, so the server keeps worker history in SQL like any event.
"""

from __future__ import annotations

PREFIX = "mocolab"
EVENTS_STREAM = f"{PREFIX}:events"
INGEST_GROUP = "ingest"
EVENTS_MAXLEN = 1_000_000
TASK_RUN = "mocolab.run.execute"
# An agent's part of a run the scheduler placed (worker/gang.py): args (run_id, kind, spec, attempt, placement),
# sent to the agent's own queue; placement = {gang, members, hosts, devices: {agent: [int]}, gpus_per_node,
# form_timeout_s}.
TASK_NODE = "mocolab.run.node"
# Run ids name folders on the workers' storage: a worker refuses any other (a uuid4 hex is fine).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
DEFAULT_QUEUE = "gpu"
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_TTL_S = 30.0
LOCK_TTL_S = 60.0
# A run's Celery message must never be redelivered while it still runs: longer than any run.
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600


# Deliveries of one attempt whose process died before the worker gives up on it (a redelivery would kill the
# next process the same way, for ever: Celery gives the message back each time, task_reject_on_worker_lost).
MAX_DELIVERIES = 3
DELIVERIES_TTL_S = 30 * 24 * 3600


def deliveries_key(run_id: str, attempt: int) -> str:
    return f"{PREFIX}:deliveries:{run_id}:{attempt}"


def lock_key(run_id: str) -> str:
    return f"{PREFIX}:lock:{run_id}"


def cancel_key(run_id: str) -> str:
    return f"{PREFIX}:cancel:{run_id}"


def restart_key(run_id: str, attempt: int) -> str:
    return f"{PREFIX}:restart:{run_id}:{attempt}"


RESTART_TTL_S = 24 * 3600


def seq_key(run_id: str) -> str:
    return f"{PREFIX}:seq:{run_id}"


def worker_key(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


def worker_run_id(worker_id: str) -> str:
    return f"worker:{worker_id}"
