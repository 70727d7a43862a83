"""Labels are input, not truth: what a visitor's label does, what trains, what judges a version, how staff
undo a burst (docs/trust.md)."""
from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier.drawings import field_set, labelled_drawings
from classifier.labels import client_network, label_record
from classifier.models import Label, ModelVersion, Prediction, ShadowPrediction
from classifier.review import review_counts, review_next
from classifier.shadow import shadow_evidence, shadow_report
from tests.support.drawings import SEVEN, canvas, encode
from training.policy import new_labels_count, policy_get

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]
trust_migration = importlib.import_module("classifier.migrations.0008_label_trust").forwards


def _predict(client: APIClient, ip: str = "203.0.113.7") -> dict:
    response = client.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json", REMOTE_ADDR=ip)
    assert response.status_code == 200
    return response.json()


def _label(client: APIClient, body: dict, value: int, *, key: bool = True, ip: str = "203.0.113.7") -> None:
    data = {"label": value, **({"label_key": body["label_key"]} if key else {})}
    response = client.post(f"/api/predictions/{body['id']}/label/", data, format="json", REMOTE_ADDR=ip)
    assert response.status_code == 200, response.content


def _browser() -> APIClient:
    client = APIClient()
    client.cookies["csrftoken"] = "x" * 32  # a browser on the site: its predictions get a session
    return client


def test_anonymous_labels_neither_train_nor_judge_nor_count_toward_the_policy(settings):
    """The review's finding: visitors' labels fed the loop at once, and were the gate's evidence too."""
    settings.TRAINING_FIELD_SET_PERCENT = 50
    ids = []
    for i in range(12):  # twelve "visitors", each a fresh client from an address of its own
        client, ip = APIClient(), f"203.0.113.{i + 1}"
        body = _predict(client, ip)
        _label(client, body, 8, ip=ip)
        ids.append(body["id"])
    rows = Prediction.objects.filter(pk__in=ids)
    assert {(p.label, p.label_trust) for p in rows} == {(8, "visitor")}  # recorded, shown, counted...
    assert set(Label.objects.values_list("client", flat=True)) == {f"203.0.113.{i + 1}" for i in range(12)}
    assert labelled_drawings(part="train").ids == []  # ...but they do not train
    assert field_set().ids == []  # ...nor judge a version
    assert new_labels_count(policy_get()) == 0  # ...nor start a retraining run
    assert review_counts()["suggested"] == 12  # they wait in the review queue

    settings.LABELS_TRAIN_TRUST = "visitor"  # a small private site may let them train
    assert 0 < len(labelled_drawings(part="train")) < 12  # the training part of them (half are held out)
    assert field_set().ids == []  # evidence never rests on one visitor's word
    assert new_labels_count(policy_get()) == 12


def test_one_browser_is_one_client_whether_it_labels_by_key_or_by_session(settings):
    """Item 4: the same browser labelling once with its label key and once through its session made two
    "visitors" agree, and a drawn 3 became an 8."""
    settings.LABELS_TRAIN_TRUST = settings.LABELS_EVIDENCE_TRUST = "agreed"
    settings.TRAINING_FIELD_SET_PERCENT = 0
    browser = _browser()
    body = _predict(browser)
    _label(browser, body, 8, key=True)
    _label(browser, body, 8, key=False)  # the same browser, through its session
    prediction = Prediction.objects.get(pk=body["id"])
    assert sorted(prediction.labels.values_list("via", flat=True)) == ["label_key", "session"]
    assert (prediction.label, prediction.label_trust) == (8, "visitor")
    assert labelled_drawings(part="train").ids == []

    # Even from another address, a label-key label is the prediction's own client's.
    other = _predict(browser)
    _label(APIClient(), other, 8, key=True, ip="198.51.100.99")
    _label(browser, other, 8, key=False)
    assert Prediction.objects.get(pk=other["id"]).label_trust == "visitor"


def test_distinct_clients_means_distinct_givers_and_distinct_networks(settings):
    p = Prediction.objects.create(image="drawings/t.png", input_pixels=bytes(784), probabilities=[0.1] * 10, digit=3,
                                  confidence=0.1, model_version=ModelVersion.objects.active().first(), latency_ms=1)
    label_record(prediction=p, value=8, by=None, via=Label.Via.SESSION, giver="session:a", client_ip="192.0.2.1")
    label_record(prediction=p, value=8, by=None, via=Label.Via.SESSION, giver="session:b", client_ip="192.0.2.1")
    assert p.label_trust == "visitor"  # two sessions, one address: one client
    label_record(prediction=p, value=8, by=None, via=Label.Via.SESSION, giver="session:c",
                 client_ip="2001:db8:1:2::5")
    label_record(prediction=p, value=8, by=None, via=Label.Via.SESSION, giver="session:d",
                 client_ip="2001:db8:1:2:ffff::9")
    assert p.label_trust == "agreed"  # one IPv4 client and one IPv6 /64 (two addresses in it)
    settings.LABELS_AGREEMENT_CLIENTS = 3
    from classifier.labels import label_recompute
    label_recompute(prediction=p)
    assert p.label_trust == "visitor"


def test_client_networks():
    assert client_network("203.0.113.9") == "203.0.113.9"
    assert client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::"  # the /64, as its first address
    assert client_network("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_network("") == "" and client_network(None) == "" and client_network("garbage") == ""


def test_staff_and_trusted_accounts_label_with_trust(staff_client, user):
    body = _predict(APIClient())
    staff_client.post(f"/api/predictions/{body['id']}/label/", {"label": 7}, format="json")
    assert Prediction.objects.get(pk=body["id"]).label_trust == "trusted"

    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    own = _predict(client)
    _label(client, own, 7, key=False)
    assert Prediction.objects.get(pk=own["id"]).label_trust == "visitor"  # an account is not trusted by itself
    user.user_permissions.add(Permission.objects.get(codename="trusted_labeller"))
    user = type(user).objects.get(pk=user.pk)  # a fresh permission cache
    client.force_authenticate(user)
    _label(client, own, 7, key=False)
    prediction = Prediction.objects.get(pk=own["id"])
    assert prediction.label_trust == "trusted" and prediction.labels.filter(trusted=True).count() == 1
    assert labelled_drawings(part="train").ids + field_set().ids != []


def test_a_visitors_label_waits_in_the_review_queue_and_one_key_makes_it_trusted(staff_client, settings):
    settings.REVIEW_OPINION_WINDOW = 0
    body = _predict(APIClient())
    unlabelled = _predict(APIClient())
    _label(APIClient(), body, 4)
    queue = review_next(count=5)
    first = queue["items"][0]
    assert first["id"] == body["id"] and first["suggestion"] == 4 and first["trust"] == "visitor"
    assert first["visitor_labels"][0]["client"] == "203.0.113.7"
    assert [item["id"] for item in queue["items"]] == [body["id"], unlabelled["id"]]
    staff_client.post(f"/api/review/{body['id']}/label/", {"label": 4}, format="json")
    prediction = Prediction.objects.get(pk=body["id"])
    assert prediction.label_trust == "trusted" and prediction.labels.filter(via="review", trusted=True).exists()
    assert [item["id"] for item in review_next(count=5)["items"]] == [unlabelled["id"]]
    assert new_labels_count(policy_get()) == 1


def test_the_gate_reads_only_trusted_shadow_labels(settings, staff_user):
    version = ModelVersion.objects.active().first()
    predictions = []
    for i in range(4):
        p = Prediction.objects.create(image="drawings/t.png", input_pixels=bytes(784), probabilities=[0.1] * 10,
                                      digit=3, confidence=0.1, model_version=version, latency_ms=1)
        ShadowPrediction.objects.create(prediction=p, version=version, digit=8, confidence=0.9,
                                        probabilities=[0.1] * 10)
        label_record(prediction=p, value=8, by=None, via=Label.Via.SESSION, giver=f"session:{i}",
                     client_ip=f"192.0.2.{i}")
        predictions.append(p)
    assert shadow_report(version).labelled == 0 and shadow_evidence(version) is None
    label_record(prediction=predictions[0], value=3, by=staff_user, via=Label.Via.REVIEW)
    report = shadow_report(version)
    assert (report.labelled, report.candidate_correct, report.active_correct) == (1, 0, 1)


# ----------------------------------------------------------------------------- staff undo a burst


def _burst(ip: str, count: int, value: int = 8) -> list[int]:
    ids = []
    for _ in range(count):
        client = APIClient()
        body = _predict(client, ip)
        _label(client, body, value, ip=ip)
        ids.append(body["id"])
    return ids


def test_staff_find_a_clients_burst_in_a_time_window_and_withdraw_it(admin_client, staff_user, settings, caplog):
    settings.LABELS_TRAIN_TRUST = "visitor"
    settings.TRAINING_FIELD_SET_PERCENT = 0
    honest = _burst("198.51.100.1", 2, value=7)
    attack = _burst("203.0.113.66", 5)
    Label.objects.filter(prediction_id__in=attack[:2]).update(at=timezone.now() - timedelta(hours=3))
    confirmed = attack[2]
    label_record(prediction=Prediction.objects.get(pk=confirmed), value=3, by=staff_user, via=Label.Via.REVIEW)

    page = admin_client.get("/admin/classifier/label/")
    assert page.status_code == 200
    assert b"203.0.113.66 (5)" in page.content  # the busiest clients, with their counts
    since = (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    listed = admin_client.get("/admin/classifier/label/", {"client": "203.0.113.66", "since": since})
    assert listed.status_code == 200
    in_window = list(listed.context["cl"].queryset.values_list("prediction_id", flat=True))
    assert sorted(in_window) == sorted(attack[2:])
    assert admin_client.get("/admin/classifier/label/", {"since": "not a time"}).status_code in (200, 302)

    selected = list(listed.context["cl"].queryset.values_list("pk", flat=True))
    with caplog.at_level(logging.WARNING, logger="classifier.labels"):
        done = admin_client.post(f"/admin/classifier/label/?client=203.0.113.66&since={since}",
                                 {"action": "withdraw_labels", "_selected_action": selected}, follow=True)
    assert done.status_code == 200
    assert "3 labels withdrawn from 3 drawings" in done.content.decode()
    assert any("labels withdrawn by admin" in r.getMessage() for r in caplog.records)
    assert not Label.objects.filter(pk__in=selected).exists()
    states = {p.pk: (p.label, p.label_trust) for p in Prediction.objects.filter(pk__in=attack)}
    assert states[attack[0]] == states[attack[1]] == (8, "visitor")  # outside the window: kept
    assert states[attack[3]] == states[attack[4]] == (None, "")  # withdrawn: unlabelled again
    assert states[confirmed] == (3, "trusted")  # staff's own word stays
    assert sorted(labelled_drawings(part="train").ids) == sorted(honest + attack[:3])


def test_only_staff_reach_the_label_admin_and_only_with_the_delete_permission_withdraw(client, user, staff_user):
    client.force_login(user)
    assert client.get("/admin/classifier/label/").status_code == 302
    staff_user.user_permissions.add(Permission.objects.get(codename="view_label"))
    client.force_login(staff_user)
    page = client.get("/admin/classifier/label/")
    assert page.status_code == 200 and b"withdraw_labels" not in page.content


# ----------------------------------------------------------------------------- settings and migration


def _settings_with(**env: str) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-c", "from django.conf import settings; settings.LABELS_TRAIN_TRUST"],
                          cwd=REPO, env={**os.environ, "DJANGO_SETTINGS_MODULE": "mnistsite.settings", **env},
                          capture_output=True, text=True, timeout=60)


def test_the_old_setting_is_refused_at_start_with_the_new_names():
    result = _settings_with(LABELS_VISITOR_AGREEMENT="none")
    assert result.returncode != 0
    assert "LABELS_TRAIN_TRUST" in result.stderr and "LABELS_EVIDENCE_TRUST" in result.stderr
    assert _settings_with(LABELS_EVIDENCE_TRUST="visitor").returncode != 0
    assert _settings_with(LABELS_AGREEMENT_CLIENTS="1").returncode != 0


def test_the_migration_marks_existing_labels(staff_user):
    version = ModelVersion.objects.active().first()
    make = lambda **f: Prediction.objects.create(image="drawings/t.png", input_pixels=bytes(784),  # noqa: E731
                                                 probabilities=[0.1] * 10, digit=3, confidence=0.1,
                                                 model_version=version, latency_ms=1, **f)
    by_staff = make(label=5, label_by_staff=True, client_ip="192.0.2.5")
    by_visitor = make(label=4, client_ip="2001:db8::1")
    unlabelled = make()
    Label.objects.create(prediction=by_staff, digit=5, by_staff=True, given_by=staff_user, via="review",
                         at=timezone.now())
    Label.objects.create(prediction=by_visitor, digit=4, via="session", giver="session:a", at=timezone.now())
    trust_migration(apps, None)
    assert Label.objects.get(prediction=by_staff).trusted
    visitor_label = Label.objects.get(prediction=by_visitor)
    assert (visitor_label.trusted, visitor_label.client) == (False, "2001:db8::")
    trust = dict(Prediction.objects.values_list("pk", "label_trust"))
    assert (trust[by_staff.pk], trust[by_visitor.pk], trust[unlabelled.pk]) == ("trusted", "visitor", "")
