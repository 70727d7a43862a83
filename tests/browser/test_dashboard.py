"""The training dashboard in Chromium, on the single-process default: Daphne with the in-memory channel
layer, runs trained in a thread of the server. Staff start a run and watch the loss chart and progress
bar move until it finishes, cancel another; the page reconnects by itself; visitors only watch."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.dashboard.servers import daphne, manage, site_env  # noqa: E402

STAFF = ("dash-staff", "pw-dash-staff-123")
SETUP = f"""
from django.contrib.auth import get_user_model
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
get_user_model().objects.create_superuser({STAFF[0]!r}, "staff@example.com", {STAFF[1]!r})
"""
RUN_TIMEOUT_MS = 120_000

# Records, in the page, every value the progress bar and the loss chart show as they change.
RECORD = """() => {
  window.seen = { progress: [], points: [] };
  const bar = document.querySelector('[data-testid="progress-bar"]');
  const loss = document.querySelector('[data-testid="loss-chart"]');
  new MutationObserver(() => window.seen.progress.push(Number(bar.getAttribute("aria-valuenow"))))
    .observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
  new MutationObserver(() => window.seen.points.push(Number(loss.dataset.points)))
    .observe(loss, { attributes: true, attributeFilter: ["data-points"] });
}"""


@pytest.fixture(scope="module")
def dashboard_site(tmp_path_factory, mnist_root):
    """A fresh site with one staff account, served by Daphne with no broker and no Redis."""
    root = tmp_path_factory.mktemp("dashboard-site")
    (root / "static").mkdir()
    env = site_env(DATABASE_URL=f"sqlite:///{root / 'db.sqlite3'}", MEDIA_ROOT=str(root / "media"),
                   STATIC_ROOT=str(root / "static"), MNIST_ROOT=str(mnist_root))
    manage("shell", "-c", SETUP, env=env)
    with daphne(env=env, log_path=root / "daphne.log") as site:
        yield site


def open_page(browser, site, *, staff: bool) -> Page:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda error: page.js_errors.append(str(error)))
    page.api_calls = []
    page.on("request", lambda request: request.resource_type in ("fetch", "xhr")
            and page.api_calls.append(f"{request.method} {request.url.removeprefix(site.url)}"))
    if staff:
        page.goto("/admin/login/?next=/dashboard/")
        page.fill("#id_username", STAFF[0])
        page.fill("#id_password", STAFF[1])
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"/dashboard/"))
    else:
        page.goto("/dashboard/")
    return page


def start_run(page: Page, *, arch: str, epochs: str = "", mnist_limit: str = "") -> int:
    form = page.get_by_test_id("start-form")
    form.locator("select[name=arch]").select_option(arch)
    form.locator("input[name=epochs]").fill(epochs)
    form.locator("input[name=use_drawings]").uncheck()
    if mnist_limit:
        form.locator("details.more-options > summary").click()
        form.locator("input[name=mnist_limit]").fill(mnist_limit)
    page.get_by_test_id("start-run").click()
    # The status line follows the run: queued, then running, until it ends.
    expect(page.get_by_test_id("start-status")).to_have_text(re.compile(r"Run #\d+ (queued|is running|succeeded)\."))
    run_id = int(re.search(r"#(\d+)", page.get_by_test_id("start-status").inner_text()).group(1))
    expect(page.get_by_test_id("run-status")).not_to_have_text("")  # its socket's state has arrived
    return run_id


def test_staff_start_a_run_and_watch_it_to_the_end(browser, dashboard_site):
    page = open_page(browser, dashboard_site, staff=True)
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    page.evaluate(RECORD)

    run_id = start_run(page, arch="mlp", epochs="1", mnist_limit="18000")  # about 100 steps

    assert re.search(rf"[?&]run={run_id}\b", page.url)
    expect(page.get_by_test_id(f"run-row-{run_id}")).to_be_visible()
    expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_test_id(f"run-row-{run_id}")).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_test_id("start-status")).to_have_text(f"Run #{run_id} succeeded.")
    expect(page.get_by_test_id("run-meta")).to_contain_text("1 epoch ·")
    bar = page.get_by_test_id("progress-bar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    seen = page.evaluate("window.seen")
    assert any(0 < value < 100 for value in seen["progress"]), seen  # it moved while the run trained
    assert len({n for n in seen["points"] if n > 0}) >= 2, seen  # the loss curve grew point by point
    assert int(page.get_by_test_id("loss-chart").get_attribute("data-points")) >= 3
    expect(page.get_by_test_id("accuracy-chart")).to_have_attribute("data-epochs", "1")
    assert int(page.get_by_test_id("lr-chart").get_attribute("data-points")) >= 3
    expect(page.get_by_test_id("eta")).to_have_text("done")
    expect(page.get_by_test_id("confusion-matrix")).to_have_attribute("data-rows", "10")
    expect(page.get_by_test_id("per-class-accuracy").locator("li")).to_have_count(10)
    expect(page.get_by_test_id("result-test")).to_have_text(re.compile(r"^\d+\.\d\d%$"))
    expect(page.get_by_test_id("result-version")).to_contain_text("Produced mlp v2")
    expect(page.get_by_test_id("promotion")).to_contain_text("Not promoted")
    expect(page.get_by_test_id("cancel-run")).to_be_hidden()
    expect(page.get_by_test_id("run-log")).to_contain_text("succeeded", use_inner_text=False)

    # A dropped connection: the page reconnects by itself and the state it gets replaces what it had.
    points = page.get_by_test_id("loss-chart").get_attribute("data-points")
    page.evaluate("""() => {
      const dashboard = window.mnistDashboard;
      dashboard.selected.applyState({ ...dashboard.selected.state, history: { batches: [], epochs: [] } });
      dashboard.runSocket.ws.close();
    }""")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-reconnects", "1")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    expect(page.get_by_test_id("loss-chart")).to_have_attribute("data-points", points)
    expect(page.get_by_test_id("accuracy-chart")).to_have_attribute("data-epochs", "1")

    # Pushed, not polled: the only request the page made was starting the run.
    assert page.api_calls == ["POST /api/retrain/"]
    assert page.js_errors == []
    page.context.close()


def test_staff_cancel_a_run_and_visitors_only_watch(browser, dashboard_site):
    page = open_page(browser, dashboard_site, staff=True)
    run_id = start_run(page, arch="logreg", epochs="200")  # far longer than the test
    page.get_by_test_id("cancel-run").click()
    expect(page.get_by_test_id("run-status")).to_have_text("cancelled", timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_test_id("start-status")).to_have_text(f"Run #{run_id} was cancelled.")
    expect(page.get_by_test_id(f"run-row-{run_id}")).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_test_id("cancel-run")).to_be_hidden()
    assert page.js_errors == []
    page.context.close()

    visitor = open_page(browser, dashboard_site, staff=False)
    expect(visitor.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    assert visitor.get_by_test_id("start-form").count() == 0 and visitor.get_by_test_id("cancel-run").count() == 0
    # The newest run is shown first, with the curve it had when it was cancelled.
    expect(visitor.get_by_test_id("run-status")).to_have_text("cancelled")
    expect(visitor.get_by_test_id(f"run-row-{run_id}")).to_have_attribute("aria-selected", "true")
    expect(visitor.get_by_test_id("loss-chart")).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"))
    # Another run's curves can be laid over this one's.
    if visitor.get_by_test_id("compare-select").locator("option").count() > 1:
        visitor.get_by_test_id("compare-select").select_option(index=1)
        expect(visitor.get_by_test_id("loss-chart")).to_have_attribute("data-compare-points", re.compile(r"^[1-9]\d*$"))
    assert visitor.api_calls == [] and visitor.js_errors == []
    visitor.context.close()
    assert dashboard_site.log_problems() == [], dashboard_site.log()[-4000:]
