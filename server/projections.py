"""The ingest assembled with the domains that project the events stream into their tables, in the order
they run in each transaction: the runs' records (metrics, alerts, checkpoints, results), the workers' state
(which beats are current), the runs' state (it reads the current beats to keep runs alive), then the datasets'
(a scan's result, or its run's failure, once the run's status is this batch's), then the notifications' (alerts
and evaluation results into the outbox of the runs' teams).

The ingest itself (`server.events.ingest`) imports no domain; this module is where they meet.
Standalone ingest: `python -m server.projections`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis
from sqlalchemy import Engine

from server.core.config import Settings
from server.core.db import make_engine, migrate, wait_for_db
from server.datasets.projection import DatasetState
from server.events.ingest import Ingestor, IngestStats, run_ingest
from server.events.projection import Projection
from server.notify.projection import NotifyProjection
from server.runs.projection import RunRecords, RunState
from server.workers.projection import WorkerState


def projections(progress_every_s: float = 1.0, heartbeat_retention_s: float = 14 * 86400,
                prune_every_s: float = 600.0) -> list[Projection]:
    return [RunRecords(), WorkerState(heartbeat_retention_s, prune_every_s), RunState(progress_every_s),
            DatasetState(), NotifyProjection()]


def make_ingestor(engine: Engine, redis_client: redis.Redis, settings: Settings | None = None, *,
                  progress_every_s: float = 1.0, heartbeat_retention_s: float | None = None,
                  prune_every_s: float = 600.0, **options: Any) -> Ingestor:
    """An Ingestor with every domain's projection; `settings` gives its consumer, batch and timings, and
    `options` (Ingestor's keywords) override them."""
    if settings is not None:
        options = {"consumer": settings.ingest_consumer, "batch": settings.ingest_batch,
                   "block_ms": settings.ingest_block_ms, "claim_idle_ms": settings.ingest_claim_idle_ms, **options}
        if heartbeat_retention_s is None:
            heartbeat_retention_s = settings.heartbeat_retention_days * 86400
    retention = heartbeat_retention_s if heartbeat_retention_s is not None else 14 * 86400
    return Ingestor(engine, redis_client, projections(progress_every_s, retention, prune_every_s), **options)


async def run_standalone(settings: Settings) -> IngestStats:
    """The ingest loop on its own, without the API (another process or machine than the server)."""
    engine = make_engine(settings.database)
    await asyncio.to_thread(wait_for_db, engine)
    await asyncio.to_thread(migrate, engine)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        return await run_ingest(make_ingestor(engine, client, settings))
    finally:
        client.close()
        engine.dispose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_standalone(Settings()))


if __name__ == "__main__":
    main()
