"""The one place errors become responses: AppError subclasses, and outages of SQL or Redis as 503."""

from __future__ import annotations

import logging
import math
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError

from server.core.errors import AppError, Unavailable

log = logging.getLogger(__name__)


async def app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def backend_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: backing service error: %s", request.method, request.url.path, exc)
    return await app_error(request, Unavailable())


async def unstorable(request: Request, exc: Exception) -> JSONResponse:
    """Input the database refuses (a NUL character in PostgreSQL text, a number out of range): the client's."""
    log.info("%s %s: the database refused a value: %s", request.method, request.url.path, exc)
    detail = [{"loc": ["body"], "msg": "a value the database cannot store (a NUL character, a number out of range)",
               "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=422)


def _finite(value: Any) -> Any:
    """NaN and Infinity as strings: a 422 echoes the bad input, and JSON has no such numbers (FastAPI's own
    handler then failed while encoding its answer: a 500 for `{"expires_in": NaN}`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(OperationalError, backend_down)
    app.add_exception_handler(DataError, unstorable)
    app.add_exception_handler(redis.exceptions.ConnectionError, backend_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, backend_down)
