"""A small REST client for the mocolab server (the CLI's `submit`, `runs`, `show`, `cancel`, `logs`).

Where it connects and with which token: MOCOLAB_URL and MOCOLAB_TOKEN in the environment, else the config
file `mocolab up` writes for the local stack (~/.config/mocolab/config.json, or $MOCOLAB_CONFIG).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


class ClientError(Exception):
    """A one-line, human-readable failure (bad input, no server, not found)."""


def config_path() -> Path:
    return Path(os.environ.get("MOCOLAB_CONFIG") or Path.home() / ".config" / "mocolab" / "config.json")


def save_config(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "token": token}, indent=1))
    path.chmod(0o600)
    return path


def load_config() -> tuple[str, str | None]:
    url, token = os.environ.get("MOCOLAB_URL"), os.environ.get("MOCOLAB_TOKEN")
    path = config_path()
    if (url is None or token is None) and path.exists():
        saved = json.loads(path.read_text())
        url = url or saved.get("url")
        token = token or saved.get("token")
    return (url or "http://127.0.0.1:8000").rstrip("/"), token


class Client:
    EVENTS_PAGE = 2000  # events per page when following runs (the server allows up to 10,000)

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        saved_url, saved_token = load_config()
        self.url = (url or saved_url).rstrip("/")
        headers = {"Authorization": f"Bearer {token or saved_token}"} if (token or saved_token) else {}
        self.http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, text: bool = False, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the mocolab server at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            raise ClientError(_describe(resp))
        if text:
            return resp.text
        return resp.json() if resp.content else None

    def get(self, path: str, text: bool = False, **params: Any) -> Any:
        """Any GET under /api/v1 (JSON, or the body's text)."""
        return self._call("GET", path, text=text, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any], **params: Any) -> Any:
        return self._call("POST", path, json=body, params={k: v for k, v in params.items() if v is not None})

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/runs", json=body))

    def runs(self, **filters: Any) -> dict[str, Any]:
        return dict(self._call("GET", "/runs", params={k: v for k, v in filters.items() if v is not None}))

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/runs/{run_id}"))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/runs/{run_id}/cancel"))

    def evaluate(self, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"/runs/{run_id}/evaluate", json=body))

    def evals(self, run_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/runs/{run_id}/evals"))

    def delete(self, path: str, **params: Any) -> None:
        self._call("DELETE", path, params={k: v for k, v in params.items() if v is not None})

    def events(self, run_id: str, after_seq: int = -1) -> list[dict[str, Any]]:
        data = self._call("GET", f"/runs/{run_id}/events", params={"after_seq": after_seq})
        return list(data["data"] if isinstance(data, dict) else data)

    def events_page(self, run_id: str, after_seq: int = -1, types: str | None = None) -> list[dict[str, Any]]:
        """One page (EVENTS_PAGE) of a run's events after `after_seq`, of `types` (comma-separated) only."""
        params: dict[str, Any] = {"after_seq": after_seq, "limit": self.EVENTS_PAGE}
        if types:
            params["types"] = types
        return list(self._call("GET", f"/runs/{run_id}/events", params=params)["data"])

    def stream(self, run_id: str, last_event_id: int | None = None) -> Iterator[dict[str, Any]]:
        """The run's live events (SSE), from after last_event_id."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        try:
            with self.http.stream("GET", f"/runs/{run_id}/stream", headers=headers, timeout=None) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ClientError(_describe(resp))
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        yield json.loads(line[5:].strip())
        except httpx.HTTPError as exc:
            raise ClientError(f"stream from {self.url} broke: {exc}") from None


def _describe(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = resp.text[:200]
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI validation errors
        first = detail[0]
        path = ".".join(str(p) for p in first.get("loc", []) if p not in ("body",))
        detail = f"{path}: {first.get('msg')}" if path else first.get("msg")
    return f"HTTP {resp.status_code}: {detail}"
