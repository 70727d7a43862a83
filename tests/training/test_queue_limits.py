"""How many runs may wait: TRAINING_MAX_QUEUED_PER_USER queued-or-running runs per user and
TRAINING_MAX_QUEUED in all, refused with 409 ``too_many_runs`` naming the runs; safe when the requests
come at the same moment; the retraining policy's own run is never refused."""
from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from rest_framework.test import APIClient

from classifier.labels import label_record
from classifier.models import Label, ModelVersion, Prediction
from tests.support.registry import assert_error
from training import services
from training.models import TrainingRun
from training.policy import policy_check
from training.services import training_run_start

from .conftest import QUICK_RUN

RETRAIN = "/api/retrain/"
BIG_RUN = {"arch": "cnn", "epochs": 20}  # what the review sent ten of at once


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def staff(django_user_model):
    """Three staff accounts."""
    return [django_user_model.objects.create_user(username=f"staff{i}", is_staff=True) for i in range(3)]


@pytest.mark.django_db
def test_a_user_may_have_two_runs_waiting(staff, settings, django_capture_on_commit_callbacks):
    settings.TRAINING_MAX_QUEUED_PER_USER, settings.TRAINING_MAX_QUEUED = 2, 8
    first, second = client_for(staff[0]), client_for(staff[1])
    with django_capture_on_commit_callbacks(execute=False):  # queued, never executed here
        ids = [first.post(RETRAIN, QUICK_RUN, format="json").json()["id"] for _ in range(2)]
        TrainingRun.objects.filter(pk=ids[1]).update(status=TrainingRun.Status.RUNNING)
        refused = first.post(RETRAIN, QUICK_RUN, format="json")
        error = assert_error(refused, 409, "too_many_runs")
        assert error["detail"] == [{"id": ids[0], "status": "queued"}, {"id": ids[1], "status": "running"}]
        assert f"#{ids[0]} queued, #{ids[1]} running" in error["message"]
        assert "TRAINING_MAX_QUEUED_PER_USER" in error["message"]
        assert TrainingRun.objects.count() == 2

        assert second.post(RETRAIN, QUICK_RUN, format="json").status_code == 202  # someone else may
        assert first.post(f"/api/runs/{ids[0]}/cancel/").status_code == 202  # a finished run frees a place
        assert first.post(RETRAIN, QUICK_RUN, format="json").status_code == 202
        assert_error(first.post(RETRAIN, QUICK_RUN, format="json"), 409, "too_many_runs")

        settings.TRAINING_MAX_QUEUED_PER_USER = 0  # off
        assert first.post(RETRAIN, QUICK_RUN, format="json").status_code == 202


@pytest.mark.django_db
def test_at_most_eight_runs_waiting_in_all(django_user_model, settings, django_capture_on_commit_callbacks):
    settings.TRAINING_MAX_QUEUED_PER_USER, settings.TRAINING_MAX_QUEUED = 2, 8
    robot = django_user_model.objects.create_user(username="robot")  # a service account's token, not staff
    robot.user_permissions.add(Permission.objects.get(codename="start_training_run"))
    users = [django_user_model.objects.create_user(username=f"u{i}", is_staff=True) for i in range(4)]
    with django_capture_on_commit_callbacks(execute=False):
        for user in users:
            for _ in range(2):
                assert client_for(user).post(RETRAIN, QUICK_RUN, format="json").status_code == 202
        error = assert_error(client_for(robot).post(RETRAIN, QUICK_RUN, format="json"), 409, "too_many_runs")
    assert "8 runs are queued or running" in error["message"] and "TRAINING_MAX_QUEUED)" in error["message"]
    assert [run["id"] for run in error["detail"]] == list(TrainingRun.objects.order_by("id").values_list("id", flat=True))
    assert not TrainingRun.objects.filter(created_by=robot).exists()


@pytest.mark.django_db
def test_the_admin_start_form_shows_the_refusal(staff, settings, client, django_capture_on_commit_callbacks):
    settings.TRAINING_MAX_QUEUED_PER_USER = 1
    client.force_login(staff[0])
    with django_capture_on_commit_callbacks(execute=False):
        training_run_start(spec=QUICK_RUN, by=staff[0])
        response = client.post("/admin/training/trainingrun/start/", {"arch": "logreg", "epochs": "1"})
    assert response.status_code == 200 and "at most 1 per person" in response.content.decode()
    assert TrainingRun.objects.count() == 1


def _label_five(by) -> None:
    active = ModelVersion.objects.active().first()
    rows = Prediction.objects.bulk_create(
        Prediction(image=f"drawings/limits/{i}.png", input_pixels=bytes([(i * 7 + j) % 256 for j in range(784)]),
                   probabilities=[0.1] * 10, digit=0, confidence=0.1, model_version=active, latency_ms=1.0)
        for i in range(5))
    for prediction, value in zip(rows, [1, 2, 3, 4, 5]):
        label_record(prediction=prediction, value=value, by=by, via=Label.Via.REVIEW)  # staff: trusted


@pytest.mark.django_db
def test_the_policy_still_queues_its_run_when_users_filled_the_queue(shipped_versions, staff, settings,
                                                                   django_capture_on_commit_callbacks):
    settings.TRAINING_MAX_QUEUED_PER_USER, settings.TRAINING_MAX_QUEUED = 2, 2
    settings.RETRAIN_POLICY_ENABLED = True
    settings.RETRAIN_POLICY_MIN_LABELS = 5
    settings.RETRAIN_POLICY_RUN_OPTIONS = {"epochs": 1, "mnist_limit": 3000, "val_size": 1000}
    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(2):
            training_run_start(spec=QUICK_RUN, by=staff[0])
        with pytest.raises(Exception) as full:
            training_run_start(spec=QUICK_RUN, by=staff[1])
        assert getattr(full.value, "code", None) == "too_many_runs"
        _label_five(staff[2])
        outcome = policy_check()
    assert outcome.action == "queued", outcome.message
    run = TrainingRun.objects.get(pk=outcome.run_id)
    assert run.trigger == TrainingRun.Trigger.POLICY and run.created_by is None
    assert TrainingRun.objects.unfinished().count() == 3  # the limit, plus the policy's one


def _simultaneously(count: int, start) -> list[str]:
    """``start(i)`` in ``count`` threads released together; each one's outcome: "ok" or the error code."""
    barrier = threading.Barrier(count)
    outcomes: list[str] = []

    def one(i: int) -> None:
        try:
            barrier.wait()
            start(i)
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
            outcomes.append(getattr(exc, "code", repr(exc)))
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return sorted(outcomes)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_ten_simultaneous_starts_get_two_runs(django_user_model, settings, monkeypatch):
    settings.TRAINING_MAX_QUEUED_PER_USER, settings.TRAINING_MAX_QUEUED = 2, 8
    monkeypatch.setattr(services, "dispatch", lambda run: None)  # stay queued: nothing trains here
    user = django_user_model.objects.create_user(username="eager", is_staff=True)

    outcomes = _simultaneously(10, lambda i: training_run_start(spec=BIG_RUN, by=user))

    assert outcomes == ["ok"] * 2 + ["too_many_runs"] * 8
    assert TrainingRun.objects.filter(created_by=user).count() == 2

    others = [django_user_model.objects.create_user(username=f"other{i}", is_staff=True) for i in range(10)]
    outcomes = _simultaneously(10, lambda i: training_run_start(spec=BIG_RUN, by=others[i]))
    assert outcomes == ["ok"] * 6 + ["too_many_runs"] * 4  # 8 in all
    assert TrainingRun.objects.unfinished().count() == 8
