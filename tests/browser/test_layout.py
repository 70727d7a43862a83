"""Layout in Chromium: on a phone (375 x 740) the navigation is one line, the answer shows under the canvas
without scrolling, and no page scrolls sideways (wide tables scroll inside their own box); links and
messages fit who is looking; the admin's model-version list at 1280 px."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.browser.conftest import PHONE, STAFF, VISITOR, _new_page, sign_in  # noqa: E402
from tests.browser.test_draw_page import draw_with_mouse, draw_with_touch  # noqa: E402
from tests.support.drawings import ONE, SEVEN  # noqa: E402

MNIST_MISSING = "The MNIST test set is not available on this server."


def page_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def assert_no_sideways_scroll(page: Page) -> None:
    wide = page.evaluate(f"""() => [...document.querySelectorAll("body *")]
        .filter(el => el.getBoundingClientRect().right > {PHONE['width']} && !el.closest(".table-scroll, .site-nav, pre"))
        .slice(0, 5).map(el => el.tagName + "." + el.className)""")
    assert page_width(page) <= PHONE["width"], wide


def assert_nav_on_one_line(page: Page) -> None:
    nav = page.get_by_test_id("site-nav")
    links = nav.locator("a")
    boxes = [links.nth(i).bounding_box() for i in range(links.count())]
    assert len({round(box["y"]) for box in boxes}) == 1, boxes
    assert nav.bounding_box()["height"] < 1.5 * max(box["height"] for box in boxes)


def assert_in_view(page: Page, test_id: str) -> None:
    box = page.get_by_test_id(test_id).bounding_box()
    assert box is not None, f"{test_id} is not shown"
    assert 0 <= box["y"] and box["y"] + box["height"] <= PHONE["height"], box


# ------------------------------------------------------------------ phones


@pytest.mark.parametrize("draw", [draw_with_touch, draw_with_mouse], ids=["touch", "mouse"])
def test_on_a_phone_the_answer_shows_next_to_the_canvas_without_scrolling(phone: Page, draw):
    phone.goto("/")
    assert_nav_on_one_line(phone)

    draw(phone, SEVEN)

    expect(phone.get_by_test_id("quick-digit")).to_have_text("7")
    expect(phone.get_by_test_id("quick-confidence")).to_have_text(re.compile(r"^\d+% confident$"))
    expect(phone.get_by_test_id("quick-confidence")).to_have_text(phone.get_by_test_id("confidence").inner_text())
    assert phone.evaluate("window.scrollY") == 0
    assert_in_view(phone, "quick-digit")
    assert_in_view(phone, "quick-confidence")
    assert_no_sideways_scroll(phone)

    phone.get_by_test_id("clear").click()
    expect(phone.get_by_test_id("quick-digit")).to_have_text("")
    draw(phone, ONE)
    expect(phone.get_by_test_id("quick-digit")).to_have_text("1")
    assert phone.js_errors == []


def test_on_a_phone_no_page_scrolls_sideways_and_the_nav_is_one_line(staff_phone: Page, seeded_site):
    page = staff_phone
    page.goto("/")
    assert_nav_on_one_line(page)
    assert_no_sideways_scroll(page)

    page.goto(f"/dashboard/?run={seeded_site.run_id}")
    matrix = page.get_by_test_id("confusion-matrix")
    expect(matrix).to_have_attribute("data-rows", "10")
    assert matrix.bounding_box()["width"] > PHONE["width"] - 40  # wider than its panel: it scrolls in its box
    assert_nav_on_one_line(page)
    assert_no_sideways_scroll(page)

    page.goto("/stats/")
    expect(page.get_by_test_id("per-version")).to_be_visible()
    assert_nav_on_one_line(page)
    assert_no_sideways_scroll(page)

    page.goto("/account/token/")
    page.get_by_test_id("token-create").click()
    expect(page.get_by_test_id("token-key")).to_be_visible()
    assert_nav_on_one_line(page)
    assert_no_sideways_scroll(page)
    assert page.js_errors == []


# ------------------------------------------------------------------ who sees what


def test_the_stats_link_is_for_staff_only(phone: Page):
    phone.goto("/")
    nav = phone.get_by_test_id("site-nav")
    expect(nav.get_by_role("link", name="Stats")).to_have_count(0)
    expect(nav.get_by_role("link", name="API token")).to_have_count(0)

    sign_in(phone, *VISITOR)
    expect(nav.get_by_role("link", name="Stats")).to_have_count(0)
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    expect(nav.get_by_role("link", name="API token")).to_have_count(1)

    phone.context.clear_cookies()
    sign_in(phone, *STAFF)
    nav.get_by_role("link", name="Stats").click()
    expect(phone).to_have_url(re.compile(r"/stats/$"))
    expect(phone.get_by_test_id("stat-total")).to_be_visible()


def test_without_mnist_visitors_get_a_short_message_and_staff_the_fix(phone: Page):
    phone.goto("/")
    with phone.expect_response("**/api/mnist/random/") as answer:
        phone.get_by_test_id("random-digit").click()
    assert answer.value.status == 503
    expect(phone.get_by_test_id("error-message")).to_have_text(MNIST_MISSING)

    sign_in(phone, *STAFF)
    with phone.expect_response("**/api/mnist/random/"):
        phone.get_by_test_id("random-digit").click()
    message = phone.get_by_test_id("error-message")
    expect(message).to_contain_text(MNIST_MISSING)
    expect(message).to_contain_text("python manage.py fetch_mnist")
    expect(message).to_contain_text("MNIST_ROOT")
    assert phone.js_errors == []


# ------------------------------------------------------------------ the admin at 1280 px


def test_the_model_version_list_fits_at_1280_px(browser, seeded_site):
    page = _new_page(browser, seeded_site.url, viewport={"width": 1280, "height": 900})
    page.goto("/admin/login/?next=/admin/classifier/modelversion/")
    page.fill("#id_username", STAFF[0])
    page.fill("#id_password", STAFF[1])
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/classifier/modelversion/$"))

    title = page.locator("#content h1").bounding_box()
    for tool in page.locator(".object-tools a").all():
        box = tool.bounding_box()
        overlaps = box["y"] < title["y"] + title["height"] and title["y"] < box["y"] + box["height"]
        assert not overlaps, (title, box)
    expect(page.locator("#content h1")).to_have_text("Select model version to change")
    results = page.locator("#changelist .results")
    assert results.evaluate("el => el.scrollWidth <= el.clientWidth"), results.evaluate(
        "el => [el.scrollWidth, el.clientWidth]")
    expect(page.locator("#changelist thead th").last).to_be_in_viewport()
    page.context.close()
