"""The web UI in a real headless Chromium against the real embedded stack (issue 4, "What it must show"):
log in (link and form), submit a tiny run from the form and watch its loss chart grow live, see the alert of
a run that gets a non-finite gradient, start a kNN evaluation and see its accuracy, cancel a running run,
compare two runs, see the worker. Each page is screenshotted, into a temporary folder (scripts/screenshots.sh
refreshes the README's docs/screenshots on purpose).

One CPU worker runs the runs one after another, so the tests share runs (RUNS) and keep them tiny. Every
wait is Playwright's auto-waiting `expect` or `wait_for_function` with a generous timeout: the CI machine is
small and busy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from mocolab.client import Client
from mocolab.stack import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Page

TERMINAL = {"succeeded", "failed", "cancelled", "lost"}
TRAIN_S = 180_000  # ms: queue wait + worker start-up + a tiny run on a busy 2-core machine
FORM_STEPS = 60
# fmnist_tiny (64 steps: 16 tokens, 2 blocks, batch 64) stopped at 60: enough 0.2 s event batches for the
# loss chart to grow in several visible steps even on a fast machine; checkpoints at 16, 32, 48 and the end
TINY = {"train.max_steps": FORM_STEPS}
NAN = {"kind": "pretrain", "preset": "fmnist_tiny_nan", "name": "e2e: non-finite gradient at step 12",
       "overrides": {"train.max_steps": 30}, "tags": ["e2e"]}
RUNS: dict[str, str] = {}  # "form" / "nan" -> run id, shared by the tests (one worker, runs in sequence)

Shot = Callable[["Page", str], None]


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def wait_for_run(api: Client, run_id: str, timeout: float = 300.0) -> dict[str, Any]:
    """The run once it has ended (for fixtures that need a finished run; tests watch the page instead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.run(run_id)
        if run["status"] in TERMINAL:
            return run
        time.sleep(1.0)
    raise AssertionError(f"run {run_id} did not end within {timeout:.0f} s")


@pytest.fixture
def form_run(api: Client) -> str:
    """The finished run submitted from the form (or, when that test did not run, the same run via the API)."""
    if "form" not in RUNS:
        RUNS["form"] = api.submit({"kind": "pretrain", "preset": "fmnist_tiny", "name": "e2e: from the API",
                                   "overrides": TINY, "tags": ["e2e"]})["id"]
    run = wait_for_run(api, RUNS["form"])
    assert run["status"] == "succeeded", run
    return run["id"]


@pytest.fixture
def nan_run(api: Client) -> str:
    if "nan" not in RUNS:
        RUNS["nan"] = api.submit(NAN)["id"]
    return RUNS["nan"]


def header_status(page: Page) -> Any:
    """The run page's own status badge (evaluation rows further down carry `run-status` badges too)."""
    return page.get_by_test_id("run-status").first


def points(page: Page, chart: str) -> int:
    return int(page.get_by_test_id(f"chart-{chart}").get_attribute("data-points") or 0)


def wait_points_above(page: Page, chart: str, n: int, timeout: float) -> int:
    page.wait_for_function(
        "([id, n]) => Number(document.querySelector(`[data-testid='chart-${id}']`)?.dataset.points ?? 0) > n",
        arg=[chart, n], timeout=timeout)
    return points(page, chart)


# ---------------------------------------------------------------------------------------------- login
def test_login_form_exchanges_a_token_for_a_session(anon_page: Page, stack: Stack, shot: Shot) -> None:
    expect = _expect()
    anon_page.goto("/")
    token = anon_page.get_by_test_id("login-token")
    expect(token).to_be_visible()
    expect(anon_page.get_by_test_id("login-submit")).to_be_disabled()
    shot(anon_page, "login")
    token.fill("mcl_not-a-token")
    anon_page.get_by_test_id("login-submit").click()
    expect(anon_page.get_by_test_id("login-error")).to_contain_text("That token was not accepted")
    urls: list[str] = []
    anon_page.on("request", lambda r: urls.append(r.url))
    token.fill(stack.token or "")
    anon_page.get_by_test_id("login-submit").click()
    expect(anon_page.get_by_test_id("whoami")).to_contain_text("admin")
    expect(anon_page).to_have_url(re.compile(r"/$"))
    # posted in a JSON body: in no URL, so not in the browser's history
    assert urls and not [u for u in urls if (stack.token or "") in u], urls
    assert (stack.token or "") not in anon_page.evaluate("window.location.href")


def test_login_url_opens_a_session(anon_page: Page, stack: Stack) -> None:
    """A fresh one-time link (the one `mocolab up` printed may be older than its 10 minutes by now); logging out
    posts the header's form, which the server's same-origin rule must let through."""
    expect = _expect()
    link = httpx.post(f"{stack.url}/api/v1/login-codes", headers={"Authorization": f"Bearer {stack.token}"}).json()
    anon_page.goto(f"{link['url']}&next=/workers")
    expect(anon_page).to_have_url(re.compile(r"/workers$"))
    expect(anon_page.get_by_test_id("whoami")).to_contain_text("admin")
    cookies = anon_page.context.cookies()
    assert any(c.get("httpOnly") for c in cookies), cookies
    anon_page.get_by_role("button", name="Log out").click()
    expect(anon_page.get_by_test_id("login-token")).to_be_visible()
    anon_page.goto(link["url"])  # used once already
    expect(anon_page).to_have_url(re.compile(r"/login-page\?error=invalid-code$"))
    expect(anon_page.get_by_test_id("login-error")).to_contain_text(
        "This sign-in link was already used or has expired: run `mocolab admin login-link` for a new one.")


def test_a_wrong_token_is_refused(anon_page: Page) -> None:
    expect = _expect()
    anon_page.goto("/login?token=not-a-token")
    expect(anon_page.get_by_test_id("whoami")).to_have_count(0)
    anon_page.goto("/")
    expect(anon_page.get_by_test_id("login-token")).to_be_visible()


# ---------------------------------------------------------------------------------------------- datasets
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]
E2E_DATASET = "fmnist-e2e"  # registered by the form below: the built-in's folder under another name


def test_add_dataset_shows_a_path_outside_the_roots_at_the_path_field(page: Page) -> None:
    expect = _expect()
    page.goto("/datasets")
    page.get_by_test_id("add-dataset-button").click()
    page.get_by_test_id("dataset-field-name").fill("e2e-outside")
    page.get_by_test_id("dataset-field-path").fill("/etc")
    page.get_by_test_id("add-dataset-submit").click()
    error = page.get_by_test_id("field-error-path")
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(page.get_by_test_id("field-error-name")).to_have_count(0)
    expect(page.get_by_test_id("dataset-field-path")).to_have_attribute("aria-invalid", "true")
    expect(page).to_have_url(re.compile(r"/datasets\?add=1$"))  # nothing was added: the form stays
    expect(page.locator("[data-testid=dataset-row][data-name='e2e-outside']")).to_have_count(0)


@pytest.mark.fmnist
def test_a_dataset_added_from_the_form_is_scanned_then_offered_by_the_new_run_form(page: Page, api: Client,
                                                                                  shot: Shot) -> None:
    """Add a folder (Debian's Fashion-MNIST again, detected by itself): its page follows the scan to ready with
    the facts the worker measured; the New run form then offers it, says its size and sends it as data.name;
    Prepare on its page writes its packed copy (at a short side of 32 px: a few seconds)."""
    expect = _expect()
    page.goto("/datasets?add=1")
    page.get_by_test_id("dataset-field-name").fill(E2E_DATASET)
    page.get_by_test_id("dataset-field-path").fill("/usr/share/datasets/fashion-mnist")
    page.get_by_test_id("add-dataset-submit").click()
    expect(page).to_have_url(re.compile(rf"/datasets/{E2E_DATASET}$"))
    status = page.get_by_test_id("dataset-page").get_by_test_id("dataset-status")
    expect(status).to_have_attribute("data-status", re.compile("scanning|ready"))
    expect(status).to_have_attribute("data-status", "ready", timeout=TRAIN_S)
    expect(page.get_by_test_id("dataset-train")).to_have_text("60,000")
    expect(page.get_by_test_id("dataset-val")).to_have_text("10,000")
    expect(page.get_by_test_id("dataset-num-classes")).to_have_text("10")
    expect(page.get_by_test_id("dataset-class-list")).to_contain_text("Ankle boot")
    assert api.get(f"/datasets/{E2E_DATASET}")["kind"] == "fashion_mnist"  # auto-detected

    page.goto("/new")
    picker = page.get_by_test_id("field-data.name")
    expect(picker).to_be_enabled()
    expect(picker).to_have_value("fashion-mnist")  # the presets' data: nothing to send
    expect(picker.locator(f"option[value='{E2E_DATASET}']")).to_have_count(1)
    expect(page.get_by_test_id("overrides-count")).not_to_contain_text("data.name")
    picker.select_option(E2E_DATASET)
    expect(page.get_by_test_id("dataset-choice-facts")).to_contain_text("70,000 images · 10 classes")
    expect(page.get_by_test_id("overrides-count")).to_contain_text(f'data.name="{E2E_DATASET}"')
    page.get_by_test_id("field-preset").select_option("fmnist_tiny")  # a preset keeps the choice
    expect(picker).to_have_value(E2E_DATASET)

    # its packed copy: Prepare, the prepare run's progress, then the copy's facts
    page.goto(f"/datasets/{E2E_DATASET}")
    page.get_by_test_id("dataset-short-side").fill("32")
    page.get_by_test_id("dataset-prepare").click()
    prepared = page.get_by_test_id("dataset-packed").get_by_test_id("dataset-prepared")
    expect(prepared).to_have_attribute("data-prepare-status", re.compile("preparing|prepared"))
    expect(prepared).to_have_attribute("data-prepare-status", re.compile("prepared|failed"), timeout=TRAIN_S)
    packed = page.get_by_test_id("dataset-packed")
    assert prepared.get_attribute("data-prepare-status") == "prepared", packed.inner_text()  # says why not
    expect(page.get_by_test_id("dataset-packed-bytes")).to_contain_text(re.compile(r"\d (kB|MB) in \d+ shards?"))
    expect(page.get_by_test_id("dataset-packed-facts")).to_contain_text("60,000 / 10,000")
    expect(page.get_by_test_id("dataset-prepare-run")).to_be_visible()
    shot(page, "dataset")

    page.goto("/datasets")
    row = page.locator(f"[data-testid=dataset-row][data-name='{E2E_DATASET}']")
    expect(row.get_by_test_id("dataset-prepared")).to_contain_text(re.compile(r"packed · \d"))
    shot(page, "datasets")


@pytest.mark.fmnist
def test_datasets_page_shows_fashion_mnist_ready_with_its_sample_grid(page: Page, shot: Shot) -> None:
    expect = _expect()
    page.goto("/")
    page.get_by_test_id("nav-datasets").click()
    row = page.locator("[data-testid=dataset-row][data-name='fashion-mnist']")
    expect(row.get_by_test_id("dataset-status")).to_have_attribute("data-status", "ready")
    images = row.get_by_test_id("dataset-images")
    expect(images).to_have_attribute("data-train", "60000")
    expect(images).to_have_attribute("data-val", "10000")
    expect(images).to_have_text("60,000 / 10,000")
    expect(row.get_by_test_id("dataset-classes")).to_have_text("10")
    row.get_by_test_id("dataset-images").click()  # anywhere on the row
    expect(page).to_have_url(re.compile(r"/datasets/fashion-mnist$"))
    img = page.get_by_test_id("dataset-samples-img")
    expect(img).to_be_visible()
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle())
    assert (img.get_attribute("alt") or "").startswith("A grid of ")
    rows = page.get_by_test_id("dataset-samples-caption").locator("li")
    expect(rows.first).to_be_visible()
    for line in rows.all_inner_texts():  # every cell named by its class, in the grid's order
        assert line and all(name in FMNIST_CLASSES for name in _class_names(line)), line
    chips = page.get_by_test_id("dataset-class-list").locator(".chip")
    expect(chips).to_have_text(FMNIST_CLASSES)
    expect(page.get_by_test_id("dataset-image-size")).to_contain_text("28×28")


def _class_names(line: str) -> list[str]:
    """A caption line's class names (a name may hold a comma-free slash, as T-shirt/top does)."""
    return [n.strip() for n in line.split(", ")]


# ---------------------------------------------------------------------------------------------- runs
@pytest.mark.fmnist
def test_new_run_form_submits_and_the_loss_chart_grows_live(page: Page, shot: Shot) -> None:
    expect = _expect()
    page.goto("/new")
    page.get_by_test_id("field-preset").select_option("fmnist_tiny")
    # the preset's values are in the form (fmnist_tiny trains at batch 64, fmnist_small at 256)
    expect(page.get_by_test_id("field-optim.batch_size")).to_have_value("64")
    page.get_by_test_id("field-name").fill("e2e: from the form")
    page.get_by_test_id("field-filter").fill("max_steps")
    page.get_by_test_id("field-train.max_steps").fill(str(FORM_STEPS))
    page.get_by_test_id("field-filter").fill("")
    page.get_by_test_id("field-tags").fill("e2e, form")
    expect(page.get_by_test_id("overrides-count")).to_contain_text(f"train.max_steps={FORM_STEPS}")
    shot(page, "new-run")

    page.get_by_test_id("submit-run").click()
    expect(page).to_have_url(re.compile(r"/runs/[^/]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    RUNS["form"] = run_id
    expect(header_status(page)).to_be_visible()
    page.evaluate("window.__e2eNoReload = true")  # gone if the page reloads
    refetches: list[str] = []

    first = wait_points_above(page, "loss", 0, TRAIN_S)
    page.on("request", lambda r: refetches.append(r.url) if "/metrics" in r.url else None)
    later = wait_points_above(page, "loss", first, 60_000)
    assert later > first
    assert not refetches, f"live points must be appended, not re-fetched: {refetches}"
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "live")
    expect(header_status(page)).to_have_attribute("data-status", "succeeded", timeout=TRAIN_S)
    expect(page.get_by_test_id("chart-loss")).to_have_attribute("data-drawn", "1")
    assert points(page, "loss") >= later
    assert page.evaluate("window.__e2eNoReload") is True, "the run page reloaded"
    shot(page, "run")


@pytest.mark.fmnist
def test_nonfinite_gradient_alert_shows_on_the_run_page(page: Page, nan_run: str, shot: Shot) -> None:
    expect = _expect()
    page.goto(f"/runs/{nan_run}")
    tab = page.get_by_test_id("tab-alerts")
    expect(tab).to_contain_text(re.compile(r"Alerts \([1-9]"), timeout=TRAIN_S)
    expect(header_status(page)).to_have_attribute(
        "data-status", re.compile("|".join(TERMINAL)), timeout=TRAIN_S)
    tab.click()
    alert = page.locator("[data-testid=alert-item][data-kind=non_finite]").first
    expect(alert).to_be_visible()
    expect(alert).to_have_attribute("data-step", "12")
    expect(alert).to_contain_text("Suggested remedy")
    expect(alert).to_contain_text("Last healthy checkpoint")
    shot(page, "run-alert")


@pytest.mark.fmnist
def test_knn_evaluation_started_from_the_run_page_shows_its_accuracy(page: Page, form_run: str) -> None:
    expect = _expect()
    page.goto(f"/runs/{form_run}")
    page.get_by_test_id("tab-evals").click()
    button = page.get_by_test_id("eval-knn")
    expect(button).to_be_enabled()
    button.click()
    expect(page.get_by_test_id("eval-pending-row").or_(page.get_by_test_id("eval-row")).first).to_be_visible()
    top1 = page.locator("[data-testid=eval-row][data-protocol=knn] [data-testid=eval-top1]").first
    expect(top1).to_have_text(re.compile(r"^\d{1,3}\.\d\d$"), timeout=240_000)
    accuracy = top1.inner_text()
    assert 10.0 < float(accuracy) <= 100.0  # 10 classes: better than chance
    # the runs table keeps the monitor's kNN probe (last run at step 47 of 60) apart from the evaluation
    page.goto("/")
    row = page.locator(f"[data-testid=run-row][data-run-id='{form_run}']")
    expect(row.get_by_test_id("run-knn-eval")).to_have_text(accuracy)
    expect(row.get_by_test_id("run-knn-probe")).to_have_text(re.compile(r"^\d{1,3}\.\d\d \(step 47\)$"))


@pytest.mark.fmnist
def test_evaluation_submitted_from_the_form_names_its_checkpoint_by_run(page: Page, api: Client,
                                                                        form_run: str) -> None:
    """The New run form of an evaluation has no checkpoint path field: it picks the pretraining run and one of
    its steps, and the server resolves that run's checkpoint (the new run reads it, in the run's project)."""
    expect = _expect()
    page.goto("/new")
    page.get_by_test_id("field-kind").select_option("knn")
    picker = page.get_by_test_id("field-run_id")
    expect(picker).to_be_enabled()
    expect(page.get_by_test_id("field-checkpoint")).to_have_count(0)
    picker.select_option(form_run)
    steps = page.get_by_test_id("field-checkpoint_step")
    expect(steps.locator("option[value='32']")).to_have_count(1)  # checkpoints at 16, 32, 48 and the end
    steps.select_option("32")
    page.get_by_test_id("field-name").fill("e2e: knn from the form")
    page.get_by_test_id("submit-run").click()
    expect(page).to_have_url(re.compile(r"/runs/[^/]+$"))
    run = api.run(page.url.rsplit("/", 1)[1])
    assert run["kind"] == "knn" and run["parent_run_id"] == form_run, run
    prefix = f"runs/{form_run}/"
    assert run["checkpoint"].startswith(prefix) and "32" in run["checkpoint"][len(prefix):], run["checkpoint"]
    assert run["spec"]["checkpoint"] == run["checkpoint"]
    page.goto("/")
    expect(page.locator(f"[data-testid=run-row][data-run-id='{run['id']}']")).to_be_visible()


@pytest.mark.fmnist
def test_cancel_a_running_run(page: Page, api: Client) -> None:
    expect = _expect()
    run = api.submit({"kind": "pretrain", "preset": "fmnist_tiny", "name": "e2e: to be cancelled",
                      "overrides": {"optim.epochs": 50, "monitor.knn_every": 0}, "tags": ["e2e"]})  # 1600 steps
    page.goto(f"/runs/{run['id']}")
    status = header_status(page)
    expect(status).to_have_attribute("data-status", "running", timeout=TRAIN_S)
    expect(page.get_by_test_id("run-progress")).to_contain_text(re.compile(r"step [1-9]\d*/1600"), timeout=TRAIN_S)
    page.once("dialog", lambda d: d.accept())
    page.get_by_test_id("cancel-button").click()
    expect(status).to_have_attribute("data-status", "cancelled", timeout=90_000)
    expect(page.get_by_test_id("cancel-button")).to_have_count(0)
    expect(page.get_by_test_id("resume-button")).to_be_visible()
    assert api.run(run["id"])["step"] < 1600


# ---------------------------------------------------------------------------------------------- team pages
def test_workers_page_shows_the_worker(page: Page, shot: Shot) -> None:
    expect = _expect()
    page.goto("/workers")
    card = page.locator("[data-testid=worker-card][data-online='1']").first
    expect(card).to_be_visible(timeout=90_000)
    expect(card.get_by_test_id("no-gpu")).to_be_visible()
    expect(card.get_by_test_id("worker-heartbeat")).to_contain_text("ago")
    # its history charted: utilisation and memory (a CPU worker has no GPU temperature), growing live with the
    # team stream's heartbeats (one every 5 s; the page fetches the history only once)
    history = card.get_by_test_id("worker-history")
    for chart in ("util", "mem"):
        expect(history.locator(f"[data-testid^='chart-worker-'][data-testid$='-{chart}']")).to_have_attribute(
            "data-drawn", "1", timeout=60_000)
    expect(history.locator("[data-testid$='-temp']")).to_have_count(0)
    before = int(history.get_attribute("data-samples") or 0)
    page.wait_for_function("([el, n]) => Number(el.dataset.samples) > n", arg=[history.element_handle(), before],
                           timeout=60_000)
    shot(page, "workers")


@pytest.mark.fmnist
def test_compare_two_runs_lists_both_and_their_differing_config(page: Page, api: Client, form_run: str,
                                                                nan_run: str, shot: Shot) -> None:
    expect = _expect()
    wait_for_run(api, nan_run)
    page.goto("/")
    for run_id in (form_run, nan_run):
        row = page.locator(f"[data-testid=run-row][data-run-id='{run_id}']")
        expect(row).to_be_visible()
        row.get_by_test_id("run-select").check()
    expect(page.locator(f"[data-testid=run-row][data-run-id='{nan_run}'] [data-testid=alert-badge]")).to_be_visible()
    shot(page, "runs")
    page.get_by_test_id("compare-button").click()
    expect(page).to_have_url(re.compile(r"/compare\?ids="))
    table = page.get_by_test_id("compare-table")
    expect(table).to_be_visible()
    for run_id in (form_run, nan_run):
        expect(table.locator(f"[data-testid=compare-row][data-run-id='{run_id}']")).to_be_visible()
    header = table.locator("thead")
    expect(header).to_contain_text("faults.nan_grad_at_step")
    expect(header).to_contain_text("monitor.policy")
    expect(page.get_by_test_id("chart-loss")).to_have_attribute("data-drawn", "1")
    shot(page, "compare")


# ---------------------------------------------------------------------------------------------- many machines
@pytest.mark.fmnist
def test_a_two_machine_run_from_the_form_shows_its_machines_and_their_devices(page: Page, api: Client, stack: Stack,
                                                                             shot: Shot) -> None:
    """Two agents (CPU slots, on their own queue so the other tests' runs stay on the one-GPU worker); a run
    asking for 2 machines from the form; its machines on the run page and its devices on the workers page."""
    import os
    import signal
    import sys

    expect = _expect()
    names = [f"agent-{i}" for i in (1, 2)]
    ids = [f"{n}-{os.getpid()}" for n in names]
    for name, worker_id in zip(names, ids, strict=True):
        stack._spawn(name, [sys.executable, "-m", "worker", "--gpus", "cpu:1", "--queue", "multi", "--worker-id",
                            worker_id, "--spool-dir", str(stack.state / "spool" / name)])
    try:
        deadline = time.monotonic() + 90
        while {w["id"] for w in api.get("/workers")["data"] if w.get("agent")} < set(ids):
            assert time.monotonic() < deadline, "the agents did not register"
            time.sleep(0.5)
        page.goto("/new")
        page.get_by_test_id("field-preset").select_option("fmnist_tiny")
        page.get_by_test_id("field-name").fill("e2e: two machines")
        page.get_by_test_id("field-filter").fill("max_steps")
        page.get_by_test_id("field-train.max_steps").fill("96")
        page.get_by_test_id("field-filter").fill("")
        page.get_by_test_id("field-queue").fill("multi")
        page.get_by_test_id("field-gpus_per_node").fill("1")
        page.get_by_test_id("field-nodes").fill("2")
        page.get_by_test_id("submit-run").click()
        expect(page).to_have_url(re.compile(r"/runs/[^/]+$"))
        run_id = page.url.rsplit("/", 1)[1]
        machines = page.get_by_test_id("run-machines")
        expect(machines.get_by_test_id("machine-row")).to_have_count(2, timeout=TRAIN_S)
        expect(machines.locator("[data-testid=machine-row][data-alive='1']")).to_have_count(2, timeout=30_000)
        expect(header_status(page)).to_have_attribute("data-status", "running", timeout=TRAIN_S)
        shot(page, "run-machines")
        page.goto("/workers")
        held = page.locator(f"a.device.held[href='/runs/{run_id}']")
        expect(held).to_have_count(2, timeout=30_000)  # one device on each machine, each naming the run
        shot(page, "workers-agents")
        page.goto(f"/runs/{run_id}")
        expect(header_status(page)).to_have_attribute("data-status", "succeeded", timeout=TRAIN_S)
        assert api.run(run_id)["nodes"] == 2
    finally:
        for name in names:
            if name in stack.procs:
                stack.kill(name, signal.SIGTERM, timeout=60)
