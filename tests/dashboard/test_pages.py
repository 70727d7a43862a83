"""The dashboard page: public, staff-only controls, the run picked first, vendored charts, no CDN."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

from tests.support.registry import fake_version

from .conftest import make_run

pytestmark = pytest.mark.django_db

URL = "/dashboard/"


def initial_data(response) -> dict:
    match = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', response.content.decode(), re.S)
    assert match, "the page carries its initial data"
    return json.loads(match.group(1))


def test_anyone_may_watch_but_only_staff_get_the_controls(client, user, staff_user):
    run = make_run(status="running", created_by=staff_user, log="started\n")
    anonymous = client.get(URL)
    assert anonymous.status_code == 200
    page = anonymous.content.decode()
    for hook in ("run-list", "loss-chart", "accuracy-chart", "lr-chart", "progress-bar", "run-status", "eta",
                 "confusion-matrix", "compare-select"):
        assert f'data-testid="{hook}"' in page, hook
    assert 'data-testid="start-form"' not in page and 'data-testid="cancel-run"' not in page
    data = initial_data(anonymous)
    assert data["staff"] is False and data["selected"] == run.pk and data["follow"] is True
    assert data["runs"][0]["id"] == run.pk and "created_by" not in data["runs"][0]
    assert "architectures" not in data and data["admin_version"] is None
    assert "csrftoken" in anonymous.cookies

    client.force_login(user)
    assert 'data-testid="start-form"' not in client.get(URL).content.decode()

    client.force_login(staff_user)
    staff = client.get(URL)
    page = staff.content.decode()
    assert 'data-testid="start-form"' in page and 'data-testid="cancel-run"' in page and 'data-testid="start-run"' in page
    data = initial_data(staff)
    assert data["staff"] is True and data["runs"][0]["created_by"] == "staff"
    assert {a["name"] for a in data["architectures"]} == {"logreg", "mlp", "lenet5", "cnn"}
    assert data["api"] == {"retrain": "/api/retrain/", "cancel": "/api/runs/{id}/cancel/"}
    assert data["admin_version"] == "/admin/classifier/modelversion/{id}/change/"


def test_the_current_run_is_selected_unless_one_is_asked_for(client):
    assert initial_data(client.get(URL))["selected"] is None  # no runs yet
    finished = make_run(status="succeeded")
    newest = make_run(status="failed")
    assert initial_data(client.get(URL))["selected"] == newest.pk
    running = make_run(status="running")
    make_run(status="queued")
    assert initial_data(client.get(URL))["selected"] == running.pk

    pinned = initial_data(client.get(URL, {"run": finished.pk}))
    assert pinned["selected"] == finished.pk and pinned["follow"] is False
    assert initial_data(client.get(URL, {"run": "nonsense"}))["selected"] is None

    version = fake_version("made-by-a-run")
    finished.result_version = version
    finished.save()
    assert initial_data(client.get(URL, {"version": version.pk}))["selected"] == finished.pk
    assert initial_data(client.get(URL, {"version": 10**12}))["selected"] is None


def test_the_page_is_linked_from_the_drawing_page(client):
    assert 'href="/dashboard/"' in client.get("/").content.decode()


def test_charts_come_from_the_vendored_library_and_nothing_from_a_cdn(client):
    page = client.get(URL).content.decode()
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert "/static/dashboard/vendor/chartjs/chart.umd.min.js" in scripts
    assert all(src.startswith("/static/") for src in scripts)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    library = Path(finders.find("dashboard/vendor/chartjs/chart.umd.min.js"))
    assert library.read_text()[:200].count("Chart.js v4.") == 1
    licence = library.with_name("LICENSE.md").read_text()
    assert "MIT License" in licence and "Chart.js Contributors" in licence
    script = Path(finders.find("dashboard/dashboard.js")).read_text()
    assert "http://" not in script and "https://" not in script
