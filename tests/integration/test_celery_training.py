"""End to end with real services: Redis, Celery worker processes, the test database shared with them.

A run started through ``POST /api/retrain/`` is trained by a separate worker process, registered,
promoted by the gate and rolled back; another worker is killed mid-run and its run ends failed, with
nothing half-registered.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings as django_settings

from classifier import lifecycle
from classifier.checkpoints import version_checkpoint
from classifier.models import ModelVersion
from tests.support.drawings import canvas, encode
from classifier.models import LifecycleEvent
from training.models import TrainingRun
from training.reaper import start_reaper, stop_reaper

from .conftest import QUICK_RUN, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True),
              pytest.mark.usefixtures("shipped_versions")]

LISTENER = "integration-test-listener"


def drain(channel: str, *, until_status: str | None = None, timeout: float = 10) -> list[dict]:
    """Messages on a channel of the (Redis) channel layer, until one has ``until_status`` or time is up."""
    import asyncio

    layer = get_channel_layer()

    async def collect():
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                message = await asyncio.wait_for(layer.receive(channel), max(0.05, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
            got.append(message)
            if until_status and message["data"].get("status") == until_status:
                break
        return got

    return async_to_sync(collect)()


def test_a_run_through_a_real_worker_is_registered_promoted_and_rolled_back(
    celery_worker, staff_client, labelled_drawings, zero_logreg_checkpoint, mnist_settings,
):
    worker = celery_worker()
    layer = get_channel_layer()
    async_to_sync(layer.group_add)("training", LISTENER)
    # A weak active version (all-zero weights, about 10%) that a one-epoch logistic regression beats.
    shipped_cnn = ModelVersion.objects.active().get()
    weak = lifecycle.model_version_upload(data=zero_logreg_checkpoint, name="zero")
    assert staff_client.post(f"/api/models/{weak.pk}/activate/", {"reason": "baseline", "force": True},
                             format="json").status_code == 200
    labelled_drawings(40)

    response = staff_client.post("/api/retrain/", {**QUICK_RUN, "promote": True}, format="json")

    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    state = wait_for(lambda: (s := staff_client.get(f"/api/runs/{run_id}/").json())["status"] in TrainingRun.FINISHED
                     and s, 90, "the worker to finish the run")
    assert state["status"] == "succeeded", state["error"] + Path(worker.log_path).read_text()[-3000:]
    assert state["executor"] == "celery" and state["worker"].endswith(f":{worker.pid}")  # another process did it
    assert state["history"]["epochs"] and state["progress"]["fraction"] == 1.0

    # registered with its lineage and both evaluations, then promoted by the gate
    version = ModelVersion.objects.get(pk=state["result_version"]["id"])
    assert version.status == "active" and version.parent == weak and version.training_run.pk == run_id
    assert 0.8 < version.test_accuracy < 0.95 and version.metrics["field_n"] > 0
    assert version.metrics["field_accuracy"] is not None and version.data_fingerprint.startswith("mnist:")
    assert version_checkpoint(version)["arch"] == "logreg"  # the file matches its sha256
    assert state["promotion"]["promoted"] is True and state["promotion"]["reason"].startswith("promoted: MNIST test")
    promote = LifecycleEvent.objects.get(action="promote")
    assert promote.from_version == weak and promote.to_version == version and promote.run_id == run_id

    # the worker's lifecycle events reached this process through Redis
    statuses = [(m["type"], m["data"]["status"]) for m in drain(LISTENER, until_status="succeeded")
                if m["data"]["run"] == run_id]
    assert statuses == [("run.lifecycle", "queued"), ("run.lifecycle", "running"), ("run.lifecycle", "succeeded")]

    # the new version serves predictions here, without a restart
    answer = staff_client.post("/api/predict/", {"image": encode(canvas())}, format="json").json()
    assert answer["model_version"]["id"] == version.pk

    # roll back: the weak version again, then the shipped cnn; every step in the audit log
    first = staff_client.post("/api/models/rollback/", {"reason": "check the old one"}, format="json").json()
    assert first["model"]["id"] == weak.pk and first["event"]["from_version"]["id"] == version.pk
    second = staff_client.post("/api/models/rollback/", format="json").json()
    assert second["model"]["id"] == shipped_cnn.pk
    actions = [e["action"] for e in staff_client.get("/api/models/events/").json()["results"]]
    assert actions[:4] == ["rollback", "rollback", "promote", "register"]
    assert worker.poll() is None  # still serving


def test_a_worker_killed_mid_run_leaves_the_run_failed_and_nothing_registered(celery_worker, staff_client, settings):
    settings.TRAINING_HEARTBEAT_TIMEOUT = 3
    worker = celery_worker()
    versions = set(ModelVersion.objects.values_list("pk", flat=True))

    run_id = staff_client.post("/api/retrain/", {"arch": "logreg", "epochs": 200, "val_size": 1000},
                               format="json").json()["id"]
    wait_for(lambda: TrainingRun.objects.filter(pk=run_id, status="running", step__gt=0).exists(), 90,
             "the worker to start training")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)

    assert staff_client.get(f"/api/runs/{run_id}/").json()["status"] == "running"  # its heartbeat is still fresh
    start_reaper(interval=0.25)  # what every web process and worker runs on its schedule
    try:
        failed = wait_for(
            lambda: next((r for r in staff_client.get("/api/runs/").json()["results"]
                          if r["id"] == run_id and r["status"] == "failed"), None),
            20, "the reaper to mark the run failed", interval=0.25,
        )
    finally:
        stop_reaper()
    assert "stopped sending heartbeats" in failed["error"] and failed["result_version"] is None
    assert set(ModelVersion.objects.values_list("pk", flat=True)) == versions
    assert not LifecycleEvent.objects.filter(run_id=run_id).exists()
    folder = Path(django_settings.MEDIA_ROOT) / "checkpoints" / "runs"
    leftovers = list(folder.glob(f"*run-{run_id}-*")) if folder.exists() else []
    assert leftovers == []  # no checkpoint and no temp file left behind
