"""A run's status machine: the statuses, which of them are terminal or active, the allowed transitions and
who may make each, and `transition`, the one function that changes `Run.status`.

Every status change goes through here: a worker's or the engine's status event (the ingest), a user's cancel
or resume (also a study's cancel), and the watchdog's lost-run pass. A transition the table does not allow
raises `IllegalTransition`; nothing is applied then.

Standard library only, so that the CLI (`mocolab`) reads TERMINAL from here without the server's runtime
(tests/test_layering.py holds it to that).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from server.models import Run

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "lost"]
STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
# Ended: only a resume (a new attempt) moves the run again, or a worker's final word correcting the engine's.
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# A worker has the run, or will.
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
# "lost" is neither: no heartbeat and no lock, and the watchdog re-queues or fails it in the same pass
# (a worker that comes back may still report it running).

# Who asks for a change: a status event without worker_id ("engine"), one with it ("worker": its running,
# its shutdown hand-back, its final word), a user ("cancel", "resume"; a study's cancel is the user's), and
# the watchdog (a run gone silent), and the scheduler (a machine of a run placed on agents lost, or its processes
# gone without a final word).
Cause = Literal["engine", "worker", "cancel", "resume", "watchdog", "scheduler"]
_EVENT: frozenset[Cause] = frozenset({"engine", "worker"})


def _table() -> dict[tuple[str, str], frozenset[Cause]]:
    allowed: dict[tuple[str, str], frozenset[Cause]] = {
        ("queued", "running"): _EVENT,
        ("lost", "running"): _EVENT,  # the worker was only slow: it reports again
        ("running", "running"): _EVENT,  # a resumed step, a new total: same status
        ("running", "queued"): frozenset({"worker"}),  # the worker shut down and handed the task back
        ("running", "lost"): frozenset({"watchdog", "scheduler"}),
        ("queued", "lost"): frozenset({"scheduler"}),  # its machines' processes failed before it started
        ("lost", "queued"): frozenset({"watchdog", "scheduler", "resume"}),  # next attempt
        ("lost", "failed"): frozenset({"watchdog", "scheduler"}),  # out of attempts
        ("queued", "cancelled"): frozenset({"engine", "worker", "cancel"}),  # cancelled before it started
        ("lost", "cancelled"): frozenset({"engine", "worker", "cancel"}),
        ("running", "cancelled"): frozenset({"engine", "worker", "watchdog", "scheduler"}),  # a cancelled run lost
        ("failed", "queued"): frozenset({"resume"}),
        ("cancelled", "queued"): frozenset({"resume"}),
    }
    for end in ("succeeded", "failed"):
        for start in ("queued", "running", "lost"):
            allowed.setdefault((start, end), _EVENT)
    for start in TERMINAL:  # the worker's final word stands over what the engine said before it
        for end in TERMINAL:
            allowed[(start, end)] = allowed.get((start, end), frozenset()) | {"worker"}
    return allowed


ALLOWED: dict[tuple[str, str], frozenset[Cause]] = _table()


class IllegalTransition(ValueError):
    def __init__(self, run_id: str, start: str, end: str, cause: str) -> None:
        super().__init__(f"run {run_id}: {start} -> {end} is not allowed ({cause})")
        self.start, self.end, self.cause = start, end, cause


def allowed(start: str, end: str, cause: Cause) -> bool:
    return cause in ALLOWED.get((start, end), frozenset())


def transition(run: Run, to: RunStatus, cause: Cause, *, reason: str | None = None, error: str | None = None,
               at: datetime | None = None) -> bool:
    """Move `run` to `to` (not committed); -> whether its status changed. `reason` becomes the run's message,
    `error` its error (a failure). Entering a terminal status stamps finished_at, entering running started_at
    (once); a re-queue is `requeue`'s, which also starts the next attempt."""
    start = run.status
    if not allowed(start, to, cause):
        raise IllegalTransition(run.id, start, to, cause)
    at = at or datetime.now(UTC)
    run.status = to
    if reason is not None:
        run.message = reason[:4000]
    if to == "running":
        run.started_at = run.started_at or at
    elif to in TERMINAL:
        run.finished_at = at
        if to == "failed":
            run.error = (error or reason or "failed")[:4000]
    return run.status != start


def requeue(run: Run, cause: Cause, reason: str, at: datetime | None = None) -> None:
    """The run's next attempt, queued: what the last attempt left (worker, task, cancel, end) is cleared."""
    transition(run, "queued", cause, reason=reason, at=at)
    run.attempt += 1
    run.queued_at, run.dispatched_at, run.task_id = at or datetime.now(UTC), None, None
    run.finished_at, run.cancel_requested, run.cancel_requested_at, run.revoked_at = None, False, None, None
    run.worker_id = None
    run.placement = None  # where the last attempt ran; the scheduler places the next one


def lose(run: Run, cause: Cause, reason: str, max_attempts: int, at: datetime | None = None) -> str:
    """A running run gone silent (its worker, or a machine of it, lost): cancelled if a cancel was asked, else
    lost and its next attempt queued, or failed once it has had `max_attempts` (not committed).
    -> "cancelled", "requeued" or "failed"."""
    if run.cancel_requested:
        transition(run, "cancelled", cause, reason=f"cancelled ({reason})", at=at)
        return "cancelled"
    transition(run, "lost", cause, reason=reason, at=at)
    if run.attempt < max_attempts:
        requeue(run, cause, f"{reason}; re-queued as attempt {run.attempt + 1}")  # queued now, whatever `at` says
        return "requeued"
    transition(run, "failed", cause, error=f"{reason}; gave up after {run.attempt} attempts", at=at)
    return "failed"
