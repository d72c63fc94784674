"""mocolab's server: FastAPI app, SQL models and migrations, the ingest loop, SSE, auth.

Public names load lazily, so that `server.embedded_redis` stays importable without FastAPI or Celery:

- `create_app(settings)` -> FastAPI app; `make_server(settings)` -> uvicorn.Server; `serve(settings)`
- `Settings` (environment: DATABASE_URL, REDIS_URL, MOCOLAB_STATE, MOCOLAB_STORAGE, MOCOLAB_DATASET_ROOTS,
  MOCOLAB_HOST, MOCOLAB_PORT, ...), `get_settings()`
- `run_ingest(ingestor)`: the ingest loop (coroutine); `make_ingestor(engine, redis, settings)` builds an
  `Ingestor` with every domain's projection (`python -m server.projections` runs the ingest on its own)
- `admin`: users, teams, projects and tokens for `mocolab admin`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server import admin
    from server.core.config import Settings, get_settings
    from server.events.ingest import Ingestor, run_ingest
    from server.main import create_app, make_server, serve
    from server.projections import make_ingestor

__all__ = ["Ingestor", "Settings", "admin", "create_app", "get_settings", "make_ingestor", "make_server", "run_ingest",
           "serve"]

_WHERE = {"create_app": "server.main", "make_server": "server.main", "serve": "server.main",
          "Settings": "server.core.config", "get_settings": "server.core.config",
          "run_ingest": "server.events.ingest", "Ingestor": "server.events.ingest",
          "make_ingestor": "server.projections"}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "admin":
        return importlib.import_module("server.admin")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'server' has no attribute {name!r}")
