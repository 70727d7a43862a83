"""Quality over time: the selector's numbers on a small fixture, and the statistics page's chart and warning."""
from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from classifier.models import LifecycleEvent, ModelVersion, Prediction
from classifier.quality import quality_checks, quality_over_time

pytestmark = pytest.mark.django_db

TODAY = dt.date(2025, 3, 10)


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour)))


def version(name: str, *, field_accuracy: float | None, status: str = "candidate") -> ModelVersion:
    metrics = {} if field_accuracy is None else {"field_accuracy": field_accuracy, "field_n": 200}
    return ModelVersion.objects.create(name=name, version=1, arch="cnn", checkpoint=f"checkpoints/{name}.pt",
                                       sha256=name.ljust(64, "0"), metrics=metrics, status=status)


def predict(v: ModelVersion, *, day: dt.date, digit: int, confidence: float, label: int | None = None,
            labelled_hour: int | None = None) -> Prediction:
    p = Prediction.objects.create(
        image=f"drawings/q-{v.pk}.png", input_pixels=bytes(784), probabilities=[0.1] * 10, digit=digit,
        confidence=confidence, model_version=v, latency_ms=1.0, label=label,
    )
    # created_at is set on insert; move it to the day the test needs
    labelled_at = at(day, labelled_hour) if label is not None and labelled_hour is not None else None
    Prediction.objects.filter(pk=p.pk).update(created_at=at(day), labelled_at=labelled_at)
    return p


@pytest.fixture
def history():
    """Two versions over three days; v2 is promoted on day 2."""
    old = version("q-old", field_accuracy=0.95)
    new = version("q-new", field_accuracy=0.98)
    d0, d1, d2 = TODAY - dt.timedelta(days=2), TODAY - dt.timedelta(days=1), TODAY
    # day 0: old answers 4 labelled (3 right) and one unlabelled
    predict(old, day=d0, digit=1, confidence=0.99, label=1)
    predict(old, day=d0, digit=2, confidence=0.95, label=2)
    predict(old, day=d0, digit=3, confidence=0.55, label=3)
    predict(old, day=d0, digit=4, confidence=0.45, label=9)
    predict(old, day=d0, digit=5, confidence=0.06)
    # day 1: old, 2 labelled, both wrong
    predict(old, day=d1, digit=7, confidence=0.5, label=1)
    predict(old, day=d1, digit=8, confidence=0.7, label=3)
    # day 2: new, 2 labelled, both right, confidence exactly 1.0 in the last bin
    predict(new, day=d2, digit=0, confidence=1.0, label=0)
    predict(new, day=d2, digit=6, confidence=0.9, label=6)
    event = LifecycleEvent.objects.create(action="promote", from_version=old, to_version=new, reason="gate")
    LifecycleEvent.objects.filter(pk=event.pk).update(at=at(d2, 9))
    LifecycleEvent.objects.create(action="register", to_version=new, reason="not a switch")
    return old, new


def test_quality_over_time_per_day_and_version(history):
    old, new = history
    q = quality_over_time(days=30, today=TODAY)

    assert q["days"] == ["2025-03-08", "2025-03-09", "2025-03-10"]  # from the first day with data
    by_label = {s["label"]: s for s in q["versions"]}
    o, n = by_label["q-old v1"], by_label["q-new v1"]
    assert o["labelled"] == [4, 2, 0] and o["correct"] == [3, 0, 0] and o["predictions"] == [5, 2, 0]
    assert o["accuracy"] == [0.75, 0.0, None]
    assert o["mean_confidence"][0] == pytest.approx((0.99 + 0.95 + 0.55 + 0.45 + 0.06) / 5)
    assert o["mean_confidence"][1] == pytest.approx(0.6) and o["mean_confidence"][2] is None
    assert o["confidence_histogram"] == [1, 0, 0, 0, 1, 2, 0, 1, 0, 2]  # 0.5 falls in the 50-60% bin
    assert n["accuracy"] == [None, None, 1.0] and n["confidence_histogram"] == [0] * 8 + [0, 2]
    assert (o["total_labelled"], o["total_correct"], o["accuracy_overall"]) == (6, 3, 0.5)
    assert o["field_accuracy"] == 0.95 and n["status"] == "candidate"
    assert q["bins"][0] == 0.0 and q["bins"][-1] == 1.0 and len(q["bins"]) == 11
    assert q["switches"] == [{
        "day": "2025-03-10", "at": at(TODAY, 9).isoformat(), "action": "promote",
        "action_display": "promoted by the gate", "version": "q-new v1", "from_version": "q-old v1",
    }]


def test_quality_over_time_window_and_empty():
    assert quality_over_time(days=30, today=TODAY) == {"days": [], "versions": [], "switches": [],
                                                       "bins": [i / 10 for i in range(11)]}


def test_quality_over_time_keeps_to_the_last_days(history):
    q = quality_over_time(days=2, today=TODAY)
    assert q["days"] == ["2025-03-09", "2025-03-10"]
    old = next(s for s in q["versions"] if s["label"] == "q-old v1")
    assert old["labelled"] == [2, 0] and old["accuracy"] == [0.0, None]


def test_quality_checks_warn_when_recent_labels_fall_behind_the_field_set(history):
    old, new = history
    checks = {c["model_version"]["name"]: c for c in quality_checks(window=4, margin=0.1)}
    # old: its last 4 labels (no label time recorded: the newest rows first: day 1's two wrong, then
    # day 0's 4-read-as-9 and a right 3) -> 25%
    assert checks["q-old"]["n"] == 4 and checks["q-old"]["state"] == "warning"
    assert checks["q-old"]["recent_accuracy"] == pytest.approx(0.25)
    assert checks["q-old"]["drop"] == pytest.approx(0.70) and checks["q-old"]["field_accuracy"] == 0.95
    # new: only 2 labels so far, no verdict
    assert checks["q-new"]["state"] == "too_few_labels" and checks["q-new"]["recent_accuracy"] == 1.0
    # the shipped active version has labels of none and no field-set accuracy: listed, nothing to compare
    active = ModelVersion.objects.active().get()
    assert checks[active.name]["state"] == "no_field_accuracy" and checks[active.name]["n"] == 0
    # the active version comes first
    assert quality_checks(window=4, margin=0.1)[0]["model_version"]["id"] == active.pk

    # within a wider margin, no warning; a window of 2 counts only the most recent labels
    assert {c["model_version"]["name"]: c["state"] for c in quality_checks(window=4, margin=0.75)}["q-old"] == "ok"
    assert {c["model_version"]["name"]: c["n"] for c in quality_checks(window=2, margin=0.1)}["q-old"] == 2


def test_quality_checks_order_by_when_labelled(history):
    old, _ = history
    # a late label for an early drawing is the most recent label
    late = predict(old, day=TODAY - dt.timedelta(days=2), digit=3, confidence=0.9, label=3, labelled_hour=23)
    Prediction.objects.filter(pk=late.pk).update(labelled_at=at(TODAY, 23))
    check = next(c for c in quality_checks(window=1, margin=0.0) if c["model_version"]["id"] == old.pk)
    assert (check["n"], check["correct"], check["state"]) == (1, 1, "ok")


def test_quality_settings_are_the_defaults(history, settings):
    settings.QUALITY_WINDOW = 6
    settings.QUALITY_WARNING_MARGIN = 0.5
    check = next(c for c in quality_checks() if c["model_version"]["name"] == "q-old")  # 3 of 6: 45 points below
    assert (check["window"], check["margin"], check["n"], check["state"]) == (6, 0.5, 6, "ok")
    settings.QUALITY_WARNING_MARGIN = 0.4
    assert next(c for c in quality_checks() if c["model_version"]["name"] == "q-old")["state"] == "warning"


# ------------------------------------------------------------------ the statistics page


def test_stats_page_renders_the_chart_data_and_the_warning(client, staff_user, history, settings):
    settings.QUALITY_WINDOW = 4
    settings.QUALITY_WARNING_MARGIN = 0.1
    # the page shows the last days up to today: move the fixture's days to now
    shift = timezone.localdate() - TODAY
    for model in (Prediction, LifecycleEvent):
        for row in model.objects.all():
            field = "created_at" if model is Prediction else "at"
            model.objects.filter(pk=row.pk).update(**{field: getattr(row, field) + shift})
    client.force_login(staff_user)

    html = client.get(reverse("pages:stats")).content.decode()

    data = json.loads(re.search(r'<script id="quality-data" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert len(data["days"]) == 3 and data["days"][-1] == timezone.localdate().isoformat()
    old = next(s for s in data["versions"] if s["label"] == "q-old v1")
    assert old["accuracy"] == [0.75, 0.0, None] and old["confidence_histogram"][-1] == 2
    assert data["switches"][0]["version"] == "q-new v1"
    for chart in ("quality-accuracy-chart", "quality-confidence-chart", "quality-histogram-chart"):
        assert f'data-testid="{chart}"' in html
    assert re.search(r'src="[^"]*dashboard/vendor/chartjs/chart\.umd\.min\.js"', html)
    assert re.search(r'src="[^"]*classifier/stats\.js"', html)
    # the warning, in words, for the old version only
    warnings = re.findall(r'data-testid="quality-warning">(.*?)</p>', html, re.S)
    assert len(warnings) == 1
    text = " ".join(warnings[0].split())
    assert "Warning: q-old v1" in text and "right on 25.0% of its last 4 labelled drawings" in text
    assert "70.0 points below the 95.0% it scored on the field set" in text and "margin is 10.0 points" in text
    assert 'data-testid="quality-switches"' in html and "q-new v1 promoted by the gate (replacing q-old v1)" in html


def test_stats_page_without_a_warning_or_data(client, staff_user):
    client.force_login(staff_user)
    html = client.get(reverse("pages:stats")).content.decode()
    assert 'data-testid="quality-warning"' not in html and 'id="quality-data"' not in html
    assert "No predictions in the last 60 days." in html and "chart.umd.min.js" not in html


def test_stats_page_quality_is_staff_only(client, user):
    # Signed out: to the site's own login, and back. Signed in without staff: refused (a login would loop).
    response = client.get(reverse("pages:stats"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("account-login"))
    client.force_login(user)
    assert client.get(reverse("pages:stats")).status_code == 403


def test_stats_page_static_files_exist():
    from django.contrib.staticfiles import finders

    for name in ("classifier/stats.js", "classifier/stats.css", "dashboard/vendor/chartjs/chart.umd.min.js"):
        assert finders.find(name), name
