"""Issue 13 in a real headless Chromium against the real embedded stack: the Notifications page (a webhook
channel pointing at a real HTTP receiver on loopback, run by the test; "Send a test"; the delivery in the log
with its attempt; the channel's URL, a secret, never shown again), the fork flow (fork a finished fmnist_tiny
run, which rolled back once, from its checkpoint at step 32 with a lower lr; the fork's page says where it came
from; the parent's Lineage tab lists the fork and the rollback branch; the compare page draws the fork and the
abandoned branch (dashed) on the parent's step axis with a marker at each branch point), and `?step=N` (the link
a notification carries) marking that step on every chart. The pages are screenshotted (scripts/screenshots.sh
puts notifications.png and fork-compare.png in docs/screenshots).

The stack lets webhooks reach 127.0.0.1 (MOCOLAB_NOTIFY_ALLOW_NETS in conftest.py): the server refuses loopback
targets by default. Every wait is Playwright's auto-waiting `expect` with a generous timeout.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from mocolab.client import Client
from mocolab.stack import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Page

TERMINAL = {"succeeded", "failed", "cancelled", "lost"}
SECRET = "e2e-s3cret-token-5f1c"  # in the receiver's URL: it must never reach the page again
Shot = Callable[["Page", str], None]


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


class Receiver:
    """A webhook receiver on loopback: records each POST (path, headers, JSON body) and answers 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token={SECRET}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def wait_for_run(api: Client, run_id: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.run(run_id)
        if run["status"] in TERMINAL:
            return run
        time.sleep(1.0)
    raise AssertionError(f"run {run_id} did not end within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------- notifications
def test_a_webhook_channel_sends_a_test_and_logs_it_and_never_shows_its_secret(
        page: Page, stack: Stack, receiver: Receiver, shot: Shot) -> None:
    expect = _expect()
    page.goto("/")
    page.get_by_test_id("nav-notifications").click()
    expect(page).to_have_url(re.compile(r"/notifications$"))
    page.get_by_test_id("add-channel-button").click()
    form = page.get_by_test_id("channel-form")
    expect(form).to_be_visible()
    # the browser's own check first: a webhook needs its URL
    page.get_by_test_id("channel-field-name").fill("e2e hooks")
    page.get_by_test_id("channel-submit").click()
    expect(page.get_by_test_id("field-error-url")).to_have_text("required")
    url = page.get_by_test_id("channel-field-url")
    expect(url).to_have_attribute("type", "password")
    url.fill(receiver.url)
    page.get_by_test_id("channel-rule-all-kinds").uncheck()
    page.get_by_test_id("channel-rule-kind-update_spike").uncheck()
    page.get_by_test_id("channel-field-cooldown").fill("600")
    page.get_by_test_id("channel-submit").click()
    expect(form).to_have_count(0)

    row = page.get_by_test_id("channel-row").filter(has_text="e2e hooks")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("channel-target")).to_contain_text("127.0.0.1")
    expect(row.get_by_test_id("channel-rules-summary")).to_contain_text("8 kinds")
    expect(row.get_by_test_id("channel-rules-summary")).to_contain_text("cooldown 10 min")
    expect(row.get_by_test_id("channel-last-status")).to_have_attribute("data-status", "")

    row.get_by_test_id("channel-test").click()
    result = page.get_by_test_id("channel-test-result")
    expect(result).to_have_attribute("data-ok", "1", timeout=60_000)
    expect(result).to_contain_text("HTTP 200")
    assert len(receiver.requests) == 1, receiver.requests
    got = receiver.requests[0]
    assert got["path"] == f"/hook?token={SECRET}"
    assert isinstance(got["body"], dict), got

    log = page.get_by_test_id("delivery-log")
    delivery = log.get_by_test_id("delivery-row").first
    expect(delivery).to_have_attribute("data-status", "sent")
    expect(delivery).to_have_attribute("data-kind", "test")
    delivery.get_by_test_id("delivery-attempts").locator("summary").click()
    expect(delivery.get_by_test_id("delivery-attempt")).to_have_attribute("data-ok", "1")
    expect(delivery.get_by_test_id("delivery-attempt")).to_contain_text("HTTP 200")
    expect(row.get_by_test_id("channel-last-status")).to_have_attribute("data-status", "sent")
    shot(page, "notifications")

    # the secret is write-only: not on the page, not in the edit form, not in the API's answer
    row.get_by_test_id("channel-edit").click()
    expect(page.get_by_test_id("channel-secret-state")).to_have_text("set")
    expect(page.get_by_test_id("channel-field-url")).to_have_count(0)
    assert SECRET not in page.content()
    page.get_by_test_id("channel-secret-replace").click()
    expect(page.get_by_test_id("channel-field-url")).to_have_value("")
    page.get_by_role("button", name="Cancel").click()
    assert SECRET not in page.content()
    listed = httpx.get(f"{stack.url}/api/v1/channels", headers={"Authorization": f"Bearer {stack.token}"})
    assert listed.status_code == 200 and SECRET not in listed.text, listed.text

    # disabling is one click and sticks
    row.get_by_test_id("channel-enabled").uncheck()
    expect(row.get_by_test_id("channel-enabled")).not_to_be_checked()
    page.reload()
    expect(page.get_by_test_id("channel-row").filter(has_text="e2e hooks").get_by_test_id("channel-enabled")
           ).not_to_be_checked()

    # delete asks first
    page.on("dialog", lambda d: d.accept())
    page.get_by_test_id("channel-row").filter(has_text="e2e hooks").get_by_test_id("channel-delete").click()
    expect(page.get_by_test_id("channel-row").filter(has_text="e2e hooks")).to_have_count(0)


# ---------------------------------------------------------------------------------------------- fork
@pytest.fixture(scope="module")
def finished_tiny(api: Client) -> str:
    """A finished fmnist_tiny run (60 steps; checkpoints at 16, 32, 48 and the end) that rolled back once: a
    gradient spike injected at step 20 sends it back to its checkpoint at 16 with a lower lr (branch 1)."""
    run_id = api.submit({"kind": "pretrain", "preset": "fmnist_tiny", "name": "e2e: fork parent",
                         "overrides": {"train.max_steps": 60, "faults.spike_at_step": 20,
                                       "faults.spike_scale": 1000, "monitor.policy": "rollback"},
                         "tags": ["e2e"]})["id"]
    run = wait_for_run(api, run_id)
    assert run["status"] == "succeeded", run
    (branch,) = api.get(f"/runs/{run_id}/lineage")["branches"]
    assert branch["to_step"] == 16, branch
    return str(run_id)


def test_fork_from_a_checkpoint_shows_its_lineage_and_compares_on_the_parents_steps(
        page: Page, api: Client, finished_tiny: str, shot: Shot) -> None:
    expect = _expect()
    parent = finished_tiny
    page.goto(f"/runs/{parent}")
    expect(page.get_by_test_id("tab-lineage")).to_be_visible()
    page.get_by_test_id("fork-button").click()
    dialog = page.get_by_test_id("fork-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_test_id("fork-checkpoint").select_option("32")
    expect(dialog.get_by_test_id("field-optim.base_lr")).not_to_have_value("")
    dialog.get_by_test_id("field-optim.base_lr").fill("0.0001")
    dialog.get_by_test_id("fork-name").fill("e2e: fork at 32, lower lr")
    dialog.get_by_test_id("fork-submit").click()

    expect(page).not_to_have_url(re.compile(rf"/runs/{re.escape(parent)}$"), timeout=30_000)
    fork = page.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    assert fork and fork != parent
    forked = page.get_by_test_id("forked-from")
    expect(forked).to_contain_text("at step 32")
    expect(forked).to_contain_text("e2e: fork parent")
    detail = api.run(fork)
    assert detail["parent_run_id"] == parent and detail["parent_step"] == 32, detail
    assert detail["spec"]["optim"]["base_lr"] == 0.0001
    done = wait_for_run(api, fork)
    assert done["status"] == "succeeded", done

    # the parent's Lineage tab lists the fork and the rollback branch; its link draws them on the parent's steps
    page.get_by_test_id("forked-from").get_by_role("link").click()
    expect(page.get_by_test_id("step-focus")).to_have_attribute("data-step", "32")
    page.get_by_test_id("tab-lineage").click()
    row = page.locator(f'[data-testid="lineage-fork"][data-run-id="{fork}"]')
    expect(row).to_have_attribute("data-step", "32")
    expect(row.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded")
    branch = page.get_by_test_id("lineage-branch")
    expect(branch).to_have_count(1)
    expect(branch).to_contain_text("to the checkpoint at step 16")
    page.get_by_test_id("lineage-compare-forks").click()
    expect(page).to_have_url(re.compile(r"/compare\?ids="))
    expect(page.get_by_test_id("compare-row")).to_have_count(2)
    expect(page.locator(f'[data-testid="compare-row"][data-run-id="{fork}"]').get_by_test_id("compare-fork-of")
           ).to_contain_text("at step 32")
    expect(page.locator(f'[data-testid="compare-row"][data-run-id="{parent}"]').get_by_test_id("compare-branches")
           ).to_contain_text("1 rollback branch")
    loss = page.get_by_test_id("chart-loss")
    expect(loss).to_have_attribute("data-drawn", "1", timeout=60_000)
    # the rollback's checkpoint (16) and the fork point (32), on the parent's step axis
    expect(loss).to_have_attribute("data-markers", "16,32")
    expect(page.get_by_test_id("compare-branch-points")).to_contain_text("step 32")
    # the abandoned curve, dashed, beside the two runs'
    expect(loss.locator(".legend-item.dashed")).to_contain_text("rollback 1 (abandoned)")
    shot(page, "fork-compare")


def test_a_step_link_marks_that_step_on_every_chart(page: Page, finished_tiny: str) -> None:
    """The link a notification carries (/runs/<id>?step=N): a marker at N on every chart."""
    expect = _expect()
    page.goto(f"/runs/{finished_tiny}?step=40")
    focus = page.get_by_test_id("step-focus")
    expect(focus).to_have_attribute("data-step", "40")
    expect(page.get_by_test_id("chart-loss")).to_have_attribute("data-drawn", "1", timeout=60_000)
    charts = page.locator('figure[data-testid^="chart-"]')
    assert charts.count() >= 3
    for i in range(charts.count()):
        expect(charts.nth(i)).to_have_attribute("data-markers", "40")
