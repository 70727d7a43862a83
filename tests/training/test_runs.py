"""Training runs through the API: start, follow, cancel, fail, reap; progress reporting and events.

Runs execute inline here (right after the request's transaction commits); the thread executor and
a real Celery worker have their own tests.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier.drawings import in_field_set
from classifier.models import LifecycleEvent, ModelVersion
from tests.support.registry import assert_error
from training.models import TrainingRun
from training.reaper import training_runs_reap
from training.reporting import CancelFlag, RunReporter
from training.views import RunListView

from .conftest import QUICK_RUN

pytestmark = pytest.mark.django_db

RETRAIN = "/api/retrain/"
RUNS = "/api/runs/"


def receive_all(channel: str) -> list[dict]:
    layer = get_channel_layer()
    messages = []

    async def drain():
        import asyncio

        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), 0.05))
            except asyncio.TimeoutError:
                return

    async_to_sync(drain)()
    return messages


def listen(group: str) -> str:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


# ------------------------------------------------------------------ a run end to end


@pytest.mark.slow
def test_retrain_trains_registers_and_reports(staff_client, mnist_settings, labelled_drawings,
                                              django_capture_on_commit_callbacks):
    drawings = labelled_drawings(40)
    field_ids = {p.pk for p in drawings if in_field_set(p.pk)}
    active = ModelVersion.objects.active().get()
    all_runs = listen("training")

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(RETRAIN, {**QUICK_RUN, "extra_repeat": 3}, format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    run_id = body["id"]
    assert body["url"] == f"http://testserver/api/runs/{run_id}/"
    assert body["ws_url"] == f"ws://testserver/ws/training/{run_id}/"
    state = staff_client.get(body["url"]).json()
    assert state["status"] == "succeeded", state["error"]
    assert state["config"]["arch"] == "logreg" and state["config"]["train"]["epochs"] == 1
    assert state["progress"]["fraction"] == 1.0 and state["progress"]["step"] == state["progress"]["total_steps"] > 0
    assert len(state["history"]["epochs"]) == 1 and state["history"]["batches"]
    assert {"train_loss", "val_accuracy", "lr"} <= set(state["history"]["epochs"][0])
    assert "epoch 1/1" in state["log"] and "registered logreg v2" in state["log"]

    # the data: MNIST subset + the training part of the drawings, never the field set
    used = set(state["data"]["drawing_ids"])
    assert used and not used & field_ids and used | field_ids == {p.pk for p in drawings}
    assert state["data"]["field_set"] == len(field_ids) > 0
    assert state["data_fingerprint"].startswith("mnist:") and "[:6000]" in state["data_fingerprint"]
    assert f"drawings:{len(used)}:" in state["data_fingerprint"] and state["data_fingerprint"].endswith("x3")

    # the version: a candidate with its lineage and both evaluations
    version = ModelVersion.objects.get(pk=state["result_version"]["id"])
    assert version.status == "candidate" and version.name == "logreg" and version.version == 2
    assert version.parent == active  # from scratch: the active version at the time, for lineage
    assert version.training_config["run"] == run_id and version.training_config["started_from"] == "scratch"
    assert version.training_config["active_at_start"] == active.pk
    assert version.data_fingerprint == state["data_fingerprint"][:100]
    assert 0.8 < version.test_accuracy < 0.95 and len(version.confusion_matrix) == 10
    assert version.metrics["field_n"] == len(field_ids) and version.metrics["field_accuracy"] is not None
    assert len(version.metrics["field_confusion_matrix"]) == 10
    # (the session's media folder is shared: a run of the same id in another test may have stored its file first)
    assert len(version.sha256) == 64
    assert re.fullmatch(rf"checkpoints/runs/run-{run_id}-logreg(_\w+)?\.pt", version.checkpoint.name)
    assert version.training_run.pk == run_id
    from classifier.checkpoints import version_checkpoint

    assert version_checkpoint(version)["metrics"]["test_accuracy"] == version.test_accuracy

    # not asked to promote: stays a candidate, the gate's verdict recorded anyway
    assert state["promotion"]["requested"] is False and state["promotion"]["promoted"] is False
    assert "promotion not requested" in state["promotion"]["reason"] and "MNIST test" in state["promotion"]["reason"]
    assert ModelVersion.objects.active().get() == active
    event = LifecycleEvent.objects.get(to_version=version)
    assert event.action == "register" and event.run_id == run_id

    # lifecycle events went to the "training" group: queued, running, succeeded
    lifecycle = [m for m in receive_all(all_runs) if m["type"] == "run.lifecycle"]
    assert [m["data"]["status"] for m in lifecycle] == ["queued", "running", "succeeded"]
    assert lifecycle[-1]["data"]["version"] == version.pk and lifecycle[-1]["data"]["run"] == run_id

    listed = staff_client.get(RUNS).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == run_id
    assert listed["results"][0]["result_version"]["id"] == version.pk
    assert staff_client.get(RUNS, {"status": "failed"}).json()["count"] == 0
    assert_error(staff_client.get(RUNS, {"status": "bogus"}), 400, "invalid_request")


@pytest.mark.slow
def test_fine_tuning_keeps_the_architecture_and_records_the_base(staff_client, mnist_settings,
                                                                 django_capture_on_commit_callbacks):
    base = ModelVersion.objects.get(name="logreg")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(RETRAIN, {"base_version": base.pk, "epochs": 1, "mnist_limit": 6000,
                                               "val_size": 1000, "lr": 0.001, "promote": True}, format="json")
    state = staff_client.get(response.json()["url"]).json()
    assert state["status"] == "succeeded", state["error"]
    assert state["base"]["id"] == base.pk and state["config"]["arch"] == "logreg"
    version = ModelVersion.objects.get(pk=state["result_version"]["id"])
    assert version.parent == base and version.training_config["base_version"] == base.pk
    assert version.test_accuracy > 0.9  # it started from the trained weights, not from scratch
    # asked to promote, but it is not as good as the active cnn: it stays a candidate, reason recorded
    assert state["promotion"]["requested"] is True and state["promotion"]["promoted"] is False
    assert state["promotion"]["reason"].startswith("not promoted: MNIST test")
    assert "field set is empty" in state["promotion"]["reason"]
    assert version.status == "candidate" and "Gate: not promoted" in version.notes


@pytest.mark.slow
def test_promotion_when_the_gate_passes(staff_client, weak_active, labelled_drawings,
                                        django_capture_on_commit_callbacks):
    labelled_drawings(40)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(RETRAIN, {**QUICK_RUN, "promote": True}, format="json")
    state = staff_client.get(response.json()["url"]).json()
    assert state["promotion"]["promoted"] is True, state["promotion"]
    assert state["promotion"]["reason"].startswith("promoted: MNIST test") and "field set" in state["promotion"]["reason"]
    gate = state["promotion"]["gate"]
    assert gate["active"] == weak_active.pk and gate["figures"]["field"]["n"] > 0
    version = ModelVersion.objects.active().get()
    assert version.pk == state["result_version"]["id"] and version.parent == weak_active
    event = LifecycleEvent.objects.filter(action="promote").get()
    assert event.from_version == weak_active and event.to_version == version and event.run_id == state["id"]


# ------------------------------------------------------------------ validation and permissions


@pytest.mark.parametrize("payload, code, fragment", [
    ({"arch": "logreg", "epoch": 3}, "invalid_request", "epoch"),
    ({"arch": "resnet"}, "invalid_request", "arch"),
    ({"epochs": 2}, "invalid_config", "arch is required"),
    ({"arch": "logreg", "epochs": 0}, "invalid_request", "epochs"),
    ({"arch": "logreg", "lr": -1}, "invalid_request", "lr"),
    ({"arch": "logreg", "device": "tpu"}, "invalid_request", "device"),
    ({"arch": "cnn", "arch_config": {"widths": [4096, 4096, 4096]}}, "invalid_config", "parameters"),
    ({"arch": "cnn", "arch_config": {"depth": 3}}, "invalid_config", "unknown config field"),
    ({"arch": "logreg", "mnist_limit": 2000}, "invalid_config", "mnist_limit"),
    ({"arch": "logreg", "base_version": 999999}, "invalid_config", "no model version"),
    ({"arch": "cnn", "base_version": "LOGREG"}, "invalid_request", "base_version"),
], ids=["unknown-field", "unknown-arch", "no-arch", "epochs", "lr", "device", "too-big", "bad-arch-config",
        "tiny-subset", "missing-base", "bad-base"])
def test_invalid_configs_get_the_standard_error_body(staff_client, payload, code, fragment):
    if payload.get("base_version") == "LOGREG":
        payload = {**payload, "base_version": ModelVersion.objects.get(name="logreg").pk}
        code, fragment = "invalid_config", "does not match"
    error = assert_error(staff_client.post(RETRAIN, payload, format="json"), 400, code)
    assert fragment in error["message"] or fragment in str(error["detail"])
    assert not TrainingRun.objects.exists()


def test_fine_tuning_refuses_an_arch_config(staff_client):
    base = ModelVersion.objects.get(name="cnn")
    error = assert_error(staff_client.post(RETRAIN, {"base_version": base.pk, "arch_config": {"widths": [4, 8, 16]}},
                                           format="json"), 400, "invalid_config")
    assert "comes from the base version" in error["message"]


def test_the_run_list_filters_by_status_and_pages(staff_client, monkeypatch):
    monkeypatch.setattr(RunListView.pagination_class, "page_size", 2)  # the class reads PAGE_SIZE at import
    runs = [TrainingRun.objects.create(config={"arch": "logreg"}, executor="inline", status=status)
            for status in ["queued", "failed", "failed", "failed", "succeeded"]]

    listed = staff_client.get(RUNS, {"status": "failed"}).json()
    assert set(listed) == {"count", "next", "previous", "results"}
    assert listed["count"] == 3 and len(listed["results"]) == 2 and listed["previous"] is None
    assert "status=failed" in listed["next"] and "page=2" in listed["next"]
    assert [r["id"] for r in listed["results"]] == [runs[3].pk, runs[2].pk]  # newest first
    assert listed["results"][0]["status"] == "failed" and listed["results"][0]["url"].startswith("http")
    last = staff_client.get(listed["next"]).json()
    assert [r["id"] for r in last["results"]] == [runs[1].pk] and last["next"] is None
    assert staff_client.get(RUNS, {"status": ""}).json()["count"] == 5  # empty means no filter
    assert staff_client.get(RUNS, {"status": "cancelled"}).json()["count"] == 0


@pytest.mark.parametrize("value", ["bogus", "FAILED", "\x00", "²", "failed\x00"])
def test_the_run_list_refuses_an_unknown_status(staff_client, value):
    error = assert_error(staff_client.get(RUNS, {"status": value}), 400, "invalid_request")
    assert error["message"].startswith("status:") and error["detail"]["status"]


def test_anonymous_and_non_staff_are_refused_everywhere(api_client, token_client, staff_client):
    run = TrainingRun.objects.create(config={"arch": "logreg"}, executor="inline")
    active = ModelVersion.objects.active().get()
    calls = [
        ("post", RETRAIN, {"arch": "logreg"}), ("get", RUNS, None), ("get", f"{RUNS}{run.pk}/", None),
        ("post", f"{RUNS}{run.pk}/cancel/", None), ("post", f"/api/models/{active.pk}/activate/", None),
        ("post", "/api/models/rollback/", None), ("post", f"/api/models/{active.pk}/archive/", None),
        ("get", "/api/models/events/", None),
    ]
    for method, url, data in calls:
        assert_error(getattr(api_client, method)(url, data, format="json"), 401, "not_authenticated")
        assert_error(getattr(token_client, method)(url, data, format="json"), 403, "permission_denied")
    run.refresh_from_db()
    assert run.status == "queued" and TrainingRun.objects.count() == 1


def test_a_token_with_the_permission_may_start_and_follow_runs(django_user_model, django_capture_on_commit_callbacks):
    robot = django_user_model.objects.create_user(username="robot")
    robot.user_permissions.add(Permission.objects.get(codename="start_training_run"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=robot).key}")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:  # queued, not executed
        response = client.post(RETRAIN, QUICK_RUN, format="json")

    assert response.status_code == 202, response.content
    assert len(callbacks) == 2  # the "queued" event and the hand-over to the executor
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.status == "queued" and run.created_by == robot and run.executor == "inline"
    assert client.get(RUNS).json()["results"][0]["created_by"] == "robot"
    assert client.get(f"{RUNS}{run.pk}/").json()["status"] == "queued"
    # but lifecycle actions stay staff-only
    assert_error(client.post("/api/models/rollback/", format="json"), 403, "permission_denied")


# ------------------------------------------------------------------ cancel, fail, reap


def test_cancelling_a_queued_run(staff_client, staff_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run_id = staff_client.post(RETRAIN, QUICK_RUN, format="json").json()["id"]
    response = staff_client.post(f"{RUNS}{run_id}/cancel/")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert "cancelled by staff before it started" in response.json()["log"]

    from training.execution import training_run_execute

    training_run_execute(run_id=run_id)  # a worker that gets the message late does nothing
    assert TrainingRun.objects.get(pk=run_id).status == "cancelled"
    assert_error(staff_client.post(f"{RUNS}{run_id}/cancel/"), 409, "run_finished")
    assert_error(staff_client.post(f"{RUNS}999999/cancel/"), 404, "not_found")


def test_the_cancel_flag_is_seen_at_the_next_batch(settings, staff_user):
    settings.TRAINING_CANCEL_POLL_SECONDS = 0
    run = TrainingRun.objects.create(config={"arch": "logreg"}, executor="inline", status="running")
    flag = CancelFlag(run.pk)
    assert flag() is False
    from training.services import training_run_cancel

    run = training_run_cancel(run=run, by=staff_user)
    assert run.status == "running" and run.cancel_requested and "cancel requested by staff" in run.log
    assert flag() is True and flag.cancelled  # the engine checks it after every batch

    TrainingRun.objects.filter(pk=run.pk).update(status="failed")  # e.g. reaped meanwhile
    other = CancelFlag(run.pk)
    assert other() is True and other.lost


def test_a_run_without_data_fails_with_instructions(staff_client, settings, tmp_path,
                                                    django_capture_on_commit_callbacks):
    settings.MNIST_ROOT = tmp_path / "nowhere"
    with django_capture_on_commit_callbacks(execute=True):
        run_id = staff_client.post(RETRAIN, QUICK_RUN, format="json").json()["id"]
    state = staff_client.get(f"{RUNS}{run_id}/").json()
    assert state["status"] == "failed" and "fetch_mnist" in state["error"]
    assert state["result_version"] is None and state["finished_at"]
    assert ModelVersion.objects.count() == 4  # the shipped ones only


def test_a_broker_that_cannot_be_reached_fails_the_run(staff_client, settings, django_capture_on_commit_callbacks):
    settings.TRAINING_EXECUTOR = "celery"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 0}
    with django_capture_on_commit_callbacks(execute=True):
        run_id = staff_client.post(RETRAIN, QUICK_RUN, format="json").json()["id"]
    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == "failed" and run.error.startswith("The run could not be queued (celery)")


def test_the_reaper_fails_runs_whose_worker_went_silent(staff_client, settings):
    settings.TRAINING_HEARTBEAT_TIMEOUT = 30
    now = timezone.now()
    dead = TrainingRun.objects.create(config={"arch": "logreg"}, executor="celery", status="running", worker="w1:42",
                                      started_at=now - dt.timedelta(minutes=5), heartbeat_at=now - dt.timedelta(seconds=31))
    alive = TrainingRun.objects.create(config={"arch": "logreg"}, executor="celery", status="running",
                                       started_at=now - dt.timedelta(minutes=5), heartbeat_at=now - dt.timedelta(seconds=5))
    folder = Path(django_settings.MEDIA_ROOT) / "checkpoints" / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    leftovers = [folder / f"run-{dead.pk}-logreg.pt", folder / f".run-{dead.pk}-logreg.pt.abc123.tmp"]
    kept = folder / f"run-{alive.pk}-logreg.pt"
    for path in [*leftovers, kept]:
        path.write_bytes(b"partial")
    group = listen("training")

    before = {r["id"]: r["status"] for r in staff_client.get(RUNS).json()["results"]}
    assert before[dead.pk] == "running"  # reading never reaps: that is the reaper's job, on its schedule
    assert training_runs_reap() == [dead.pk]
    listed = staff_client.get(RUNS).json()["results"]

    states = {r["id"]: r for r in listed}
    assert states[dead.pk]["status"] == "failed" and states[alive.pk]["status"] == "running"
    assert "stopped sending heartbeats" in states[dead.pk]["error"] and "w1:42" in states[dead.pk]["error"]
    assert "no model version was registered" in states[dead.pk]["error"]
    assert not any(path.exists() for path in leftovers) and kept.exists()
    messages = receive_all(group)
    assert [(m["data"]["run"], m["data"]["status"]) for m in messages] == [(dead.pk, "failed")]
    kept.unlink()

    TrainingRun.objects.filter(pk=alive.pk).update(heartbeat_at=now - dt.timedelta(minutes=2))
    import io

    out = io.StringIO()
    call_command("reap_runs", stdout=out)
    assert f"marked 1 run(s) failed: {alive.pk}" in out.getvalue()
    out = io.StringIO()
    call_command("reap_runs", stdout=out)
    assert "no stale runs" in out.getvalue()


# ------------------------------------------------------------------ the reporter


def test_progress_is_written_at_a_bounded_rate_and_published(settings, monkeypatch):
    settings.TRAINING_PROGRESS_WRITE_SECONDS = 1.0
    settings.TRAINING_PROGRESS_EVENT_SECONDS = 0.25
    run = TrainingRun.objects.create(config={"arch": "logreg"}, executor="inline", status="running")
    channel = listen(f"training.run.{run.pk}")
    clock = {"now": 1000.0}
    monkeypatch.setattr("training.reporting.monotonic", lambda: clock["now"])
    reporter = RunReporter(run.pk)

    reporter({"type": "start", "arch": "logreg", "device": "cpu", "precision": "fp32", "epochs": 2,
              "steps_per_epoch": 100, "total_steps": 200, "train_size": 1000, "val_size": 100, "num_parameters": 7850})
    for step in range(1, 201):  # 200 batches over 2 seconds, one every 10 ms
        clock["now"] += 0.01
        reporter({"type": "batch", "epoch": 1 + (step - 1) // 100, "step": step, "epoch_step": 1 + (step - 1) % 100,
                  "steps_per_epoch": 100, "total_steps": 200, "loss": 1.0 / step, "lr": 0.01, "samples_per_s": 5000.0,
                  "eta_s": (200 - step) * 0.01, "progress": step / 200})
        if step == 100:
            reporter({"type": "epoch", "epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "lr": 0.01, "seconds": 1.0,
                      "val_loss": 0.4, "val_accuracy": 0.85, "best_epoch": 1, "total_epochs": 2})

    assert reporter.writes <= 2 + 1 + 2  # start, epoch, and at most one a second in between
    run.refresh_from_db()
    assert run.step >= 100 and run.total_steps == 200 and run.epoch >= 1 and run.heartbeat_at
    assert run.history["epochs"][0]["val_accuracy"] == 0.85 and 4 <= len(run.history["batches"]) <= 10
    assert "epoch 1/2: train loss 0.5000" in run.log
    messages = receive_all(channel)
    assert all(m["type"] == "run.progress" and m["data"]["run"] == run.pk for m in messages)
    kinds = [m["data"]["kind"] for m in messages]
    assert kinds[0] == "start" and kinds.count("epoch") == 1
    assert 4 <= kinds.count("batch") <= 9  # at most ~4 a second over 2 seconds

    TrainingRun.objects.filter(pk=run.pk).update(status="failed")
    assert reporter.write() is False and reporter.lost  # it never overwrites a run taken away from it


def test_run_state_is_plain_json(staff_user):
    import json

    from training.selectors import run_state

    run = TrainingRun.objects.create(config={"arch": "cnn"}, executor="thread", created_by=staff_user,
                                     history={"batches": [{"step": 1, "loss": 2.3}], "epochs": []})
    state = json.loads(json.dumps(run_state(run)))
    assert state["status"] == "queued" and state["created_by"] == "staff" and state["arch"] == "cnn"
    assert state["group"] == f"training.run.{run.pk}" and state["ws_path"] == f"/ws/training/{run.pk}/"
    assert state["history"]["batches"] == [{"step": 1, "loss": 2.3}] and state["result_version"] is None


def test_a_server_thread_publishes_on_the_server_event_loop():
    """The thread executor hands its messages to the loop the consumers run on (in-memory layer)."""
    import asyncio
    import threading

    from asgiref.sync import sync_to_async

    from training import events

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add("training", channel)
        # What dispatch does inside a sync view served over ASGI: find the server's loop.
        loop = await sync_to_async(events.server_loop)()
        assert loop is asyncio.get_running_loop()

        def training_thread():
            events.set_home_loop(loop)
            events.publish_lifecycle(7, {"status": "running"})

        thread = threading.Thread(target=training_thread)
        thread.start()
        message = await asyncio.wait_for(layer.receive(channel), 2)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        return message

    message = async_to_sync(scenario)()
    assert message == {"type": "run.lifecycle", "data": {"run": 7, "status": "running"}}
    assert events.server_loop() is None  # outside an ASGI server there is no such loop
