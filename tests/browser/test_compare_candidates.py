"""Compare in Chromium: a fresh candidate (shown to staff only) is marked as a candidate on its card;
vetted versions (active once, or shipped with the code) and everything a visitor sees are not."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.support.drawings import SEVEN  # noqa: E402

from .conftest import _new_page, sign_in  # noqa: E402
from .test_draw_page import draw_and_wait  # noqa: E402

STAFF = ("compare-staff", "pw-compare-staff-123")
VISITOR = ("compare-visitor", "pw-compare-visitor-123")
SEED = f"""
from django.contrib.auth import get_user_model
from django.core.management import call_command
from classifier.models import ModelVersion
call_command("migrate", interactive=False, verbosity=0)
User = get_user_model()
User.objects.create_superuser({STAFF[0]!r}, "staff@example.com", {STAFF[1]!r})
User.objects.create_user({VISITOR[0]!r}, "visitor@example.com", {VISITOR[1]!r})
shipped = ModelVersion.objects.get(name="lenet5")
fresh = ModelVersion.objects.create(name="lenet5-quick", version=1, arch="lenet5", checkpoint=shipped.checkpoint.name,
                                    sha256=shipped.sha256, test_accuracy=0.89, status="candidate")
print(fresh.pk)
"""


@dataclass
class CompareSite:
    url: str
    candidate_id: int


@pytest.fixture(scope="module")
def compare_site(tmp_path_factory) -> Iterator[CompareSite]:
    """A fresh site served by Daphne with a staff account, a visitor and a fresh lenet5 candidate."""
    from tests.dashboard.servers import daphne, manage, site_env

    root = tmp_path_factory.mktemp("compare-site")
    (root / "static").mkdir()
    env = site_env(DATABASE_URL=f"sqlite:///{root / 'db.sqlite3'}", MEDIA_ROOT=str(root / "media"),
                   STATIC_ROOT=str(root / "static"), PREDICT_THROTTLE="off")
    candidate_id = int(manage("shell", "-c", SEED, env=env).stdout.split()[-1])
    with daphne(env=env, log_path=root / "daphne.log") as site:
        yield CompareSite(url=site.url, candidate_id=candidate_id)


@pytest.fixture
def desk(browser, compare_site) -> Iterator[Page]:
    page = _new_page(browser, compare_site.url, viewport={"width": 1100, "height": 900})
    yield page
    page.context.close()


def compare_cards(page: Page) -> dict[str, dict]:
    """What each compare card shows: its heading, whether it is marked a candidate, and its badge."""
    page.get_by_test_id("compare-toggle").check()
    draw_and_wait(page, SEVEN, "7")
    expect(page.get_by_test_id("compare")).to_be_visible()
    cards = page.get_by_test_id("compare-card")
    expect(cards.first).to_be_visible()
    shown = {}
    for i in range(cards.count()):
        card = cards.nth(i)
        heading = card.locator("h3").inner_text()
        shown[heading.split(" ")[0]] = {
            "heading": heading,
            "candidate_class": "candidate" in (card.get_attribute("class") or "").split(),
            "badge": card.get_by_test_id("compare-candidate").all_inner_texts(),
        }
    return shown


def test_staff_see_the_fresh_candidate_marked_as_a_candidate(desk: Page):
    sign_in(desk, *STAFF)
    cards = compare_cards(desk)

    quick = cards["lenet5-quick"]
    assert quick["candidate_class"] and "candidate" in quick["heading"]
    assert quick["badge"] and "Candidate" in quick["badge"][0]
    badge = desk.get_by_test_id("compare-candidate")
    expect(badge).to_have_count(1)
    expect(badge).to_be_visible()
    # The shipped lenet5 (status "candidate" in the registry, but vetted) and the others are not marked.
    for name in ("cnn", "lenet5", "mlp", "logreg"):
        assert not cards[name]["candidate_class"] and not cards[name]["badge"], cards[name]
        assert "candidate" not in cards[name]["heading"]
    assert "serving" in cards["cnn"]["heading"]
    assert desk.js_errors == []


def test_visitors_see_no_candidate(desk: Page):
    sign_in(desk, *VISITOR)
    cards = compare_cards(desk)

    assert "lenet5-quick" not in cards and set(cards) == {"cnn", "lenet5", "mlp", "logreg"}
    expect(desk.get_by_test_id("compare-candidate")).to_have_count(0)
    assert desk.js_errors == []
