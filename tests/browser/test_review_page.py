"""The review queue in Chromium: staff label a drawing with one key and the next one shows without a
page load; `s` skips, `x` marks "not a digit"; the counts follow."""
from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.browser.conftest import _new_page, sign_in  # noqa: E402
from tests.dashboard.servers import daphne, manage, site_env  # noqa: E402
from tests.support.drawings import ONE, SEVEN, ZERO, canvas, encode  # noqa: E402

REVIEWER = ("reviewer", "pw-reviewer-123")
SEED = f"""
from django.contrib.auth import get_user_model
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
get_user_model().objects.create_superuser({REVIEWER[0]!r}, "reviewer@example.com", {REVIEWER[1]!r})
"""


@pytest.fixture(scope="module")
def review_site(tmp_path_factory) -> Iterator[tuple[str, list[int]]]:
    """A fresh site with a staff account and four unlabelled drawings predicted through the API."""
    root = tmp_path_factory.mktemp("review-site")
    (root / "static").mkdir()
    env = site_env(DATABASE_URL=f"sqlite:///{root / 'db.sqlite3'}", MEDIA_ROOT=str(root / "media"),
                   STATIC_ROOT=str(root / "static"), MNIST_ROOT=str(root / "no-mnist"))
    manage("shell", "-c", SEED, env=env)
    with daphne(env=env, log_path=root / "daphne.log") as site:
        ids = []
        for shape in (SEVEN, ONE, ZERO, SEVEN):
            request = urllib.request.Request(
                f"{site.url}/api/predict/", data=json.dumps({"image": encode(canvas(shape))}).encode(),
                headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                ids.append(json.load(response)["id"])
        yield site.url, ids
        assert site.log_problems() == []


@pytest.fixture
def reviewer(browser, review_site) -> Iterator[Page]:
    page = _new_page(browser, review_site[0], viewport={"width": 1100, "height": 900})
    sign_in(page, *REVIEWER)
    yield page
    page.context.close()


def shown_id(page: Page) -> str:
    return page.get_by_test_id("review-id").inner_text()


def test_one_key_labels_a_drawing_and_the_next_shows_without_a_page_load(reviewer: Page, review_site):
    _, ids = review_site
    page = reviewer
    page.get_by_test_id("site-nav").get_by_role("link", name="Review").click()
    expect(page.get_by_test_id("review-image")).to_be_visible()
    expect(page.get_by_test_id("count-left")).to_have_text("4")
    expect(page.get_by_test_id("review-top3").locator("li")).to_have_count(3)
    assert page.get_by_test_id("review-input").get_attribute("src").startswith("data:image/png;base64,")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads or navigates
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    first = shown_id(page)
    assert int(first) in ids
    with page.expect_response(lambda r: r.url.endswith(f"/api/review/{first}/label/") and r.status == 200):
        page.keyboard.press("7")
    expect(page.get_by_test_id("review-id")).not_to_have_text(first)
    second = shown_id(page)
    assert int(second) in ids and second != first
    expect(page.get_by_test_id("review-status")).to_have_text(f"Drawing {first} labelled 7.")
    expect(page.get_by_test_id("count-left")).to_have_text("3")

    page.keyboard.press("s")  # skip: nothing is sent, the next one shows
    expect(page.get_by_test_id("review-id")).not_to_have_text(second)
    third = shown_id(page)
    with page.expect_response(lambda r: r.url.endswith(f"/api/review/{third}/label/") and r.status == 200):
        page.keyboard.press("x")
    expect(page.get_by_test_id("review-status")).to_have_text(f"Drawing {third}: not a digit.")
    expect(page.get_by_test_id("count-left")).to_have_text("2")  # the skipped one is still left

    assert page.evaluate("window.__sameDocument") is True
    assert navigations == []
    assert page.js_errors == []

    # What the server recorded, through the staff API with this session.
    labelled = page.request.get("/api/predictions/?labelled=true").json()["results"]
    assert [(row["id"], row["label"]) for row in labelled] == [(int(first), 7)]


def test_the_last_drawing_leaves_an_empty_queue(reviewer: Page):
    page = reviewer
    page.goto("/review/")
    left = int(page.get_by_test_id("count-left").inner_text())
    for _ in range(left):
        # The drawing is fetched after the page loads: a key pressed before it shows labels nothing.
        expect(page.get_by_test_id("review-id")).to_have_text(re.compile(r"^\d+$"))
        current = shown_id(page)
        with page.expect_response(lambda r: "/label/" in r.url and r.status == 200):
            page.get_by_test_id("key-1").click()  # the on-screen keys work like the keyboard
        expect(page.get_by_test_id("review-id")).not_to_have_text(current)
    expect(page.get_by_test_id("review-empty")).to_be_visible()
    expect(page.get_by_test_id("count-left")).to_have_text("0")
    assert page.js_errors == []
