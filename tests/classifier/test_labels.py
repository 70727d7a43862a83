"""Label provenance and the effective label: trusted sources over visitors, "not a digit" never trains,
agreement of distinct clients, the label API recording who gave what, the backfill of migration 0006.
(Trust levels in use: tests/classifier/test_label_trust.py.)"""
from __future__ import annotations

import hashlib
import importlib

import pytest
from django.apps import apps
from django.core.management import call_command
from rest_framework.test import APIClient

from classifier.drawings import labelled_drawings
from classifier.labels import effective_label, label_record, labels_recompute_all
from classifier.models import Label, ModelVersion, Prediction
from tests.support.drawings import SEVEN, canvas, encode

pytestmark = pytest.mark.django_db

backfill = importlib.import_module("classifier.migrations.0006_label_provenance").backfill


def make(pixels: bytes = bytes(784), *, digit: int = 7, confidence: float = 0.9, **fields) -> Prediction:
    version = ModelVersion.objects.active().first()
    probabilities = [0.0] * 10
    probabilities[digit] = confidence
    return Prediction.objects.create(image="drawings/test.png", input_pixels=pixels, probabilities=probabilities,
                                     digit=digit, confidence=confidence, model_version=version, latency_ms=1.0,
                                     **fields)


def visitor(value, prediction, who: str, ip: str | None = None) -> Label:
    """A visitor's label; each visitor from an address of its own unless ``ip`` says otherwise."""
    ip = ip or f"198.51.100.{sum(who.encode()) % 250 + 1}"
    return label_record(prediction=prediction, value=value, by=None, via=Label.Via.SESSION, giver=f"session:{who}",
                        client_ip=ip)


def test_a_staff_label_overrides_a_visitors_either_way_round(user, staff_user):
    first = make()
    label_record(prediction=first, value=1, by=user, via=Label.Via.ACCOUNT)
    assert (first.label, first.label_by_staff, first.labelled_by) == (1, False, user)
    label_record(prediction=first, value=7, by=staff_user, via=Label.Via.REVIEW)
    first.refresh_from_db()
    assert (first.label, first.label_by_staff, first.labelled_by) == (7, True, staff_user)

    later = make()
    label_record(prediction=later, value=7, by=staff_user, via=Label.Via.REVIEW)
    label_record(prediction=later, value=2, by=user, via=Label.Via.ACCOUNT)  # a visitor after staff
    later.refresh_from_db()
    assert (later.label, later.label_by_staff) == (7, True)
    assert later.labels.count() == 2  # both words are kept
    assert set(later.labels.values_list("by_staff", "given_by")) == {(True, staff_user.pk), (False, user.pk)}


def test_not_a_digit_never_trains(staff_user, settings):
    settings.TRAINING_FIELD_SET_PERCENT = 0  # every labelled drawing is training data
    settings.LABELS_TRAIN_TRUST = "visitor"  # a small private site: visitors' labels train
    kept, dropped = make(bytes([255]) * 784), make(bytes([128]) * 784)
    label_record(prediction=kept, value=3, by=staff_user, via=Label.Via.REVIEW)
    visitor(5, dropped, "a")
    assert labelled_drawings(part="train").ids == [kept.pk, dropped.pk]
    label_record(prediction=dropped, value="x", by=staff_user, via=Label.Via.REVIEW)
    dropped.refresh_from_db()
    assert dropped.not_a_digit and dropped.label is None and dropped.label_by_staff
    assert labelled_drawings(part="train").ids == [kept.pk]
    assert not Prediction.objects.labelled().filter(pk=dropped.pk).exists()
    assert Prediction.objects.decided().filter(pk=dropped.pk).exists()


def test_a_visitors_label_is_the_effective_label_but_trains_only_when_the_site_says_so(settings):
    settings.TRAINING_FIELD_SET_PERCENT = 0
    p = make()
    visitor(3, p, "a")
    assert (p.label, p.label_trust) == (3, "visitor")
    visitor(4, p, "a")  # the same visitor changes their mind
    assert (p.label, p.label_trust) == (4, "visitor")
    assert labelled_drawings(part="train").ids == []  # by default only trusted labels train
    settings.LABELS_TRAIN_TRUST = "visitor"
    assert labelled_drawings(part="train").ids == [p.pk]


def test_a_trusted_label_confirms_a_visitors(staff_user):
    p = make()
    visitor(3, p, "a")
    visitor(3, p, "b")
    assert p.labels.count() == 2 and p.label_trust == "agreed"
    label_record(prediction=p, value=3, by=staff_user, via=Label.Via.REVIEW)
    assert (p.label, p.label_by_staff, p.label_trust) == (3, True, "trusted")


def test_distinct_clients_must_agree():
    p = make()
    visitor(3, p, "a")
    assert (p.label, p.label_trust) == (3, "visitor")
    visitor(3, p, "a")  # the same visitor twice is one voice
    assert p.label_trust == "visitor"
    visitor(5, p, "b")
    assert (p.label, p.label_trust) == (5, "visitor")  # the latest word, not agreed
    visitor(3, p, "c")
    assert (p.label, p.label_trust) == (3, "visitor")  # 3 twice, but b disagrees
    q = make()
    visitor(3, q, "a")
    visitor(3, q, "c")
    assert (q.label, q.label_trust) == (3, "agreed")


def test_changing_the_agreement_and_recomputing(settings):
    p = make()
    visitor(3, p, "a")
    visitor(3, p, "b")
    assert p.label_trust == "agreed"
    settings.LABELS_AGREEMENT_CLIENTS = 3
    assert labels_recompute_all() == 1
    p.refresh_from_db()
    assert (p.label, p.label_trust) == (3, "visitor")
    settings.LABELS_AGREEMENT_CLIENTS = 2
    call_command("recompute_labels", stdout=open("/dev/null", "w"))
    p.refresh_from_db()
    assert (p.label, p.label_trust) == (3, "agreed")


def test_effective_label_is_a_pure_function_of_the_labels():
    p = make()
    assert effective_label([]).digit is None and effective_label([]).trust == ""
    rows = [Label(pk=1, prediction=p, digit=2, giver="x", client="192.0.2.1", via="session", at=p.created_at)]
    assert (effective_label(rows).digit, effective_label(rows).trust) == (2, "visitor")
    rows.append(Label(pk=2, prediction=p, digit=2, giver="y", client="192.0.2.2", via="session", at=p.created_at))
    assert effective_label(rows).trust == "agreed"
    assert effective_label(rows, agreement_clients=3).trust == "visitor"
    rows.append(Label(pk=3, prediction=p, digit=4, giver="z", trusted=True, via="account", at=p.created_at))
    assert (effective_label(rows).digit, effective_label(rows).trust) == (4, "trusted")


def test_the_label_api_records_who_gave_it_and_how(token_client, user, staff_client, staff_user):
    anonymous = APIClient()
    body = anonymous.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json").json()
    anonymous.post(f"/api/predictions/{body['id']}/label/", {"label": 1, "label_key": body["label_key"]},
                   format="json")
    own = token_client.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json").json()["id"]
    token_client.post(f"/api/predictions/{own}/label/", {"label": 7}, format="json")
    staff_client.post(f"/api/predictions/{own}/label/", {"label": 2}, format="json")
    keyed = Label.objects.get(prediction_id=body["id"])
    assert (keyed.via, keyed.given_by, keyed.by_staff, keyed.giver) == ("label_key", None, False, f"key:{body['id']}")
    mine, staff = Label.objects.filter(prediction_id=own).order_by("at", "id")
    assert (mine.digit, mine.given_by, mine.by_staff) == (7, user, False)
    assert (staff.digit, staff.given_by, staff.by_staff) == (2, staff_user, True)
    assert Prediction.objects.get(pk=own).label == 2


def test_visitors_may_not_say_not_a_digit_through_the_label_api(token_client):
    pk = token_client.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json").json()["id"]
    response = token_client.post(f"/api/predictions/{pk}/label/", {"label": "x"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_label"
    assert not Label.objects.exists()


def test_a_drawing_with_a_pending_label_is_never_replaced():
    client = APIClient()
    client.cookies["csrftoken"] = "x" * 32
    first = client.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json").json()
    client.post(f"/api/predictions/{first['id']}/label/", {"label": 7, "label_key": first["label_key"]}, format="json")
    assert Prediction.objects.get(pk=first["id"]).label_trust == "visitor"  # waiting for staff
    client.post("/api/predict/", {"image": encode(canvas(SEVEN)), "replaces": first["id"]}, format="json")
    assert Prediction.objects.filter(pk=first["id"]).exists()


def test_the_migration_backfills_labels_and_pixel_hashes(user, staff_user):
    by_visitor = make(bytes([1]) * 784, label=4, labelled_by=user)
    by_staff = make(bytes([2]) * 784, label=5, labelled_by=staff_user)
    anonymous = make(bytes([3]) * 784, label=6)
    unlabelled = make(bytes([4]) * 784)
    Prediction.objects.update(input_sha256="")
    backfill(apps, None)
    rows = {label.prediction_id: label for label in Label.objects.all()}
    assert set(rows) == {by_visitor.pk, by_staff.pk, anonymous.pk}
    assert (rows[by_visitor.pk].digit, rows[by_visitor.pk].by_staff, rows[by_visitor.pk].via) == (4, False, "backfill")
    assert (rows[by_staff.pk].digit, rows[by_staff.pk].by_staff, rows[by_staff.pk].given_by) == (5, True, staff_user)
    assert rows[anonymous.pk].given_by is None
    assert list(Prediction.objects.filter(label_by_staff=True).values_list("pk", flat=True)) == [by_staff.pk]
    unlabelled.refresh_from_db()
    assert unlabelled.input_sha256 == hashlib.sha256(bytes([4]) * 784).hexdigest()
