"""The interactive API docs at /docs, from files this server serves itself: FastAPI's default page loads
swagger-ui from a CDN (jsdelivr), which an offline machine cannot reach and which would run third-party
script next to the session cookie. swagger-ui's files come from the `swagger-ui-bundle-v2` package (import
name `swagger_ui_bundle`); without it, /docs says so and points at /openapi.json. ReDoc (CDN only) is off."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
NO_BUNDLE = ("<!doctype html><title>mocolab API</title><h1>API docs</h1><p>The interactive docs are off: "
             "swagger-ui's files are not installed (<code>pip install swagger-ui-bundle-v2</code>), and this server "
             "loads nothing from a CDN. The OpenAPI schema is at <a href=\"/openapi.json\">/openapi.json</a>.</p>")


def swagger_ui_path() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path as path
    except ImportError:
        return None
    found = Path(str(path))
    return found if (found / "swagger-ui-bundle.js").is_file() else None


def install(app: FastAPI) -> None:
    """/docs (and swagger-ui's OAuth2 redirect page); call with FastAPI(docs_url=None, redoc_url=None)."""
    bundle = swagger_ui_path()
    if bundle is not None:
        app.mount(ASSETS, StaticFiles(directory=bundle), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if bundle is None:
            return HTMLResponse(NO_BUNDLE)
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
