"""Off loopback, nothing answers without a token: this guards what the API dependencies do not cover
(the UI's files, /docs, /openapi.json). API routes check the caller themselves."""

from __future__ import annotations

import asyncio
import json
from http.cookies import SimpleCookie

from sqlmodel import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from server.auth import service
from server.core.errors import Unauthorized


class RequireToken:
    def __init__(self, app: ASGIApp, open_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/api/") or path in self.open_paths:
            await self.app(scope, receive, send)
            return
        token: str | None = _token(scope)
        engine = scope["app"].state.engine

        def check() -> bool:
            with Session(engine) as session:
                try:
                    service.resolve(session, token)
                    return True
                except Unauthorized:
                    return False

        allowed = bool(token) and await asyncio.to_thread(check)
        if allowed:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": Unauthorized.detail}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _token(scope: Scope) -> str | None:
    headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope.get("headers", [])}
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:
        return None
    morsel = cookie.get(service.SESSION_COOKIE)
    return morsel.value if morsel else None
