"""The lifecycle in the admin: upload, activate, roll back, archive, the audit log."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier.models import LifecycleEvent, ModelVersion
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

VERSIONS = reverse("admin:classifier_modelversion_changelist")


def version_url(version: ModelVersion) -> str:
    return reverse("admin:classifier_modelversion_change", args=[version.pk])


def test_changelist_offers_upload_and_rollback(admin_client):
    html = admin_client.get(VERSIONS).content.decode()
    assert reverse("admin:classifier_modelversion_upload") in html
    assert reverse("admin:classifier_modelversion_rollback") in html
    assert f'href="{reverse("dashboard:index")}"' in html


def test_a_trained_version_links_to_its_curves_on_the_dashboard(admin_client):
    version = ModelVersion.objects.get(name="logreg")
    TrainingRun.objects.create(config={"arch": "logreg", "epochs": 1}, executor="inline", status="succeeded",
                               result_version=version)
    html = admin_client.get(version_url(version)).content.decode()
    assert f'href="{reverse("dashboard:index")}?version={version.pk}"' in html


def test_change_page_shows_lifecycle_links_lineage_and_history(admin_client, admin_user):
    from classifier import lifecycle

    cnn, lenet = ModelVersion.objects.get(name="cnn"), ModelVersion.objects.get(name="lenet5")
    lifecycle.model_version_activate(version=lenet, by=admin_user, reason="try <lenet>")
    html = admin_client.get(version_url(lenet)).content.decode()
    assert reverse("admin:classifier_modelversion_rollback") in html  # lenet is active: roll back, not activate
    assert reverse("admin:classifier_modelversion_activate", args=[lenet.pk]) not in html
    assert "try &lt;lenet&gt;" in html and "activated" in html and "cnn v1" in html  # the audit log, escaped
    html = admin_client.get(version_url(cnn)).content.decode()
    assert reverse("admin:classifier_modelversion_activate", args=[cnn.pk]) in html
    assert reverse("admin:classifier_modelversion_archive", args=[cnn.pk]) in html
    assert "Download checkpoint" in html


def test_activate_and_roll_back_through_confirmation_pages(admin_client):
    mlp = ModelVersion.objects.get(name="mlp")
    url = reverse("admin:classifier_modelversion_activate", args=[mlp.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and "becomes a candidate again" in page.content.decode()
    assert ModelVersion.objects.active().get().name == "cnn"  # GET changes nothing

    response = admin_client.post(url, {"reason": "from the admin"})
    assert response.status_code == 302 and response.url == version_url(mlp)
    assert ModelVersion.objects.active().get() == mlp
    assert LifecycleEvent.objects.get(action="activate").reason == "from the admin"

    response = admin_client.post(reverse("admin:classifier_modelversion_rollback"), {"reason": "back"})
    assert response.status_code == 302
    assert ModelVersion.objects.active().get().name == "cnn"
    # refused actions come back as messages, not errors
    cnn = ModelVersion.objects.get(name="cnn")
    response = admin_client.post(reverse("admin:classifier_modelversion_archive", args=[cnn.pk]), {}, follow=True)
    assert "is the active version" in response.content.decode()


def test_list_actions_activate_and_archive(admin_client):
    lenet, mlp = ModelVersion.objects.get(name="lenet5"), ModelVersion.objects.get(name="mlp")
    admin_client.post(VERSIONS, {"action": "activate_selected", "_selected_action": [lenet.pk]})
    assert ModelVersion.objects.active().get() == lenet
    response = admin_client.post(VERSIONS, {"action": "archive_selected", "_selected_action": [lenet.pk, mlp.pk]},
                                 follow=True)
    mlp.refresh_from_db()
    assert mlp.status == "archived" and ModelVersion.objects.active().get() == lenet
    assert "is the active version" in response.content.decode()


def test_upload_page_registers_a_valid_checkpoint_and_refuses_garbage(admin_client, mnist_settings,
                                                                     zero_logreg_checkpoint):
    url = reverse("admin:classifier_modelversion_upload")
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"checkpoint": SimpleUploadedFile("x.pt", b"garbage"), "name": "junk"})
    assert response.status_code == 200 and "Refused: uploaded file is not a PyTorch checkpoint" in response.content.decode()
    response = admin_client.post(url, {"checkpoint": SimpleUploadedFile("zero.pt", zero_logreg_checkpoint),
                                       "name": "zero", "notes": "all zeros"})
    assert response.status_code == 302
    version = ModelVersion.objects.get(name="zero")
    assert version.status == "candidate" and version.test_accuracy == pytest.approx(0.098)
    html = admin_client.get(version_url(version)).content.decode()
    assert "9.80%" in html and "no field set when evaluated" in html


def test_non_staff_cannot_use_lifecycle_pages(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="bob", password="pw-bob-12345"))
    cnn = ModelVersion.objects.get(name="cnn")
    for url in (reverse("admin:classifier_modelversion_upload"), reverse("admin:classifier_modelversion_rollback"),
                reverse("admin:classifier_modelversion_activate", args=[cnn.pk]),
                reverse("admin:training_trainingrun_start")):
        assert client.post(url).status_code == 302  # to the admin login
    assert ModelVersion.objects.active().get() == cnn


def test_the_audit_log_has_its_own_list(admin_client):
    assert admin_client.get(reverse("admin:classifier_lifecycleevent_changelist")).status_code == 200
    # the list's old address (from when the log lived in the training app) still leads there
    old = admin_client.get("/admin/training/lifecycleevent/")
    assert old.status_code == 301 and old.url == reverse("admin:classifier_lifecycleevent_changelist")
