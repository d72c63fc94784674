"""The browser tests' fixtures: one embedded stack (redis-server, SQLite, the server serving web/dist, one CPU
worker) and one headless Debian Chromium for the whole module, a signed-in browser context at 1366x768, and a
fresh page per test that fails the test on any uncaught JavaScript error."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

from mocolab.client import Client
from mocolab.stack import Stack
from server.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
WEB_DIST = ROOT / "web" / "dist"
# Where `shot` writes: a temporary folder, so that the tests never rewrite tracked files; the README's
# screenshots are refreshed on purpose by scripts/screenshots.sh, which points this at docs/screenshots.
SHOTS_ENV = "MOCOLAB_SCREENSHOTS"
VIEWPORT: ViewportSize = {"width": 1366, "height": 768}
# docs/operations.md: what Debian's Chromium needs to run headless as root in a container
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]



def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None. CI has all three (scripts/setup.sh installs them)."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (scripts/setup.sh installs Debian's chromium)"
    if not (WEB_DIST / "index.html").is_file():
        return "web/dist is not built (scripts/setup.sh builds it when node and npm are present)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is missing (pip install -e '.[dev]')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`mocolab up` on a free port, with its own state folder and a copy of web/dist (so a rebuild of the UI
    while the tests run cannot pull the pages from under them)."""
    tmp = tmp_path_factory.mktemp("e2e")
    dist = tmp / "web-dist"
    shutil.copytree(WEB_DIST, dist)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOCOLAB_CONFIG", str(tmp / "client.json"))  # Stack.start saves the CLI's config there
        s = Stack(tmp / "state", "127.0.0.1", free_port())
        for name in ("REDIS_URL", "DATABASE_URL", "MOCOLAB_STORAGE"):
            s.env.pop(name, None)
        s.env["MOCOLAB_WEB_DIST"] = str(dist)
        # the notification tests' webhook receiver listens on loopback, which the server refuses by default
        s.env["MOCOLAB_NOTIFY_ALLOW_NETS"] = "127.0.0.1/32"
        s.start()
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="module")
def api(stack: Stack) -> Client:
    return Client(stack.url, stack.token)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def signed_in(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    """A browser context holding the session cookie that the login URL sets."""
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport=VIEWPORT, base_url=stack.url)
    page = ctx.new_page()
    page.goto(f"/login?token={stack.token}")
    expect(page.get_by_test_id("whoami")).to_be_visible(timeout=30_000)
    page.close()
    yield ctx
    ctx.close()


def _watch(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(30_000)
    return errors


@pytest.fixture
def page(signed_in: BrowserContext) -> Iterator[Page]:
    pg = signed_in.new_page()
    errors = _watch(pg)
    yield pg
    pg.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


@pytest.fixture
def anon_page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A page in a fresh context: no session cookie."""
    ctx = browser.new_context(viewport=VIEWPORT, base_url=stack.url)
    pg = ctx.new_page()
    errors = _watch(pg)
    yield pg
    ctx.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$MOCOLAB_SCREENSHOTS (scripts/screenshots.sh: docs/screenshots), else a temporary folder."""
    chosen = os.environ.get(SHOTS_ENV, "").strip()
    return Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def shot(shots_dir: Path) -> Callable[[Page, str], None]:
    """shot(page, name): a full-page screenshot, <shots_dir>/<name>.png (the README's, via screenshots.sh)."""

    def take(page: Page, name: str) -> None:
        # A viewport as tall as the page for the shot, so that sticky parts (the top bar, the form's submit
        # bar) sit where they belong instead of where a 768 px viewport would pin them.
        height = int(page.evaluate("document.documentElement.scrollHeight"))
        page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height)})
        try:
            shots_dir.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots_dir / f"{name}.png"), full_page=True)
        finally:
            page.set_viewport_size(VIEWPORT)

    return take
