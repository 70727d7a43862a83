"""End to end over real sockets: a real Redis server, a real Celery worker and the real ASGI server
(Daphne serving ``mnistsite.asgi``), all sharing the test database. A WebSocket client watches a small
run started through ``POST /api/retrain/`` from the moment it is queued to the moment it is finished."""
from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from tests.integration.conftest import celery_worker, database_url_for_workers, redis_server  # noqa: F401

from .servers import daphne, site_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

# A small cnn on 12,000 images, one epoch: about 90 steps, two or three seconds on one core.
RUN = {"arch": "cnn", "arch_config": {"widths": [4, 8, 16]}, "epochs": 1, "mnist_limit": 12000, "val_size": 1000,
       "use_drawings": False}
RUN_TIMEOUT_S = 120


@pytest.fixture
def site(redis_server, settings, mnist_root, tmp_path):  # noqa: F811
    """Daphne on the test database, with Redis as its channel layer and Celery broker."""
    env = site_env(DATABASE_URL=database_url_for_workers(), REDIS_URL=redis_server, MEDIA_ROOT=str(settings.MEDIA_ROOT),
                   MNIST_ROOT=str(mnist_root))
    with daphne(env=env, log_path=tmp_path / "daphne.log") as served:
        yield served


def connect(site, path: str):
    return ws_connect(f"{site.ws_url}{path}", origin=site.url, proxy=None, open_timeout=10, close_timeout=5)


def receive_until(ws, done, timeout: float) -> list[dict[str, Any]]:
    """Messages (each with the time it arrived, ``_at``) until ``done(message)`` or the time is up."""
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = ws.recv(timeout=max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        message = {**json.loads(text), "_at": time.monotonic()}
        messages.append(message)
        if done(message):
            return messages
    raise AssertionError(f"timed out after {timeout} s; got {[m['type'] for m in messages]}")


def post(site, path: str, body: dict, token: str) -> dict:
    request = urllib.request.Request(f"{site.url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Token {token}"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as response:
        assert response.status == 202
        return json.loads(response.read())


def is_final_state(message: dict) -> bool:
    return message["type"] == "state" and message["data"]["status"] in ("succeeded", "failed", "cancelled")


def test_a_websocket_client_watches_a_real_run_from_queued_to_finished(celery_worker, site, django_user_model):  # noqa: F811
    worker = celery_worker()
    staff = django_user_model.objects.create_user("dashboard-staff", password="pw-dash-123", is_staff=True)
    token = Token.objects.create(user=staff).key

    with connect(site, "/ws/training/") as all_runs:
        assert json.loads(all_runs.recv(timeout=10))["type"] == "runs"
        started = post(site, "/api/retrain/", RUN, token)
        run_id = started["id"]
        assert started["ws_url"].endswith(f"/{run_id}/")
        with connect(site, f"/ws/training/{run_id}/") as watcher, connect(site, f"/ws/training/{run_id}/") as quitter:
            assert json.loads(quitter.recv(timeout=10))["type"] == "state"
            quitter.socket.shutdown(socket.SHUT_RDWR)  # gone without a goodbye, mid-run
            watched = receive_until(watcher, is_final_state, RUN_TIMEOUT_S)
        news = receive_until(all_runs, lambda m: m["data"].get("run") == run_id and m["data"]["event"] == "finished", 10)

    first, final = watched[0], watched[-1]["data"]
    assert first["type"] == "state" and first["data"]["id"] == run_id
    assert final["status"] == "succeeded", final.get("error") or worker.log_path.read_text()[-3000:]
    assert "worker" not in final and "log" not in final  # for staff only
    # Everything in between, in order: started (unless it already had when we joined), the curve, the end.
    statuses = [first["data"]["status"]] + [m["data"]["status"] for m in watched if m["type"] == "lifecycle"]
    assert statuses[-1] == "succeeded" and set(statuses) <= {"queued", "running", "succeeded"}
    kinds = [m["data"]["kind"] for m in watched if m["type"] == "progress"]
    assert kinds.count("epoch") == 1 and kinds[-1] == "evaluate"
    assert first["data"]["status"] != "queued" or kinds[0] == "start"

    # Batch loss sampled live, a few a second at most; the state at the end has the whole curve.
    batches = [m for m in watched if m["type"] == "progress" and m["data"]["kind"] == "batch"]
    assert batches, "the run was long enough to stream batch losses"
    assert all({"step", "loss", "lr", "samples_per_s", "progress", "eta_s", "total_steps"} <= set(b["data"]) for b in batches)
    assert [b["data"]["step"] for b in batches] == sorted({b["data"]["step"] for b in batches})
    span = batches[-1]["_at"] - batches[0]["_at"]
    assert len(batches) <= 4 * span + 2
    assert final["history"]["epochs"][0]["epoch"] == 1 and len(final["history"]["batches"]) >= len(batches) / 2
    assert final["progress"]["fraction"] == 1.0 and final["progress"]["total_steps"] > 50

    # At the end: the confusion matrix, per-class accuracy, the version and the promotion decision.
    metrics = final["metrics"]
    assert len(metrics["confusion_matrix"]) == 10 and sum(map(sum, metrics["confusion_matrix"])) == 10000
    assert len(metrics["per_class_accuracy"]) == 10 and 0.5 < metrics["test_accuracy"] <= 1
    assert final["result_version"]["arch"] == "cnn" and final["promotion"]["promoted"] is False
    assert "promotion not requested" in final["promotion"]["reason"]

    # The all-runs socket told the story too.
    events = [m["data"]["event"] for m in news if m["type"] == "lifecycle" and m["data"]["run"] == run_id]
    assert events == ["queued", "started", "finished"]
    assert news[-1]["data"]["summary"]["result_version"]["id"] == final["result_version"]["id"]

    # A late joiner gets the whole curve at once.
    with connect(site, f"/ws/training/{run_id}/") as late:
        state = json.loads(late.recv(timeout=10))
    assert state["type"] == "state" and state["data"]["history"] == final["history"]

    # An unknown run: an error and code 4404, and nothing bad in the server's log.
    with connect(site, "/ws/training/987654/") as stranger:
        assert json.loads(stranger.recv(timeout=10))["code"] == "unknown_run"
        with pytest.raises(ConnectionClosed):
            stranger.recv(timeout=10)
        assert stranger.close_code == 4404
    assert site.log_problems() == [], site.log()[-4000:]
