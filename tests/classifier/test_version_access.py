"""Which model versions the public may ask, and activations that would skip the promotion gate.

The public (anonymous visitors, signed-in non-staff) may name only vetted versions in a prediction: active
once, or shipped, and not archived. Anything else is 403 ``model_not_public`` (a version that does not
exist: 404 ``model_not_found``); staff may ask any version. A person's plain activation of an archived or
never-active version is refused (409 ``activation_needs_gate``); staff may force it with a reason, and the
audit log records it as its own action, "forced".
"""
from __future__ import annotations

import logging

import pytest
from django.urls import reverse

from classifier import lifecycle
from classifier.inference import registry
from classifier.models import LifecycleEvent, ModelVersion, Prediction
from tests.support.drawings import SEVEN, canvas, encode
from tests.support.registry import assert_error

pytestmark = pytest.mark.django_db

PREDICT = "/api/predict/"
BATCH = "/api/predict/batch/"


def shipped(name: str) -> ModelVersion:
    return ModelVersion.objects.get(name=name, version=1)


@pytest.fixture
def fresh() -> ModelVersion:
    """A candidate nobody promoted (the shipped lenet5's weights under a new name): loadable, never vetted."""
    lenet = shipped("lenet5")
    return ModelVersion.objects.create(name="fresh", version=1, arch=lenet.arch, checkpoint=lenet.checkpoint.name,
                                       sha256=lenet.sha256, test_accuracy=0.109, preprocessing=lenet.preprocessing)


@pytest.fixture
def archived(staff_user) -> ModelVersion:
    return lifecycle.model_version_archive(version=shipped("mlp"), by=staff_user, reason="retired")


def predict(client, model: int | None, *, batch: bool = False):
    image = encode(canvas(SEVEN))
    body = {"images": [image, image]} if batch else {"image": image}
    if model is not None:
        body["model"] = model
    return client.post(BATCH if batch else PREDICT, body, format="json")


# ---------------------------------------------------------------- predictions


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("who", ["api_client", "token_client"])
def test_the_public_may_not_ask_a_fresh_candidate_or_an_archived_version(request, who, batch, fresh, archived):
    client = request.getfixturevalue(who)
    for version in (fresh, archived):
        error = assert_error(predict(client, version.pk, batch=batch), 403, "model_not_public")
        assert error["detail"] == {"model": version.pk}
    assert not Prediction.objects.exists()  # refused before anything was stored


def test_the_refusal_says_why(api_client, fresh, archived):
    assert "never made active" in predict(api_client, fresh.pk).json()["error"]["message"]
    assert "archived" in predict(api_client, archived.pk).json()["error"]["message"]


@pytest.mark.parametrize("batch", [False, True])
def test_the_public_may_ask_vetted_versions(api_client, batch):
    lenet = shipped("lenet5")  # shipped, never active here: vetted
    response = predict(api_client, lenet.pk, batch=batch)
    assert response.status_code == 200, response.content
    answers = response.json()["results"] if batch else [response.json()]
    assert {answer["model_version"]["id"] for answer in answers} == {lenet.pk}


def test_a_version_once_active_stays_open_to_the_public(api_client, staff_user, fresh):
    lifecycle.model_version_activate(version=fresh, by=staff_user, reason="tried", force=True)
    lifecycle.model_version_activate(version=shipped("cnn"), by=staff_user, reason="back")
    assert predict(api_client, fresh.pk).status_code == 200


def test_a_version_that_does_not_exist_is_404(api_client):
    assert_error(predict(api_client, 987654), 404, "model_not_found")


@pytest.mark.parametrize("batch", [False, True])
def test_staff_may_ask_any_version(staff_client, fresh, archived, batch):
    for version in (fresh, archived):
        response = predict(staff_client, version.pk, batch=batch)
        assert response.status_code == 200, response.content
        answers = response.json()["results"] if batch else [response.json()]
        assert {answer["model_version"]["id"] for answer in answers} == {version.pk}


def test_the_schema_documents_the_refusal(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/predict/", "/api/predict/batch/"):
        assert {"403", "404"} <= set(schema["paths"][path]["post"]["responses"]), path
    activate = schema["paths"]["/api/models/{id}/activate/"]["post"]
    assert "force" in str(activate["requestBody"]) or "force" in str(schema["components"]["schemas"])
    assert "activation_needs_gate" in activate.get("description", "")


# ---------------------------------------------------------------- activations past the gate


def activate(client, version: ModelVersion, **body):
    return client.post(f"/api/models/{version.pk}/activate/", body, format="json")


@pytest.mark.parametrize("kind", ["fresh", "archived"])
def test_a_plain_activation_past_the_gate_is_refused(request, staff_client, kind):
    version = request.getfixturevalue(kind)
    events = LifecycleEvent.objects.count()
    error = assert_error(activate(staff_client, version, reason="it should be fine"), 409, "activation_needs_gate")
    assert error["detail"]["model"] == version.pk
    assert ModelVersion.objects.active().get() == shipped("cnn")
    assert LifecycleEvent.objects.count() == events


@pytest.mark.parametrize("kind", ["fresh", "archived"])
def test_a_forced_activation_needs_a_reason(request, staff_client, kind):
    version = request.getfixturevalue(kind)
    assert_error(activate(staff_client, version, force=True), 400, "reason_required")
    assert_error(activate(staff_client, version, force=True, reason="   "), 400, "reason_required")
    assert ModelVersion.objects.active().get() == shipped("cnn")


def test_a_forced_activation_is_its_own_logged_action(staff_client, archived, settings, inference_clock, caplog):
    settings.MODEL_REFRESH_SECONDS = 0
    with caplog.at_level(logging.WARNING, logger="classifier.lifecycle"):
        response = activate(staff_client, archived, force=True, reason="the new one misreads sevens")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"]["status"] == "active"
    assert body["event"]["action"] == "forced" and body["event"]["by"] == "staff"
    assert body["event"]["reason"] == "the new one misreads sevens"
    assert body["event"]["from_version"]["id"] == shipped("cnn").pk
    assert any("forced" in r.getMessage() and archived.label in r.getMessage() for r in caplog.records)
    assert registry.serving().ref.id == archived.pk
    # a switch like the others: rolling back returns to the version active before
    assert staff_client.post("/api/models/rollback/", {"reason": "undo"}, format="json").status_code == 200
    assert ModelVersion.objects.active().get() == shipped("cnn")


def test_force_changes_nothing_for_a_vetted_version(staff_client):
    response = activate(staff_client, shipped("lenet5"), force=True, reason="smaller")
    assert response.status_code == 200 and response.json()["event"]["action"] == "activate"


def test_the_gate_and_rollbacks_are_not_held_back(staff_user, fresh):
    lifecycle.model_version_activate(version=fresh, by=None, reason="passed the gate", action="promote", check=False)
    assert LifecycleEvent.objects.filter(action="promote", to_version=fresh).exists()
    lifecycle.model_version_activate(version=shipped("cnn"), by=staff_user, reason="back")
    assert lifecycle.model_version_rollback(by=staff_user, reason="again") == fresh


def test_force_in_the_api_must_be_a_boolean(staff_client, fresh):
    response = activate(staff_client, fresh, force="perhaps", reason="x")
    assert response.status_code == 400
    assert ModelVersion.objects.active().get() == shipped("cnn")


# ---------------------------------------------------------------- the admin: not the same button


def change_url(version: ModelVersion) -> str:
    return reverse("admin:classifier_modelversion_change", args=[version.pk])


def test_the_admin_offers_force_activation_instead_of_activate_for_unvetted_versions(admin_client, fresh):
    html = admin_client.get(change_url(fresh)).content.decode()
    assert reverse("admin:classifier_modelversion_force_activate", args=[fresh.pk]) in html
    assert reverse("admin:classifier_modelversion_activate", args=[fresh.pk]) not in html
    lenet = shipped("lenet5")
    html = admin_client.get(change_url(lenet)).content.decode()
    assert reverse("admin:classifier_modelversion_activate", args=[lenet.pk]) in html
    assert reverse("admin:classifier_modelversion_force_activate", args=[lenet.pk]) not in html


def test_the_admin_activate_page_refuses_an_archived_version(admin_client, archived):
    url = reverse("admin:classifier_modelversion_activate", args=[archived.pk])
    assert "promotion gate" in admin_client.get(url).content.decode()
    response = admin_client.post(url, {"reason": "just do it"})
    assert response.status_code == 200 and "would skip the promotion gate" in response.content.decode()
    assert ModelVersion.objects.active().get() == shipped("cnn")


def test_the_admin_force_page_needs_a_reason_and_records_forced(admin_client, admin_user, archived):
    url = reverse("admin:classifier_modelversion_force_activate", args=[archived.pk])
    page = admin_client.get(url).content.decode()
    assert "without the promotion gate" in page and "is archived" in page
    assert admin_client.post(url, {"reason": ""}).status_code == 200  # the form asks for one
    assert ModelVersion.objects.active().get() == shipped("cnn")
    response = admin_client.post(url, {"reason": "an emergency"})
    assert response.status_code == 302 and response.url == change_url(archived)
    event = LifecycleEvent.objects.get(action="forced")
    assert event.to_version == archived and event.by == admin_user and event.reason == "an emergency"


def test_the_admin_list_action_does_not_force(admin_client, fresh):
    changelist = reverse("admin:classifier_modelversion_changelist")
    admin_client.post(changelist, {"action": "activate_selected", "_selected_action": [fresh.pk]}, follow=True)
    assert ModelVersion.objects.active().get() == shipped("cnn")
