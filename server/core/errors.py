"""Every error the server raises on purpose: one base class carrying a status and a detail.

Services raise these; `server.core.error_handlers` renders them all as ``{"detail": ...}``. SpecInvalid's
detail has FastAPI's validation shape (a list of ``{loc, msg, type}``), so a client handles a bad spec
and a malformed body the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class AppError(Exception):
    status_code = 500
    detail: Any = "internal error"

    def __init__(self, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        if detail is not None:
            self.detail = detail
        self.headers = headers
        super().__init__(str(self.detail))


class BadRequest(AppError):
    status_code = 400
    detail = "bad request"


class Unauthorized(AppError):
    status_code = 401
    detail = "not authenticated: send 'Authorization: Bearer <token>' or log in"

    def __init__(self, detail: Any = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotPermitted(AppError):
    status_code = 403
    detail = "not enough permissions"


class NotFound(AppError):
    status_code = 404
    detail = "not found"


class RunNotFound(NotFound):
    detail = "run not found"


class Conflict(AppError):
    status_code = 409
    detail = "conflict"


class TooManyRequests(AppError):
    status_code = 429
    detail = "too many requests"

    def __init__(self, detail: Any = None, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class Unavailable(AppError):
    status_code = 503
    detail = "a backing service is unavailable; retry shortly"


class SpecInvalid(AppError):
    """422 naming the field at fault; `path` is the spec's dotted path ('optim.base_lr')."""

    status_code = 422

    def __init__(self, path: str, message: str, root: tuple[str, ...] = ("body", "spec")) -> None:
        loc = [*root, *(p for p in path.split(".") if p)] if path else list(root)
        super().__init__([{"loc": loc, "msg": message, "type": "value_error"}])
        self.path = path
        self.message = message


class ErrorPublic(BaseModel):
    detail: str


# Documented on every authenticated router, so clients (and schemathesis) know these answers.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorPublic, "description": "A malformed request (a Last-Event-ID that is no event's seq)."},
    401: {"model": ErrorPublic, "description": "No valid token or session cookie."},
    403: {"model": ErrorPublic, "description": "Not enough permissions, or a cross-site request with the cookie."},
    404: {"model": ErrorPublic, "description": "Not found, or not in your teams."},
    409: {"model": ErrorPublic, "description": "Not possible in the run's current state."},
    413: {"model": ErrorPublic, "description": "The request body is over the server's limit (1 MiB by default)."},
    429: {"model": ErrorPublic, "description": "Too many run submissions or open event streams; see Retry-After."},
    503: {"model": ErrorPublic, "description": "SQL or Redis is unreachable; retry."},
}
