"""The dashboard in headless Chromium, against a real server, NATS and worker, as a person uses it.

A system Chromium drives these (Playwright with `executable_path`; never `playwright install`): the first
of `chromium` and `chromium-browser` on PATH, else /usr/bin/chromium (Debian's package, which .ci/run
installs). Without one they skip on a laptop and fail under CI=true. Screenshots go to the test's
temporary directory, and to docs/screenshots/ when NEUTRINO_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require
from tests.dashboard.conftest import ROOT, XSS_IMG, XSS_SCRIPT, DashboardServer

pytestmark = pytest.mark.browser

CHROMIUM_NAMES = ("chromium", "chromium-browser")
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync"]
WAIT_MS = 15_000
SCREENSHOTS = ROOT / "docs" / "screenshots"


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    return str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.is_file() and os.access(DEBIAN_CHROMIUM, os.X_OK) else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = find_chromium()
    require(chromium is not None, f"Chromium not found: none of {', '.join(CHROMIUM_NAMES)} on PATH, nor "
                                  f"{DEBIAN_CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def signed_in_state(browser: Any, dashboard_server: DashboardServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Sign in once through the login page; each test's browser context starts from these cookies."""
    context = browser.new_context(base_url=dashboard_server.base_url)
    page = context.new_page()
    page.goto("/")
    assert "/login/" in page.url
    page.fill("#id_username", dashboard_server.username)
    page.fill("#id_password", dashboard_server.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{dashboard_server.base_url}/")
    path = str(tmp_path_factory.mktemp("browser") / "state.json")
    context.storage_state(path=path)
    context.close()
    return path


@pytest.fixture
def page(browser: Any, dashboard_server: DashboardServer, signed_in_state: str) -> Iterator[Any]:
    context = browser.new_context(base_url=dashboard_server.base_url, storage_state=signed_in_state,
                                  viewport={"width": 1360, "height": 860})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    yield page
    context.close()


@pytest.fixture
def api(dashboard_server: DashboardServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dashboard_server.base_url, timeout=60) as client:
        yield client


def open_live(page: Any, path: str) -> None:
    """Open a page and wait until its websocket is connected; mark the window to catch any reload."""
    page.goto(path)
    page.wait_for_selector("#live-state[data-state=open]")
    page.evaluate("window.__sameDocument = true")


def still_same_document(page: Any) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def save_screenshot(page: Any, name: str, tmp_path: Path, *, for_docs: bool = True) -> None:
    target = tmp_path / name
    page.screenshot(path=str(target), full_page=True)
    if for_docs and os.environ.get("NEUTRINO_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / name)


def call_in_background(api: httpx.Client, name: str, args: dict[str, Any]) -> tuple[threading.Thread, list]:
    """A sync call blocks until the task ends: make it from a thread while the browser watches."""
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(api.post(f"/api/{name}", json={"args": args})))
    thread.start()
    return thread, answers


def test_login_page_guards_the_dashboard(browser: Any, dashboard_server: DashboardServer) -> None:
    context = browser.new_context(base_url=dashboard_server.base_url)
    page = context.new_page()
    page.goto("/ui/overview")
    assert "/login/" in page.url
    page.fill("#id_username", dashboard_server.username)
    page.fill("#id_password", "wrong password")
    page.click("button[type=submit]")
    assert "didn't match" in page.inner_text(".error-note")
    page.fill("#id_username", dashboard_server.username)
    page.fill("#id_password", dashboard_server.password)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/overview")
    assert page.inner_text("h1") == "Overview"
    context.close()


def test_a_submitted_task_appears_and_completes_without_a_reload(page: Any, api: httpx.Client) -> None:
    open_live(page, "/")
    thread, answers = call_in_background(api, "dash_steps", {"steps": 6, "step_s": 0.4})
    # The row appears while the task runs, with its progress bar moving...
    running = page.locator("tr.status-running", has=page.locator("td.fn", has_text="dash_steps"))
    running.first.wait_for()
    page.locator("tr.status-running .progress").first.wait_for()
    row_id = running.first.get_attribute("id")
    thread.join(60)
    assert answers and answers[0].status_code == 200, answers
    task_id = answers[0].json()["task_id"]
    assert row_id == f"task-{task_id}"
    # ...then turns completed in place, and the counters follow.
    page.wait_for_selector(f"#task-{task_id}.status-completed")
    assert still_same_document(page)
    assert int(page.inner_text("[data-status=completed] .counter-value").rstrip("+").replace(",", "")) >= 1


def test_filter_and_search_live_in_the_url(page: Any, api: httpx.Client) -> None:
    done = api.post("/api/echo", json={"args": {"value": "find me"}}).json()["task_id"]
    failed = api.post("/api/boom", json={"args": {"message": "filter me"}}).json()["task_id"]
    open_live(page, "/")
    page.wait_for_selector(f"#task-{failed}")
    page.select_option("#f-status", "failed")
    page.wait_for_url(re.compile(r"/\?status=failed$"))
    page.wait_for_selector(f"#task-{done}", state="detached")
    assert page.is_visible(f"#task-{failed}")
    assert all(s == "failed" for s in page.locator("#task-rows tr").evaluate_all("rs => rs.map(r => r.dataset.status)"))
    page.fill("#f-function", "echo")
    page.select_option("#f-status", "")
    page.wait_for_url(re.compile(r"/\?function=echo$"))
    page.wait_for_selector(f"#task-{done}")
    assert not page.is_visible(f"#task-{failed}")
    page.fill("#f-q", done[:8])
    page.press("#f-q", "Enter")
    page.wait_for_url(re.compile(rf"q={done[:8]}"))
    page.wait_for_function("document.querySelectorAll('#task-rows tr[id]').length === 1")
    assert page.is_visible(f"#task-{done}")
    # The URL is the view: opening it afresh shows the same.
    page.goto(page.url)
    assert page.locator("#task-rows tr[id]").count() == 1 and page.input_value("#f-q") == done[:8]


def test_detail_shows_the_failure_and_retry_opens_the_new_task(page: Any, api: httpx.Client) -> None:
    failed = api.post("/api/boom", json={"args": {"message": "retry me"}}).json()["task_id"]
    open_live(page, "/")
    page.click(f"#task-{failed} td.mono a")
    page.wait_for_url(f"**/ui/tasks/{failed}")
    assert "ValueError" in page.inner_text(".error-card") and "retry me" in page.inner_text("#task-error")
    assert "Traceback" in page.inner_text(".traceback")
    assert '"message": "retry me"' in page.inner_text("#task-args")
    page.click("#retry-button")
    page.wait_for_url(re.compile(r"/ui/tasks/(?!" + failed + r")[0-9a-f-]{36}$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert "Retry of" in page.inner_text(".messages")
    assert page.locator(f'.chain a[href="/ui/tasks/{failed}"]').count() == 1
    page.goto(f"/ui/tasks/{failed}")
    assert page.locator(f'.chain a[href="/ui/tasks/{new_id}"]').count() == 1


def test_retry_with_changes_checks_the_arguments_as_typed_and_records_them(page: Any, api: httpx.Client) -> None:
    failed = api.post("/api/boom", json={"args": {"message": "first"}}).json()["task_id"]
    page.goto(f"/ui/tasks/{failed}")
    page.wait_for_selector("#retry-edit-link")  # the row reaches the page once the ledger wrote it
    page.click("#retry-edit-link")
    page.wait_for_url(f"**/ui/tasks/{failed}/retry/edit")
    assert '"message": "first"' in page.input_value("#retry-args")
    assert '"message"' in (page.text_content("#retry-schema") or "")  # the signature, to edit against
    # Not JSON: the editor says so while typing and will not send it.
    page.fill("#retry-args", '{"message": ')
    page.wait_for_selector("#retry-error:has-text('not valid JSON')")
    assert page.is_disabled("#retry-send")
    # JSON, but not the task's signature: named by field.
    page.fill("#retry-args", '{"message": {"not": "a string"}}')
    page.wait_for_selector("#retry-error[data-field='message']")
    assert page.is_disabled("#retry-send")
    page.fill("#retry-args", '{"message": "second"}')
    page.wait_for_selector("#retry-changes:has-text('args')")
    assert page.is_enabled("#retry-send")
    page.click("#retry-send")
    page.wait_for_url(re.compile(r"/ui/tasks/(?!" + failed + r")[0-9a-f-]{36}$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert "args" in page.inner_text(".messages")
    assert '"message": "second"' in page.inner_text("#task-args")
    changed = page.inner_text("#retry-changes-card")
    assert '"first"' in changed and '"second"' in changed
    assert page.locator(f'.chain a[href="/ui/tasks/{failed}"]').count() == 1  # linked to the original
    page.goto(f"/ui/tasks/{failed}")
    assert page.locator(f'.chain a[href="/ui/tasks/{new_id}"]').count() == 1


def test_cancel_a_running_queued_task_with_its_button(page: Any, api: httpx.Client, dashboard_worker: Any) -> None:
    response = api.post("/api/dash_async_sleep", json={"args": {"seconds": 20}})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    open_live(page, f"/ui/tasks/{task_id}")
    # The worker picks it up: the page turns running and shows progress, without a reload.
    page.wait_for_selector("#task-live .detail-head .status-running")
    page.wait_for_selector("#task-live .progress-card")
    assert still_same_document(page)
    page.click("#cancel-button")
    page.wait_for_selector("#task-live .detail-head .status-cancelled")
    assert page.dialogs  # type: ignore[attr-defined]  # asked before cancelling
    assert api.get(f"/tasks/{task_id}").json()["status"] == "cancelled"
    assert page.locator("#cancel-button").count() == 0


def test_cancel_a_running_sync_task_with_its_button(page: Any, api: httpx.Client) -> None:
    thread, answers = call_in_background(api, "dash_sleep", {"seconds": 25})
    open_live(page, "/?function=dash_sleep&status=running")
    page.locator("#task-rows tr.status-running").first.wait_for()
    page.click("#task-rows tr.status-running td.mono a")
    page.click("#cancel-button")
    page.wait_for_selector("#task-live .detail-head .status-cancelled")
    thread.join(30)
    assert answers and answers[0].status_code == 409 and answers[0].json()["error"] == "conflict"


def test_a_delayed_task_waits_scheduled_and_run_now_runs_it(page: Any, api: httpx.Client,
                                                           dashboard_worker: Any) -> None:
    response = api.post("/api/dash_async_sleep", json={"args": {"seconds": 0.2}, "delay_s": 3600})
    assert response.status_code == 202 and response.json()["status"] == "scheduled", response.text
    task_id = response.json()["task_id"]
    open_live(page, "/?status=scheduled")
    page.locator(f"#task-{task_id} .status-scheduled").wait_for()
    assert "runs" in page.inner_text(f"#task-{task_id}")
    page.click(f"#task-{task_id} td.mono a")
    page.wait_for_url(f"**/ui/tasks/{task_id}")
    assert page.inner_text("#task-run-at") and page.locator("#cancel-button").count() == 1
    page.wait_for_selector("#live-state[data-state=open]")
    page.click("#run-now-button")
    page.wait_for_selector("#task-live .detail-head .status-completed")
    assert "runs now" in page.inner_text(".messages")
    assert page.locator("#run-now-button").count() == 0
    assert api.get(f"/tasks/{task_id}").json()["status"] == "completed"


def test_task_strings_render_as_text(page: Any, api: httpx.Client) -> None:
    payload = {"script": XSS_SCRIPT, "img": XSS_IMG}
    task_id = api.post("/api/echo", json={"args": {"value": payload}}).json()["task_id"]
    failed = api.post("/api/boom", json={"args": {"message": XSS_IMG + XSS_SCRIPT}}).json()["task_id"]
    open_live(page, "/")
    page.wait_for_selector(f"#task-{failed}")
    page.goto(f"/ui/tasks/{task_id}")
    assert XSS_SCRIPT in page.inner_text("#task-args") and XSS_IMG in page.inner_text("#task-result")
    page.goto(f"/ui/tasks/{failed}")
    assert XSS_IMG + XSS_SCRIPT in page.inner_text("#task-error")
    assert page.locator("img").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]  # no alert() ran


def test_overview_workers_and_pools_pages(page: Any, api: httpx.Client, dashboard_worker: Any) -> None:
    api.post("/api/echo", json={"args": {"value": 1}})
    page.goto("/ui/overview")
    assert page.locator("svg.chart rect.seg").count() >= 1
    assert page.locator("text=Queue depth").count() == 1
    async_row = page.locator("tr", has=page.locator("td", has_text=re.compile(r"^async$")))
    assert re.fullmatch(r"async\s+\d+\s+\d+", async_row.inner_text().strip())  # known: NATS is up
    page.goto("/ui/workers")
    page.wait_for_selector(".worker-state-live")
    page.goto("/ui/pools")
    assert "live" in page.inner_text("section.pool:has(h2:text-is('async'))")


def test_screenshots_for_the_readme(page: Any, api: httpx.Client, dashboard_worker: Any, tmp_path: Path) -> None:
    """Last in the module, so the list holds the other tests' tasks too: a mix of every status."""
    for value in ("report.csv", {"rows": 3}, [1, 2, 3]):
        api.post("/api/echo", json={"args": {"value": value}})
    queued = api.post("/api/dash_async_sleep", json={"args": {"seconds": 6}}).json()["task_id"]
    thread, _ = call_in_background(api, "dash_steps", {"steps": 10, "step_s": 0.5})
    open_live(page, "/")
    page.wait_for_function(
        "[...document.querySelectorAll('#task-rows .progress')].some(p => +p.getAttribute('aria-valuenow') >= 30)")
    page.wait_for_timeout(1300)  # let the row highlight fade
    save_screenshot(page, "task-list.png", tmp_path)
    page.goto(f"/ui/tasks/{queued}")
    page.wait_for_function("+(document.querySelector('#task-live .progress')?.getAttribute('aria-valuenow')) >= 40")
    save_screenshot(page, "task-detail.png", tmp_path)
    page.goto("/ui/overview")
    save_screenshot(page, "overview.png", tmp_path)
    page.goto("/ui/pools")
    save_screenshot(page, "pools.png", tmp_path, for_docs=False)
    thread.join(30)
