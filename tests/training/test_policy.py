"""The automatic retraining policy (training.policy): threshold, one run at a time, pause, audit log, and
a whole cycle (labels -> run -> shadow -> gate) with real training on MNIST."""
from __future__ import annotations

import threading

import pytest
import torch
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection

from classifier.labels import label_record
from classifier.models import LifecycleEvent, ModelVersion, Prediction
from classifier.shadow import shadow_reset, shadow_worker
from training.models import RetrainPolicy, RetrainPolicyEvent, TrainingRun
from training.policy import new_labels_count, policy_check, policy_get, policy_pause, policy_resume, policy_status

from tests.support.registry import assert_error

QUICK = {"epochs": 1, "mnist_limit": 3000, "val_size": 1000}


@pytest.fixture(autouse=True)
def _policy_settings(settings):
    settings.RETRAIN_POLICY_ENABLED = True
    settings.RETRAIN_POLICY_MIN_LABELS = 5
    settings.RETRAIN_POLICY_SHADOW_MIN_LABELS = 20
    settings.RETRAIN_POLICY_RUN_OPTIONS = QUICK
    settings.PROMOTION_SHADOW_MIN_LABELLED = 0
    shadow_reset()
    yield
    shadow_reset()


def drawings(count: int, *, start: int = 0, images=None, labels=None) -> list[Prediction]:
    """Predictions answered by the active version (its digit: 0), as the predict API stores them."""
    active = ModelVersion.objects.active().first()
    rows = []
    for i in range(start, start + count):
        pixels = images[i].numpy().tobytes() if images is not None else bytes([(i * 7 + j) % 256 for j in range(784)])
        rows.append(Prediction(image=f"drawings/policy/{i}.png", input_pixels=pixels, probabilities=[0.1] * 10,
                               digit=0, confidence=0.1, model_version=active, latency_ms=1.0))
    return Prediction.objects.bulk_create(rows)


def trusted_labeller():
    """An account staff trust (``classifier.trusted_labeller``): its labels train and judge versions."""
    user, created = get_user_model().objects.get_or_create(username="trusted-labeller")
    if created:
        user.user_permissions.add(Permission.objects.get(codename="trusted_labeller"))
    return get_user_model().objects.get(pk=user.pk)


def label(predictions, values, *, by=None, visitor: bool = False) -> None:
    """Labels from a trusted account (or ``by``); ``visitor``: each from its prediction's anonymous client."""
    by = None if visitor else by or trusted_labeller()
    for prediction, value in zip(predictions, values):
        label_record(prediction=prediction, value=value, by=by, via="label_key" if visitor else "account",
                     giver=f"key:{prediction.pk}", client_ip=f"203.0.113.{prediction.pk % 250}")


def test_a_run_is_queued_once_enough_labels_came_in(shipped_versions, django_capture_on_commit_callbacks):
    active = ModelVersion.objects.active().get()
    predictions = drawings(5)
    label(predictions[:4], [1, 2, 3, 4])
    outcome = policy_check()
    assert outcome.action == "waiting" and "1 more label" in outcome.message and outcome.new_labels == 4
    assert policy_status() == "waiting for 1 more label (threshold 5)"
    assert not TrainingRun.objects.exists()

    label(predictions[4:], [5])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:  # queued, not executed here
        outcome = policy_check()
    assert outcome.action == "queued" and callbacks
    run = TrainingRun.objects.get()
    assert outcome.run_id == run.pk and run.trigger == TrainingRun.Trigger.POLICY and run.created_by is None
    assert run.base_version == active and run.promote is False
    assert run.config["epochs"] == 1 and run.config["mnist_limit"] == 3000  # RETRAIN_POLICY_RUN_OPTIONS
    assert "started by the retraining policy" in run.log
    event = RetrainPolicyEvent.objects.get()
    assert (event.action, event.actor, event.by, event.run, event.version) == ("queued", "policy", None, run, active)
    assert "5 drawings labelled" in event.reason
    policy = policy_get()
    assert policy.last_run == run and new_labels_count(policy) == 0
    assert policy_status(policy) == f"run #{run.pk} queued"


def test_at_most_one_automatic_run_at_a_time(shipped_versions, django_capture_on_commit_callbacks):
    label(drawings(5), [1, 2, 3, 4, 5])
    with django_capture_on_commit_callbacks(execute=False):
        assert policy_check().action == "queued"
    label(drawings(20, start=5), [1] * 20)  # far more than the threshold again
    with django_capture_on_commit_callbacks(execute=False):
        outcome = policy_check()
        again = policy_check()
    assert outcome.action == again.action == "training"
    assert TrainingRun.objects.count() == 1
    run = TrainingRun.objects.get()
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.FAILED, error="out of memory")
    outcome = policy_check()  # the failure is noted once; those labels were counted for it
    assert outcome.action == "failed" and "out of memory" in outcome.message
    assert RetrainPolicyEvent.objects.filter(action="failed", actor="policy", run=run).count() == 1
    with django_capture_on_commit_callbacks(execute=False):
        outcome = policy_check()
    assert outcome.action == "queued" and TrainingRun.objects.count() == 2  # the 20 new labels


def test_visitors_labels_count_only_once_trusted(shipped_versions, staff_user, settings):
    """Anonymous labels do not feed the loop: they wait until staff confirm them (or the site says they train)."""
    predictions = drawings(5)
    label(predictions, [1, 2, 3, 4, 5], visitor=True)
    outcome = policy_check()
    assert outcome.action == "waiting" and outcome.new_labels == 0 and "5 more labels" in outcome.message
    for prediction in predictions[:4]:  # staff confirm four of them from the review queue
        label_record(prediction=prediction, value=prediction.label, by=staff_user, via="review")
    assert policy_check().new_labels == 4
    settings.LABELS_TRAIN_TRUST = "visitor"  # a small private site
    assert new_labels_count(policy_get()) == 5


def test_not_a_digit_labels_never_count(shipped_versions, staff_user):
    predictions = drawings(8)
    label(predictions, ["x"] * 8, by=staff_user)
    assert Prediction.objects.filter(not_a_digit=True).count() == 8
    outcome = policy_check()
    assert outcome.action == "waiting" and outcome.new_labels == 0
    label(predictions[:3], [7, 7, 7], by=staff_user)  # staff change their mind: a digit counts
    assert policy_check().new_labels == 3


def test_a_paused_policy_does_nothing_until_resumed(shipped_versions, staff_user, django_capture_on_commit_callbacks):
    policy_pause(by=staff_user, reason="holiday")
    label(drawings(6), [1] * 6)
    outcome = policy_check()
    assert outcome.action == "paused" and "paused by staff" in outcome.message and "holiday" in outcome.message
    assert not TrainingRun.objects.exists()
    policy_resume(by=staff_user)
    with django_capture_on_commit_callbacks(execute=False):
        assert policy_check().action == "queued"
    events = list(RetrainPolicyEvent.objects.order_by("id").values_list("action", "actor", "by__username"))
    assert events == [("paused", "", "staff"), ("resumed", "", "staff"), ("queued", "policy", None)]


def test_the_policy_api_is_staff_only_and_audited(api_client, token_client, staff_client, shipped_versions):
    assert api_client.get("/api/policy/").status_code == 401
    assert token_client.get("/api/policy/").status_code == 403
    assert token_client.post("/api/policy/", {"paused": True}, format="json").status_code == 403
    reply = staff_client.get("/api/policy/")
    assert reply.status_code == 200 and reply.json()["paused"] is False
    assert reply.json()["status"].startswith("waiting for 5 more labels")
    reply = staff_client.post("/api/policy/", {"paused": True, "reason": "audit", "min_new_labels": 50}, format="json")
    assert reply.status_code == 200, reply.json()
    body = reply.json()
    assert body["paused"] is True and body["paused_by"] == "staff" and body["min_new_labels"] == 50
    assert body["status"].startswith("paused by staff")
    assert [e["action"] for e in body["events"]] == ["changed", "paused"]
    assert_error(staff_client.post("/api/policy/", {"paused": True}, format="json"), 409, "already_paused")
    assert_error(staff_client.post("/api/policy/", {"min_new_labels": 0}, format="json"), 400, "invalid_request")
    assert_error(staff_client.post("/api/policy/", {"bogus": 1}, format="json"), 400, "invalid_request")
    assert staff_client.post("/api/policy/", "[1]", content_type="application/json").status_code == 400
    assert staff_client.post("/api/policy/", {"paused": False}, format="json").json()["paused"] is False
    assert RetrainPolicy.objects.get().min_new_labels == 50


def test_the_admin_shows_the_status_and_pauses_through_the_service(client, staff_user, shipped_versions):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    reply = client.get("/admin/training/retrainpolicy/", follow=True)
    assert reply.status_code == 200 and b"waiting for 5 more labels" in reply.content
    policy = policy_get()
    reply = client.post(f"/admin/training/retrainpolicy/{policy.pk}/change/", {
        "paused": "on", "pause_reason": "checking the data", "min_new_labels": "7", "shadow_min_labels": "20"})
    assert reply.status_code == 302
    policy.refresh_from_db()
    assert policy.paused and policy.paused_by == staff_user and policy.min_new_labels == 7
    assert set(RetrainPolicyEvent.objects.values_list("action", flat=True)) == {"paused", "changed"}
    assert b"paused by staff" in client.get(f"/admin/training/retrainpolicy/{policy.pk}/change/").content


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_checks_cannot_queue_two_runs(shipped_versions, settings):
    settings.TRAINING_EXECUTOR = "celery"  # a broker nobody listens on: the run is recorded, then fails to queue
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    label(drawings(5), [1, 2, 3, 4, 5])
    barrier = threading.Barrier(4)
    outcomes = []

    def check() -> None:
        barrier.wait()
        try:
            outcomes.append(policy_check().action)
        finally:
            connection.close()

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes).count("queued") == 1 and len(outcomes) == 4
    assert TrainingRun.objects.filter(trigger="policy").count() == 1


# ----------------------------------------------------------------------------- a whole cycle, really trained


def shadow_traffic(mnist_test, *, start: int, count: int) -> list[Prediction]:
    """Drawings the active version answered, which the candidates in shadow answer too (the real worker's
    code, run here in the foreground)."""
    predictions = drawings(count, start=start, images=mnist_test.images)
    items = [(p.pk, torch.frombuffer(bytearray(p.input_pixels), dtype=torch.uint8).float().div(255).view(1, 28, 28))
             for p in predictions]
    assert shadow_worker().process(items) == count
    return predictions


@pytest.mark.slow
@pytest.mark.parametrize("shadow_labels", ["true", "the active version's"])
def test_a_whole_cycle(weak_active, mnist_test, shadow_labels, settings, django_capture_on_commit_callbacks):
    # The inline run trains inside this test's transaction, which its heartbeat thread (another
    # connection) cannot see: no heartbeat while it trains (it takes longer than one heartbeat period).
    settings.TRAINING_HEARTBEAT_SECONDS = 600
    # 1. labels arrive -> a fine-tune of the (weak) active version is queued and trained (inline executor)
    label(drawings(6, start=0, images=mnist_test.images), [int(d) for d in mnist_test.labels[:6]])
    with django_capture_on_commit_callbacks(execute=True):
        outcome = policy_check()
    assert outcome.action == "queued"
    run = TrainingRun.objects.get(pk=outcome.run_id)
    assert run.status == "succeeded", run.error
    version = run.result_version
    assert version.parent == weak_active and version.status == "candidate" and version.in_shadow
    register = LifecycleEvent.objects.get(action="register", to_version=version)
    assert register.actor == "policy" and register.run_id == run.pk
    assert LifecycleEvent.objects.get(action="shadow", to_version=version).actor == "policy"
    assert policy_check().action == "shadow"  # 0 of 20 labelled shadow drawings

    # 2. labelled traffic accumulates in shadow; the gate decides at the next check. Visitors' labels are
    # no evidence: thirty of them (saying "the active version was right") leave the gate waiting.
    visitors = shadow_traffic(mnist_test, start=200, count=30)
    label(visitors, [0] * 30, visitor=True)
    outcome = policy_check()
    assert outcome.action == "shadow" and "0 of 20 labelled" in outcome.message, outcome.message
    traffic = shadow_traffic(mnist_test, start=100, count=30)
    truth = [int(mnist_test.labels[100 + i]) for i in range(30)]
    label(traffic, truth if shadow_labels == "true" else [0] * 30)  # the weak active version always says 0
    outcome = policy_check()
    version.refresh_from_db()
    run.refresh_from_db()
    if shadow_labels == "true":
        assert outcome.action == "promoted", outcome.message
        assert version.status == "active" and not version.in_shadow
        promote = LifecycleEvent.objects.get(action="promote", to_version=version)
        assert promote.actor == "policy" and promote.by is None and promote.run_id == run.pk
        assert "significantly better" in promote.reason and "shadow traffic" in promote.reason
    else:
        assert outcome.action == "kept", outcome.message
        assert version.status == "candidate" and not version.in_shadow
        assert ModelVersion.objects.active().get() == weak_active
        assert "significantly worse" in outcome.message and "shadow traffic" in outcome.message
        assert "Retraining policy: not promoted" in version.notes
        assert LifecycleEvent.objects.get(action="unshadow", to_version=version).actor == "policy"
    assert run.promotion["by"] == "policy" and run.promotion["promoted"] is (shadow_labels == "true")
    assert "shadow" in run.promotion["gate"]["figures"]["order"]
    actions = list(RetrainPolicyEvent.objects.order_by("id").values_list("action", "actor"))
    assert actions == [("queued", "policy"), ("shadow", "policy"),
                       ("promoted" if shadow_labels == "true" else "kept", "policy")]

    # 3. the cycle is settled, once; the 30 labels that came in meanwhile start the next one
    with django_capture_on_commit_callbacks(execute=False):
        outcome = policy_check()
    assert outcome.action == "queued" and outcome.new_labels == 30
    assert TrainingRun.objects.get(pk=outcome.run_id).base_version == ModelVersion.objects.active().get()
    assert RetrainPolicyEvent.objects.filter(action__in=["promoted", "kept"]).count() == 1
