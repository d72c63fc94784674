"""The FastAPI app: `create_app(settings)` assembles routers, error handlers, the UI and the background
loops (ingest, watchdog, scheduler, notification delivery) that run while the app runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import redis
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

import mocov3_core
from server.auth import router as auth_router
from server.auth.guard import RequireToken
from server.auth.service import SESSION_COOKIE
from server.core import docs, error_handlers, logs
from server.core.config import Settings, get_settings
from server.core.db import make_engine, migrate, wait_for_db
from server.core.errors import ERROR_RESPONSES
from server.core.hardening import BodyLimit, SameOrigin, SecurityHeaders
from server.core.loops import LoopState
from server.datasets import router as datasets_router
from server.deps import get_caller
from server.events import router as events_router
from server.events.bus import EventBus
from server.events.ingest import Ingestor, run_ingest
from server.notify import router as notify_router
from server.notify.delivery import Deliverer, run_delivery
from server.projections import make_ingestor
from server.runs import router as runs_router
from server.runs.dispatch import Dispatcher
from server.runs.gangs import GangScheduler, run_scheduler
from server.runs.watchdog import Watchdog, run_watchdog
from server.studies import router as studies_router
from server.web import mount_ui
from server.workers import router as workers_router

log = logging.getLogger("mocolab.server")
API = "/api/v1"


class LoopHealth(BaseModel):
    running: bool
    failures: int = Field(description="Consecutive failed passes; 0 when the last pass succeeded.")
    last_error: str | None
    last_error_at: datetime | None


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: a background loop is failing or stopped.")
    version: str
    loops: dict[str, LoopHealth] = Field(default_factory=dict, description="The background loops (ingest, "
                                         "watchdog, scheduler, notify) when this server runs them.")


class ServerStatus(BaseModel):
    ingest: dict[str, Any] | None
    streams: dict[str, int]
    subscribers: int


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="mocolab", version=mocov3_core.__version__, lifespan=_lifespan, docs_url=None, redoc_url=None,
                  description="MoCo v3 pretraining and evaluation runs, live metrics and stability alerts.")
    app.state.settings = settings
    app.state.engine = make_engine(settings.database)
    app.state.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    app.state.bus = EventBus(maxsize=settings.sse_queue)
    app.state.dispatcher = Dispatcher(settings.redis_url)
    app.state.ingestor = None
    app.state.stream_slots = events_router.StreamSlots(settings.sse_per_token)
    app.state.loops = {}
    app.state.notifier = Deliverer(app.state.engine, settings)  # also sends a channel's test message
    error_handlers.install(app)
    logs.install()

    public = APIRouter(prefix=API, tags=["health"])

    @public.get("/health", response_model=Health)
    def health(request: Request) -> Health:
        loops: dict[str, LoopState] = request.app.state.loops
        status: Literal["ok", "degraded"] = "ok" if all(s.healthy for s in loops.values()) else "degraded"
        return Health(status=status, version=mocov3_core.__version__, loops={
            name: LoopHealth(running=s.running, failures=s.failures, last_error=s.last_error,
                             last_error_at=s.last_error_at) for name, s in loops.items()})

    api = APIRouter(prefix=API, dependencies=[Depends(get_caller)], responses=ERROR_RESPONSES)
    for module in (runs_router, events_router, workers_router, auth_router, studies_router, datasets_router,
                   notify_router):
        api.include_router(module.router)

    @api.get("/status", response_model=ServerStatus, tags=["health"])
    def server_status(request: Request) -> ServerStatus:
        ingestor: Ingestor | None = request.app.state.ingestor
        return ServerStatus(ingest=ingestor.stats.__dict__ if ingestor else None,
                            streams=events_router.open_streams(), subscribers=request.app.state.bus.subscriber_count)

    app.include_router(public)
    app.include_router(notify_router.public_router, prefix=API)  # a message's chart: signed, no login
    app.include_router(api)
    app.include_router(auth_router.login_router)
    docs.install(app)  # swagger-ui from local files, before the UI's catch-all
    mount_ui(app, settings.web_dist)
    if not settings.loopback:
        app.add_middleware(RequireToken, open_paths=(f"{API}/health", "/login"))
    # added last = outermost: security headers on every answer, also the 413s, 403s and 401s below them
    app.add_middleware(SameOrigin, cookie_name=SESSION_COOKIE)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = app.state.engine
    await asyncio.to_thread(wait_for_db, engine)
    await asyncio.to_thread(migrate, engine)
    bus: EventBus = app.state.bus
    bus.bind(asyncio.get_running_loop())
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    ingest_redis = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    if settings.background:
        ingestor = make_ingestor(engine, ingest_redis, settings)
        app.state.ingestor = ingestor
        watchdog = Watchdog(engine, app.state.redis, app.state.dispatcher, settings, bus)
        scheduler = GangScheduler(engine, app.state.redis, app.state.dispatcher, settings, bus)
        loops = app.state.loops = {"ingest": LoopState("ingest"), "watchdog": LoopState("watchdog"),
                                   "scheduler": LoopState("scheduler"), "notify": LoopState("notify")}
        tasks = [asyncio.create_task(run_ingest(ingestor, bus=bus, stop=stop, state=loops["ingest"]),
                                     name="ingest"),
                 asyncio.create_task(run_watchdog(watchdog, stop, settings.watchdog_every_s, loops["watchdog"]),
                                     name="watchdog"),
                 asyncio.create_task(run_scheduler(scheduler, stop, settings.schedule_every_s, loops["scheduler"]),
                                     name="scheduler"),
                 asyncio.create_task(run_delivery(app.state.notifier, stop, settings.notify_every_s, loops["notify"]),
                                     name="notify")]
    log.info("mocolab server: database %s, redis %s, %s", engine.url.render_as_string(hide_password=True),
             settings.redis_url, "loopback (login link allowed)" if settings.loopback else "tokens required")
    try:
        yield
    finally:
        stop.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
        app.state.dispatcher.close()
        ingest_redis.close()
        app.state.redis.close()
        engine.dispose()


def make_server(settings: Settings | None = None, **uvicorn_options: Any) -> uvicorn.Server:
    """A uvicorn server for the app, bound to settings.host:port; `server.run()` blocks, Ctrl-C stops it."""
    settings = settings or get_settings()
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_level=uvicorn_options.pop("log_level", "info"), **uvicorn_options)
    return uvicorn.Server(config)


def serve(settings: Settings | None = None) -> None:
    make_server(settings).run()
