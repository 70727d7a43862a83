"""The one-command default: no broker, runs execute in a background thread of the server process."""
from __future__ import annotations

import time

import pytest

from classifier.models import ModelVersion
from training.executor import thread_executor
from training.models import TrainingRun

from .conftest import QUICK_RUN

RETRAIN = "/api/retrain/"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_runs_train_in_a_server_thread_and_cancel_within_a_batch(shipped_versions, staff_client, mnist_settings,
                                                                settings):
    settings.TRAINING_EXECUTOR = "thread"
    settings.TRAINING_CANCEL_POLL_SECONDS = 0.05
    versions_before = ModelVersion.objects.count()

    response = staff_client.post(RETRAIN, QUICK_RUN, format="json")  # answers at once; the thread trains

    assert response.status_code == 202 and response.json()["status"] in {"queued", "running"}
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.executor == "thread"
    finished = wait_for(lambda: staff_client.get(f"/api/runs/{run.pk}/").json()["status"] in TrainingRun.FINISHED,
                        60, "the run to finish")
    assert finished
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.result_version is not None and ModelVersion.objects.count() == versions_before + 1

    # A long run, cancelled while it trains: it stops at the next batch and registers nothing.
    long = staff_client.post(RETRAIN, {"arch": "logreg", "epochs": 200, "val_size": 1000}, format="json").json()
    wait_for(lambda: TrainingRun.objects.filter(pk=long["id"], status="running", step__gt=0).exists(), 60,
             "the long run to start training")
    asked = time.monotonic()
    response = staff_client.post(f"/api/runs/{long['id']}/cancel/")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    wait_for(lambda: TrainingRun.objects.get(pk=long["id"]).status == "cancelled", 15, "the run to stop")
    assert time.monotonic() - asked < 5
    stopped = TrainingRun.objects.get(pk=long["id"])
    assert stopped.result_version is None and stopped.step < stopped.total_steps
    assert "cancelled; no model version was registered" in stopped.log
    assert ModelVersion.objects.count() == versions_before + 1
    assert thread_executor().join(10)
