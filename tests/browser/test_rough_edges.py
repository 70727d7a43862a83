"""A newcomer's first hour in Chromium, each rough edge fixed: the stats charts' ticks and last point, no
sideways scroll after a failed run on a phone, answers scrolled into view after the button that asked for
them (phone and desktop), and the review queue's key hints read and heard properly."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.browser.conftest import PHONE, _new_page, sign_in  # noqa: E402
from tests.browser.test_draw_page import draw_with_mouse, draw_with_touch  # noqa: E402
from tests.dashboard.servers import daphne, manage, site_env  # noqa: E402
from tests.support.drawings import SEVEN  # noqa: E402

STAFF = ("edges-staff", "pw-edges-staff-123")
DESKTOP = {"width": 1280, "height": 800}
LONG_ERROR = ("checkpoint could not be written: [Errno 28] No space left on device: '/srv/mnistsite/media/"
              "checkpoints/2026/12/04/run-17-cnn-epoch-0003-3f9c2a1b7e8d4c6f9a0b1c2d3e4f5a6b.pt.partial'")
# 130 labelled drawings over three days, the answers' confidence between 99.990% and 99.999% (so the mean
# confidence per day spans less than a hundredth of a point), and a failed run with a long error path.
SEED = f"""
import datetime
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from classifier.models import ModelVersion, Prediction
from training.models import TrainingRun
call_command("migrate", interactive=False, verbosity=0)
get_user_model().objects.create_superuser({STAFF[0]!r}, "edges@example.com", {STAFF[1]!r})
version = ModelVersion.objects.active().first()
now = timezone.now()
rows = []
for i in range(130):
    confidence = 0.9999 + (i % 10) * 0.000001
    probabilities = [(1 - confidence) / 9] * 10
    probabilities[3] = confidence
    rows.append(Prediction(image="drawings/seed.png", input_pixels=bytes(784), probabilities=probabilities, digit=3,
                           confidence=confidence, model_version=version, latency_ms=1.0,
                           label=3 if i % 7 else 5, input_sha256=str(i)))
created = Prediction.objects.bulk_create(rows)
for i, p in enumerate(created):
    Prediction.objects.filter(pk=p.pk).update(created_at=now - datetime.timedelta(days=2 - i // 50, minutes=130 - i))
finished = now
run = TrainingRun.objects.create(
    config={{"arch": "mlp", "epochs": 1, "lr": 0.003, "train": {{"batch_size": 128}}}}, executor="thread",
    status="failed", total_epochs=1, epoch=1, step=70, total_steps=140, progress=0.5,
    started_at=finished - datetime.timedelta(seconds=42), finished_at=finished, error={LONG_ERROR!r},
)
print(run.pk)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """A fresh site served as `make run` serves it, seeded as above; its URL and the failed run's id. The MNIST
    test set comes from MNIST_ROOT when set (the random-digit test needs it)."""
    root = tmp_path_factory.mktemp("edges-site")
    (root / "static").mkdir()
    env = site_env(DATABASE_URL=f"sqlite:///{root / 'db.sqlite3'}", MEDIA_ROOT=str(root / "media"),
                   STATIC_ROOT=str(root / "static"), MNIST_ROOT=os.environ.get("MNIST_ROOT") or str(root / "none"))
    run_id = int(manage("shell", "-c", SEED, env=env).stdout.split()[-1])
    with daphne(env=env, log_path=root / "daphne.log") as served:
        yield served.url, run_id


def _page(browser, site, viewport, *, staff: bool = False, touch: bool = False) -> Page:
    extra = {"has_touch": True, "is_mobile": True, "device_scale_factor": 2} if touch else {}
    page = _new_page(browser, site[0], viewport=viewport, **extra)
    if staff:
        sign_in(page, *STAFF)
    return page


@pytest.fixture
def staff_desktop(browser, site) -> Iterator[Page]:
    page = _page(browser, site, DESKTOP, staff=True)
    yield page
    page.context.close()


@pytest.fixture
def staff_phone(browser, site) -> Iterator[Page]:
    page = _page(browser, site, PHONE, staff=True, touch=True)
    yield page
    page.context.close()


@pytest.fixture
def visitor_phone(browser, site) -> Iterator[Page]:
    page = _page(browser, site, PHONE, touch=True)
    yield page
    page.context.close()


@pytest.fixture
def visitor_desktop(browser, site) -> Iterator[Page]:
    page = _page(browser, site, DESKTOP)
    yield page
    page.context.close()


def assert_no_sideways_scroll(page: Page) -> None:
    width = page.viewport_size["width"]
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    wide = page.evaluate(f"""() => [...document.querySelectorAll("body *")]
        .filter(el => el.getBoundingClientRect().right > {width} && !el.closest(".table-scroll, .site-nav, pre"))
        .slice(0, 5).map(el => el.tagName + "." + el.className)""")
    assert scroll_width <= width, (scroll_width, wide)


def assert_in_viewport(page: Page, locator) -> None:
    """The element is shown and wholly inside the window (after any scrolling that is still going on)."""
    expect(locator).to_be_visible()
    page.wait_for_function("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    page.wait_for_function(
        """el => { const box = el.getBoundingClientRect();
                   return box.top >= 0 && box.bottom <= window.innerHeight && box.left >= 0
                          && box.right <= window.innerWidth; }""",
        arg=locator.element_handle(), timeout=5_000)


# ------------------------------------------------------------------ 6. the stats page's charts


def chart(page: Page, test_id: str, script: str):
    handle = page.get_by_test_id(test_id).element_handle()
    return page.evaluate(f"canvas => {{ const chart = Chart.getChart(canvas); {script} }}", handle)


def test_the_mean_confidence_ticks_differ_and_the_last_point_is_drawn_whole(staff_desktop: Page):
    page = staff_desktop
    page.goto("/stats/")
    expect(page.get_by_test_id("quality-confidence-chart")).to_be_visible()
    labels = chart(page, "quality-confidence-chart", "return chart.scales.y.ticks.map(t => t.label);")
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert all(label.endswith("%") for label in labels), labels
    accuracy = chart(page, "quality-accuracy-chart", "return chart.scales.y.ticks.map(t => t.label);")
    assert len(set(accuracy)) == len(accuracy), accuracy

    # Accuracy per 100 labelled drawings: one full bucket, then a hollow one ending at the last drawing (130).
    last = chart(page, "quality-drawings-chart", """
        const meta = chart.getDatasetMeta(0), point = meta.data[meta.data.length - 1];
        const options = point.options;
        return {x: point.x, radius: options.radius + options.borderWidth, right: chart.chartArea.right,
                value: meta._parsed[meta._parsed.length - 1].x, max: chart.scales.x.max, width: chart.width};""")
    assert last["value"] == 130 and last["max"] > 130, last
    assert last["x"] + last["radius"] <= last["right"], last
    assert page.js_errors == []


# ------------------------------------------------------------------ 7. phones and the fold


def test_a_failed_runs_long_error_wraps_on_a_phone(staff_phone: Page, site):
    page = staff_phone
    page.goto(f"/dashboard/?run={site[1]}")
    expect(page.get_by_test_id("run-error")).to_contain_text("No space left on device")
    assert_no_sideways_scroll(page)
    assert page.js_errors == []


def test_on_a_phone_predict_brings_the_answer_and_its_buttons_into_view(visitor_phone: Page):
    page = visitor_phone
    page.goto("/")
    draw_with_touch(page, SEVEN)
    expect(page.get_by_test_id("quick-digit")).to_have_text("7")
    assert page.evaluate("window.scrollY") == 0  # drawing alone never scrolls the canvas away
    page.get_by_test_id("predict").click()
    expect(page.get_by_test_id("feedback")).to_be_visible()
    assert_in_viewport(page, page.get_by_test_id("prediction"))
    assert_in_viewport(page, page.get_by_test_id("feedback-right"))
    assert_in_viewport(page, page.get_by_test_id("label-9"))
    assert_no_sideways_scroll(page)
    assert page.js_errors == []


def test_on_a_phone_the_random_mnist_digit_shows_with_its_true_label(visitor_phone: Page, mnist_root: Path):
    page = visitor_phone
    page.goto("/")
    page.get_by_test_id("random-digit").click()
    expect(page.get_by_test_id("random-info")).to_contain_text("true label")
    assert_in_viewport(page, page.get_by_test_id("random-info"))
    assert_in_viewport(page, page.get_by_test_id("preprocessed"))
    assert_in_viewport(page, page.get_by_test_id("prediction"))
    assert_no_sideways_scroll(page)
    assert page.js_errors == []


def test_at_1280_compare_all_models_brings_its_results_into_view(visitor_desktop: Page):
    page = visitor_desktop
    page.goto("/")
    draw_with_mouse(page, SEVEN)
    expect(page.get_by_test_id("prediction")).to_have_text("7")
    page.get_by_test_id("compare-toggle").check()
    expect(page.get_by_test_id("compare-card").first).to_be_visible()
    assert_in_viewport(page, page.locator("#compare-heading"))
    assert_in_viewport(page, page.get_by_test_id("compare-card").first)
    assert_no_sideways_scroll(page)
    assert page.js_errors == []


# ------------------------------------------------------------------ 8. the review queue's keys and articles


def test_the_review_keys_read_and_sound_right(staff_desktop: Page):
    page = staff_desktop
    page.goto("/review/")
    skip = page.get_by_role("button", name="Skip", exact=True)
    not_a_digit = page.get_by_role("button", name="Not a digit", exact=True)
    for button, key in ((skip, "s"), (not_a_digit, "x")):
        expect(button).to_have_attribute("aria-keyshortcuts", key)
        hint = button.locator("kbd")
        expect(hint).to_have_attribute("aria-hidden", "true")
        expect(hint).to_have_text(key)
        style = hint.evaluate("el => { const s = getComputedStyle(el); return [s.borderTopWidth, s.paddingLeft]; }")
        assert style != ["0px", "0px"], style  # a key cap of its own, not bare text
        gap = button.evaluate("""el => { const kbd = el.querySelector('kbd').getBoundingClientRect();
            const range = document.createRange(); range.selectNodeContents(el.querySelector('.key-label'));
            return range.getBoundingClientRect().left - kbd.right; }""")
        assert gap >= 4, gap  # "s skip", not "sskip"
    assert page.js_errors == []


def test_the_drawing_pages_label_buttons_say_an_8(visitor_desktop: Page):
    page = visitor_desktop
    page.goto("/")
    draw_with_mouse(page, SEVEN)
    expect(page.get_by_test_id("feedback")).to_be_visible()
    expect(page.get_by_role("button", name="It was an 8", exact=True)).to_have_count(1)
    expect(page.get_by_role("button", name="It was a 7", exact=True)).to_have_count(1)
    expect(page.get_by_role("button", name="It was a 8", exact=True)).to_have_count(0)
    page.get_by_role("button", name="It was an 8", exact=True).click()
    expect(page.get_by_test_id("feedback-status")).to_have_text("Thanks! Recorded: it was an 8.")
    assert page.js_errors == []
