"""The dashboard's start form when the queue is full for this user: the API's 409 ``too_many_runs``
message is shown under the form, naming the run that waits, and no run is started."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

from tests.dashboard.servers import daphne, manage, site_env  # noqa: E402

STAFF = ("queue-staff", "pw-queue-staff-123")
SETUP = f"""
from django.contrib.auth import get_user_model
from django.core.management import call_command
from training.models import TrainingRun
call_command("migrate", interactive=False, verbosity=0)
staff = get_user_model().objects.create_superuser({STAFF[0]!r}, "staff@example.com", {STAFF[1]!r})
run = TrainingRun.objects.create(config={{"arch": "logreg", "epochs": 1}}, executor="thread", created_by=staff)
print(run.pk)
"""


def test_the_start_form_shows_the_refusal(browser, tmp_path):
    env = site_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", MEDIA_ROOT=str(tmp_path / "media"),
                   STATIC_ROOT=str(tmp_path / "static"), TRAINING_MAX_QUEUED_PER_USER="1")
    waiting = int(manage("shell", "-c", SETUP, env=env).stdout.split()[-1])  # queued, never handed to a worker
    with daphne(env=env, log_path=tmp_path / "daphne.log") as site:
        context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(15_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/admin/login/?next=/dashboard/")
        page.fill("#id_username", STAFF[0])
        page.fill("#id_password", STAFF[1])
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"/dashboard/"))

        form = page.get_by_test_id("start-form")
        form.locator("select[name=arch]").select_option("logreg")
        form.locator("input[name=epochs]").fill("1")
        with page.expect_response("**/api/retrain/") as answer:
            page.get_by_test_id("start-run").click()
        assert answer.value.status == 409

        status = page.get_by_test_id("start-status")
        expect(status).to_have_text(
            f"You already have 1 run queued or running (#{waiting} queued); at most 1 per person "
            "(TRAINING_MAX_QUEUED_PER_USER). Wait for one to finish or cancel one.")
        expect(status).to_have_class(re.compile(r"\berror\b"))
        assert errors == []
        context.close()
