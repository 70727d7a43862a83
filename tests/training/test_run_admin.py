"""Training runs in the admin: start, cancel, follow."""
from __future__ import annotations

import pytest
from django.urls import reverse

from classifier.models import ModelVersion
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

RUNS = reverse("admin:training_trainingrun_changelist")


def version_url(version: ModelVersion) -> str:
    return reverse("admin:classifier_modelversion_change", args=[version.pk])


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
