"""The API token page in Chromium: someone who is not staff signs in, creates a token (shown once, copied
with the button), sees it masked afterwards, uses it, replaces and revokes it, and signs out."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.browser.conftest import VISITOR, _new_page, sign_in  # noqa: E402


def api_status(site_url: str, key: str) -> int:
    """GET /api/stats/ (staff only) with ``key``: 403 for a valid token of someone who is not staff,
    401 for a key that is refused."""
    request = urllib.request.Request(f"{site_url}/api/stats/", headers={"Authorization": f"Token {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def desktop(browser, seeded_site):
    page = _new_page(browser, seeded_site.url, viewport={"width": 1100, "height": 900})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=seeded_site.url)
    yield page
    page.context.close()


def test_create_copy_see_masked_and_revoke_a_token(desktop: Page, seeded_site):
    page = desktop
    page.goto("/account/token/")
    expect(page).to_have_url(re.compile(r"/account/login/\?next=/account/token/$"))  # signed-in users only

    sign_in(page, *VISITOR)
    page.get_by_test_id("site-nav").get_by_role("link", name="API token").click()
    expect(page.get_by_test_id("token-none")).to_be_visible()

    page.get_by_test_id("token-create").click()
    key = page.get_by_test_id("token-key").input_value()
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    page.get_by_test_id("token-copy").click()
    expect(page.get_by_test_id("copy-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == key
    # The key works: the API knows who calls (not staff, so the staff-only statistics are refused with 403).
    assert api_status(seeded_site.url, key) == 403

    page.goto("/account/token/")  # shown once: afterwards only its first characters
    expect(page.get_by_test_id("token-masked")).to_have_text(re.compile(rf"^{key[:4]}•+$"))
    assert key not in page.content()
    expect(page.get_by_test_id("token-key")).to_have_count(0)

    page.get_by_test_id("token-replace").click()
    new_key = page.get_by_test_id("token-key").input_value()
    assert new_key != key
    assert api_status(seeded_site.url, key) == 401  # the old one stopped working
    assert api_status(seeded_site.url, new_key) == 403

    page.goto("/account/token/")
    page.get_by_test_id("token-revoke").click()
    expect(page.get_by_test_id("token-revoked")).to_be_visible()
    expect(page.get_by_test_id("token-none")).to_be_visible()
    assert api_status(seeded_site.url, new_key) == 401

    page.get_by_role("button", name="Log out").click()  # people who are not staff can sign out too
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    expect(page.get_by_test_id("site-nav").get_by_role("link", name="API token")).to_have_count(0)
    assert page.js_errors == []


def test_the_token_api_answers_in_the_error_shape(seeded_site):
    def post(body: dict) -> tuple[int, dict, str]:
        request = urllib.request.Request(f"{seeded_site.url}/api/token/", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.load(answer), answer.reason
        except urllib.error.HTTPError as error:
            return error.code, json.load(error), error.reason

    status, body, _ = post({"username": VISITOR[0], "password": "wrong"})
    assert status == 400 and body["error"]["code"] == "invalid_credentials"
    status, body, _ = post({"username": VISITOR[0], "password": VISITOR[1]})
    assert status == 201 and api_status(seeded_site.url, body["token"]) == 403
