"""Typed dependencies for routes: settings, database session, Redis, the event bus, the dispatcher and the
caller. Everything lives on ``app.state`` (set up by `server.main.create_app`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session

from server.auth import service as auth
from server.core.config import Settings
from server.core.db import writer
from server.events.bus import EventBus
from server.runs.dispatch import Dispatcher

_bearer = HTTPBearer(auto_error=False, description="An API token: `mocolab admin create-token`.")
_cookie = APIKeyCookie(name=auth.SESSION_COOKIE, auto_error=False, description="Set by GET /login?token=...")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; requests that change things take SQLite's write lock up front."""
    engine = get_engine(request)
    bind = engine if request.method in ("GET", "HEAD", "OPTIONS") else writer(engine)
    with Session(bind, expire_on_commit=False) as session:
        yield session


def get_redis(request: Request) -> redis.Redis:
    client: redis.Redis = request.app.state.redis
    return client


def get_bus(request: Request) -> EventBus:
    bus: EventBus = request.app.state.bus
    return bus


def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
BusDep = Annotated[EventBus, Depends(get_bus)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def request_token(bearer: HTTPAuthorizationCredentials | None, cookie: str | None) -> str | None:
    if bearer is not None and bearer.scheme.lower() == "bearer":
        return bearer.credentials
    return cookie


def get_caller(request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
               cookie: Annotated[str | None, Depends(_cookie)]) -> auth.Caller:
    """The caller, from short sessions of its own: closed before the route's session starts, so that
    recording the token's use never waits on the route's own write lock (SQLite)."""
    engine = get_engine(request)
    with Session(engine, expire_on_commit=False) as session:
        caller = auth.resolve(session, request_token(bearer, cookie))
        touch = caller.token_id is not None and auth.needs_touch(session, caller.token_id)
    if touch and caller.token_id is not None:
        with Session(writer(engine)) as write:
            auth.touch(write, caller.token_id)
    return caller


CallerDep = Annotated[auth.Caller, Depends(get_caller)]
