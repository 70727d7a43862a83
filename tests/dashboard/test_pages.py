"""The dashboard page: public, staff-only controls, the run picked first, vendored charts, no CDN, the
start form built from the run spec, a finished run's confusion matrix as the site's one table."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

from dashboard import selectors
from tests.support.registry import fake_version
from training.spec import run_options

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


def test_the_start_form_is_built_from_the_run_spec(client, staff_user):
    client.force_login(staff_user)
    page = client.get(URL).content.decode()
    more = page[page.index('<details class="more-options">'):page.index("</details>")]
    shown = [option for option in run_options() if option.dashboard]
    assert {option.dashboard for option in shown} == {"main", "more"}
    for option in shown:
        tag = re.search(rf'<(?:input|select)[^>]*\bname="{option.name}"[^>]*>', page)
        assert tag, option.name
        assert f'data-kind="{option.kind}"' in tag.group(0)
        assert (tag.group(0) in more) == (option.dashboard == "more"), option.name
        if option.kind == "int":
            assert f'min="{option.minimum:g}"' in tag.group(0) and f'max="{int(option.maximum)}"' in tag.group(0)
    hidden = [option.name for option in run_options() if not option.dashboard]
    assert not any(re.search(rf'\bname="{name}"', page) for name in hidden)
    assert 'min="0.0000001"' in page  # the learning rate's bound, written as HTML numbers are
    recipes = {arch["name"]: arch["recipe"] for arch in initial_data(client.get(URL))["architectures"]}
    assert recipes["logreg"]["epochs"] == 10 and recipes["logreg"]["lr"] == 0.01


def test_a_finished_runs_state_carries_its_confusion_matrix_rendered():
    matrix = [[98 if t == p else (2 if (t, p) == (4, 9) else 0) for p in range(10)] for t in range(10)]
    run = make_run(status="succeeded", metrics={"test_accuracy": 0.98, "confusion_matrix": matrix})
    html = selectors.run_state(run.pk, staff=False)["confusion_html"]
    assert html.count('<td class="cm-hit') == 10 and html.count('<td class="cm-miss') == 90
    assert 'data-testid="confusion-matrix" data-rows="10"' in html
    assert 'title="true 4, predicted 9: 2 (2.0% of the row)"' in html
    assert selectors.run_state(make_run(status="running").pk, staff=False)["confusion_html"] == ""
