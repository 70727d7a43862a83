"""Quality per N labelled drawings: buckets per version on the axis of every labelled drawing, their
figures, where the active version changed, the empty case; the statistics page's chart of it."""
from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from classifier.models import LifecycleEvent, ModelVersion, Prediction
from classifier.quality import quality_by_drawings

pytestmark = pytest.mark.django_db

START = timezone.make_aware(dt.datetime(2025, 3, 10, 8, 0))


def minute(n: float) -> dt.datetime:
    return START + dt.timedelta(minutes=n)


def version(name: str) -> ModelVersion:
    return ModelVersion.objects.create(name=name, version=1, arch="cnn", checkpoint=f"checkpoints/{name}.pt",
                                       sha256=name.ljust(64, "0"), status="candidate")


def drawing(v: ModelVersion, *, at: dt.datetime, digit: int, confidence: float, label: int | None = None,
            not_a_digit: bool = False) -> Prediction:
    p = Prediction.objects.create(
        image=f"drawings/n-{v.pk}.png", input_pixels=bytes(784), probabilities=[0.1] * 10, digit=digit,
        confidence=confidence, model_version=v, latency_ms=1.0, label=label, not_a_digit=not_a_digit,
    )
    Prediction.objects.filter(pk=p.pk).update(created_at=at)  # created_at is set on insert
    return p


def event(action: str, *, to: ModelVersion, at: dt.datetime, frm: ModelVersion | None = None) -> LifecycleEvent:
    e = LifecycleEvent.objects.create(action=action, to_version=to, from_version=frm, reason="test")
    LifecycleEvent.objects.filter(pk=e.pk).update(at=at)
    return e


@pytest.fixture
def history():
    """Seven labelled drawings (positions 1-7) by two versions, with noise that must not count; ``new`` is
    promoted after the fourth labelled drawing, ``old`` was activated before any."""
    LifecycleEvent.objects.all().delete()  # only this history's switches
    old, new = version("n-old"), version("n-new")
    event("activate", to=old, at=minute(-60))
    drawing(old, at=minute(1), digit=1, confidence=0.9, label=1)     # 1 right
    drawing(old, at=minute(2), digit=2, confidence=0.5, label=3)     # 2 wrong
    drawing(old, at=minute(3), digit=4, confidence=0.3)              # unlabelled: not on the axis
    drawing(old, at=minute(3.5), digit=4, confidence=0.3, not_a_digit=True)  # "not a digit": neither
    drawing(old, at=minute(4), digit=5, confidence=0.7, label=5)     # 3 right
    drawing(old, at=minute(5), digit=6, confidence=0.8, label=6)     # 4 right
    event("promote", to=new, frm=old, at=minute(5.5))
    event("register", to=new, at=minute(5.6))                        # not a switch
    event("archive", to=old, at=minute(5.7))                         # nor this
    drawing(new, at=minute(6), digit=7, confidence=1.0, label=7)     # 5 right
    drawing(old, at=minute(7), digit=8, confidence=0.4, label=0)     # 6 wrong (a process still on old)
    drawing(new, at=minute(8), digit=9, confidence=0.6, label=4)     # 7 wrong
    return old, new


def test_buckets_per_version_on_the_axis_of_every_labelled_drawing(history):
    old, new = history
    q = quality_by_drawings(bucket=3)

    assert (q["bucket"], q["total"]) == (3, 7)
    o, n = q["versions"]
    assert (o["id"], o["label"], n["id"], n["label"]) == (old.pk, "n-old v1", new.pk, "n-new v1")
    assert (o["labelled"], o["correct"], o["accuracy"]) == (5, 3, 0.6)
    first, second = o["points"]
    assert (first["index"], first["first"], first["last"], first["labelled"], first["correct"], first["full"]) \
        == (1, 1, 3, 3, 2, True)
    assert first["accuracy"] == pytest.approx(2 / 3)
    assert first["mean_confidence"] == pytest.approx((0.9 + 0.5 + 0.7) / 3)
    assert (first["first_at"], first["last_at"]) == (minute(1).isoformat(), minute(4).isoformat())
    # the last bucket holds what is left, and says so
    assert (second["index"], second["first"], second["last"], second["labelled"], second["correct"]) == (2, 4, 6, 2, 1)
    assert second["full"] is False and second["accuracy"] == 0.5
    assert second["mean_confidence"] == pytest.approx((0.8 + 0.4) / 2)
    (only,) = n["points"]
    assert (only["first"], only["last"], only["labelled"], only["correct"], only["full"]) == (5, 7, 2, 1, False)
    assert only["mean_confidence"] == pytest.approx(0.8)


def test_switches_sit_between_the_labelled_drawings_around_them(history):
    old, new = history
    switches = quality_by_drawings(bucket=3)["switches"]
    assert [(s["position"], s["action"], s["version"], s["from_version"]) for s in switches] == [
        (0, "activate", "n-old v1", None),  # before any labelled drawing
        (4, "promote", "n-new v1", "n-old v1"),  # after the 4th
    ]
    assert switches[1]["action_display"] == "promoted by the gate" and switches[1]["at"] == minute(5.5).isoformat()

    # one after every labelled drawing sits at the end; one at the very moment of a drawing comes before it
    event("rollback", to=old, frm=new, at=minute(9))
    event("activate", to=new, frm=old, at=minute(6))
    positions = [(s["position"], s["action"]) for s in quality_by_drawings(bucket=3)["switches"]]
    assert positions == [(0, "activate"), (4, "promote"), (4, "activate"), (7, "rollback")]


def test_full_buckets_and_the_bucket_setting(history, settings):
    settings.QUALITY_BUCKET = 5
    q = quality_by_drawings()
    assert q["bucket"] == 5
    old_points = q["versions"][0]["points"]
    assert [(p["first"], p["last"], p["labelled"], p["full"]) for p in old_points] == [(1, 6, 5, True)]
    # a bucket of one is every labelled drawing on its own
    q = quality_by_drawings(bucket=1)
    assert [p["accuracy"] for p in q["versions"][0]["points"]] == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert all(p["full"] for v in q["versions"] for p in v["points"])
    with pytest.raises(ValueError):
        quality_by_drawings(bucket=0)


def test_order_is_by_creation_then_id_not_by_insertion(history):
    old, _ = history
    # inserted last, drawn first: it becomes position 1 and everything after it moves up by one
    drawing(old, at=minute(0), digit=3, confidence=0.2, label=3)
    q = quality_by_drawings(bucket=3)
    assert q["total"] == 8
    first = q["versions"][0]["points"][0]
    assert (first["first"], first["last"], first["correct"]) == (1, 3, 2)
    assert [s["position"] for s in q["switches"]] == [0, 5]


def test_empty_without_labelled_drawings():
    v = version("n-lonely")
    event("activate", to=v, at=minute(0))
    drawing(v, at=minute(1), digit=1, confidence=0.9)  # answered, never labelled
    assert quality_by_drawings(bucket=10) == {"bucket": 10, "total": 0, "versions": [], "switches": []}


def test_a_few_queries_whatever_the_number_of_drawings(history, django_assert_num_queries):
    old, new = history
    Prediction.objects.bulk_create([
        Prediction(image="drawings/bulk.png", input_pixels=bytes(784), probabilities=[0.1] * 10, digit=i % 10,
                   confidence=0.5, model_version=(old, new)[i % 2], latency_ms=1.0, label=(i * 7) % 10)
        for i in range(500)
    ])
    with django_assert_num_queries(3):  # the switches, one pass over the labelled drawings, the versions
        q = quality_by_drawings(bucket=50)
    assert q["total"] == 507 and sum(p["labelled"] for v in q["versions"] for p in v["points"]) == 507


# ------------------------------------------------------------------ the statistics page


def test_stats_page_draws_accuracy_per_n_drawings(client, staff_user, history, settings):
    settings.QUALITY_BUCKET = 3
    client.force_login(staff_user)

    html = client.get(reverse("pages:stats")).content.decode()

    raw = re.search(r'<script id="quality-drawings-data" type="application/json">(.*?)</script>', html, re.S)
    data = json.loads(raw.group(1))
    assert data == json.loads(json.dumps(quality_by_drawings(bucket=3)))
    assert 'data-testid="quality-drawings-chart"' in html and "Accuracy per 3 labelled drawings" in html
    # the history lies beyond the per-day charts' 60 days: the per-N chart still needs the chart library
    assert 'id="quality-data"' not in html
    assert re.search(r'src="[^"]*dashboard/vendor/chartjs/chart\.umd\.min\.js"', html)
    assert re.search(r'src="[^"]*classifier/stats\.js"', html)
    assert 'data-testid="quality-drawings-empty"' not in html


def test_stats_page_per_n_empty_state(client, staff_user):
    client.force_login(staff_user)
    html = client.get(reverse("pages:stats")).content.decode()
    assert 'data-testid="quality-drawings-empty"' in html and "No labelled drawings yet" in html
    assert 'id="quality-drawings-data"' not in html and 'data-testid="quality-drawings-chart"' not in html
    assert "chart.umd.min.js" not in html
