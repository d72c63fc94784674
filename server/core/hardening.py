"""HTTP hardening as plain ASGI middlewares (no BaseHTTPMiddleware: SSE responses must stream untouched):

- SecurityHeaders: a Content-Security-Policy for the built UI (its own scripts and styles only), nosniff,
  no referrer to other sites, and no framing, on every response. (Not `no-referrer`: a browser then sends
  `Origin: null` with a same-origin form POST, and SameOrigin would refuse the UI's own logout form.)
- SameOrigin: a browser's cookie-authenticated POST/PUT/PATCH/DELETE must come from this server's own pages
  (Origin, else Referer, names the Host it was sent to): a cross-site form or fetch cannot use the cookie.
  Token-authenticated clients (the CLI) send no cookie and need no check.
- BodyLimit: request bodies above a cap get 413, counted while they stream in (Content-Length first, then
  each chunk), so a huge or endless body is never read whole.
"""

from __future__ import annotations

import json
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
          "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")
# the interactive docs page is FastAPI's HTML with one inline <script> that starts swagger-ui
DOCS_CSP = UI_CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope.get("path") in DOCS_PATHS else UI_CSP
        extra = [(b"content-security-policy", csp.encode()), (b"x-content-type-options", b"nosniff"),
                 (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in extra if h[0] not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


class SameOrigin:
    def __init__(self, app: ASGIApp, cookie_name: str) -> None:
        self.app = app
        self.cookie_name = cookie_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            refused = self.refusal(_headers(scope))
            if refused:
                await _send_json(send, 403, refused)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: dict[str, str]) -> str | None:
        """Why a request is refused, or None. Only a request that would be authenticated by the cookie is checked
        (a bearer token wins over the cookie: server.deps.request_token)."""
        if headers.get("authorization", "").lower().startswith("bearer ") or not self._has_cookie(headers):
            return None
        source = headers.get("origin") or headers.get("referer")
        if not source or source == "null":
            return "cross-site request refused: a request authenticated by the session cookie needs an Origin " \
                   "or Referer header from this server's pages"
        host = urlsplit(source).netloc.lower()
        # behind a proxy that rewrites Host, X-Forwarded-Host names the public one; a cross-site page cannot
        # set that header (it is no CORS-safelisted header, and this server answers no preflight)
        ours = {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").split(",")[0].strip().lower()}
        if host not in ours - {""}:
            return f"cross-site request refused: origin {host or source!r} is not this server " \
                   f"({headers.get('host', '')!r})"
        return None

    def _has_cookie(self, headers: dict[str, str]) -> bool:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:
            return False
        return self.cookie_name in cookie


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: at most {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _headers(scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, BodyTooLarge(self.max_bytes).detail)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI re-raises an HTTPException met while reading the body
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:  # read outside a route (a middleware): answer here if nothing was sent yet
            if started:
                raise
            await _send_json(send, 413, exc.detail)
