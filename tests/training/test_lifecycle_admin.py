"""The lifecycle in the admin: upload, activate, roll back, archive; training runs: start, cancel, follow."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier.models import ModelVersion
from training.models import LifecycleEvent, TrainingRun

pytestmark = pytest.mark.django_db

VERSIONS = reverse("admin:classifier_modelversion_changelist")
RUNS = reverse("admin:training_trainingrun_changelist")


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
    django_user_model.objects.create_user(username="bob", password="pw-bob-12345")
    client.login(username="bob", password="pw-bob-12345")
    cnn = ModelVersion.objects.get(name="cnn")
    for url in (reverse("admin:classifier_modelversion_upload"), reverse("admin:classifier_modelversion_rollback"),
                reverse("admin:classifier_modelversion_activate", args=[cnn.pk]),
                reverse("admin:training_trainingrun_start")):
        assert client.post(url).status_code == 302  # to the admin login
    assert ModelVersion.objects.active().get() == cnn


def test_start_form_queues_a_run_and_cancel_action(admin_client, django_capture_on_commit_callbacks):
    start = reverse("admin:training_trainingrun_start")
    assert "Start a training run" in admin_client.get(RUNS).content.decode()
    assert admin_client.get(start).status_code == 200
    response = admin_client.post(start, {"epochs": "1"})  # no architecture and no base version
    assert response.status_code == 200 and "arch is required" in response.content.decode()

    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client.post(start, {"arch": "logreg", "epochs": "1", "mnist_limit": "6000", "val_size": "1000",
                                             "use_drawings": "on", "extra_repeat": "2", "device": "auto", "seed": "0"})
    assert response.status_code == 302
    run = TrainingRun.objects.get()
    assert run.status == "queued" and run.config["extra_repeat"] == 2 and run.config["use_drawings"] is True
    assert response.url == reverse("admin:training_trainingrun_change", args=[run.pk])
    assert admin_client.get(response.url).status_code == 200

    admin_client.post(RUNS, {"action": "cancel_selected", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_run_change_page_shows_progress_metrics_and_links(admin_client):
    version = ModelVersion.objects.get(name="logreg")
    matrix = [[5 if t == p else 0 for p in range(10)] for t in range(10)]
    run = TrainingRun.objects.create(
        config={"arch": "logreg", "epochs": 1}, executor="inline", status="succeeded", progress=1.0, epoch=1,
        total_epochs=1, step=19, total_steps=19, result_version=version, log="line <one>\n",
        history={"epochs": [{"epoch": 1, "train_loss": 0.88, "train_accuracy": 0.7, "val_loss": 0.51,
                             "val_accuracy": 0.845, "lr": 0.0001, "seconds": 0.1}], "batches": []},
        metrics={"test_accuracy": 0.8524, "field_accuracy": 0.5, "field_n": 50, "field_confusion_matrix": matrix},
        promotion={"requested": True, "promoted": False, "reason": "not promoted: MNIST test 85.24% < 99.65%"},
    )
    html = admin_client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert "85.24%" in html and "84.50%" in html and "not promoted: MNIST test" in html
    assert f'href="{version_url(version)}"' in html and "line &lt;one&gt;" in html
    assert html.count('<td class="cm-hit') == 10
    listing = admin_client.get(RUNS).content.decode()
    assert '<span class="run-status run-status--succeeded">succeeded</span>' in listing
    assert admin_client.get(reverse("admin:training_lifecycleevent_changelist")).status_code == 200
