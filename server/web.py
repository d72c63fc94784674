"""The built web UI (web/dist) at `/`, with the single-page-app fallback: an unknown path that is not an API
path gets index.html, and the browser's router takes it from there."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

NOT_BUILT = """<!doctype html><title>mocolab</title>
<p>The web UI is not built (<code>cd web && npm ci && npm run build</code>).
The API is at <a href="/docs">/docs</a>.</p>"""


class SPAStaticFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or path.startswith("api/") or "." in Path(path).name:
                raise
            return await super().get_response("index.html", scope)
        if response.status_code == 404 and not path.startswith("api/"):
            return await super().get_response("index.html", scope)
        return response


def mount_ui(app: FastAPI, dist: Path) -> None:
    if (dist / "index.html").is_file():
        app.mount("/", SPAStaticFiles(directory=dist, html=True), name="ui")
        return

    @app.get("/", include_in_schema=False)
    def ui_not_built() -> HTMLResponse:
        return HTMLResponse(NOT_BUILT)
