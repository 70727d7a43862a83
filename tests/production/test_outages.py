"""Redis stopped and started again under load; a server killed mid-run and started again."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.drawings import SEVEN, canvas, encode
from tests.support.http import post_json

from .conftest import needs_postgresql

pytestmark = pytest.mark.slow

THROTTLE = 40  # per minute and client


@needs_postgresql
def test_predictions_keep_answering_while_redis_is_down_and_throttling_resumes(deployment, redis_server):
    token = deployment.staff_token()
    drawing = {"image": encode(canvas(SEVEN))}
    statuses: dict[str, list[int]] = {"before": [], "down": [], "back": []}
    with deployment.serve("http", PREDICT_THROTTLE=f"{THROTTLE}/min") as base:
        predict = f"{base}/api/predict/"
        for _ in range(5):
            statuses["before"].append(post_json(predict, drawing)[0])

        redis_server.stop()
        down_since = time.monotonic()
        while time.monotonic() - down_since < 6:  # well past the throttle's budget, were it counting
            statuses["down"].append(post_json(predict, drawing)[0])
        retrain = post_json(f"{base}/api/retrain/", {"arch": "logreg", "epochs": 1}, token)

        redis_server.start()  # same port, empty: the counters start again from zero
        back_at = time.monotonic()
        while len(statuses["back"]) < THROTTLE + 5 and time.monotonic() - back_at < 30:
            statuses["back"].append(post_json(predict, drawing)[0])
        back_seconds = time.monotonic() - back_at

    assert statuses["before"] == [200] * 5
    assert len(statuses["down"]) > THROTTLE and set(statuses["down"]) == {200}  # fails open, never a 500
    assert retrain[0] == 503 and retrain[1]["error"]["code"] == "queue_unavailable"
    assert statuses["back"][:THROTTLE] == [200] * THROTTLE and set(statuses["back"][THROTTLE:]) == {429}
    assert back_seconds < 5 + 5  # counting resumed at once (the last 5 requests were throttled)
    answered = sum(status == 200 for group in statuses.values() for status in group)
    assert deployment.query("SELECT COUNT(*) FROM classifier_prediction")[0][0] == answered  # all stored
    assert not [line for line in deployment.log_problems() if "Traceback" in line]


def test_a_run_orphaned_by_a_killed_server_is_failed_with_nobody_asking(deployment, mnist_root):
    settings = {"TRAINING_EXECUTOR": "thread", "TRAINING_HEARTBEAT_SECONDS": "0.5",
                "TRAINING_HEARTBEAT_TIMEOUT": "3", "TRAINING_REAP_SECONDS": "0.5", "MNIST_ROOT": str(mnist_root)}
    token = deployment.staff_token()
    with deployment.serve("ws", **settings) as base:
        status, body = post_json(f"{base}/api/retrain/", {"arch": "logreg", "epochs": 200, "val_size": 1000}, token)
        assert status == 202, body
        run_id = body["id"]
        deadline = time.monotonic() + 90
        while deployment.query("SELECT step FROM training_trainingrun WHERE id = %s", run_id)[0][0] == 0:
            assert time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.2)
        server_pid = int(deployment.query("SELECT worker FROM training_trainingrun WHERE id = %s",
                                          run_id)[0][0].rsplit(":", 1)[1])
        os.kill(server_pid, signal.SIGKILL)  # the process dies mid-run, as in a crash or `kill -9`
        time.sleep(0.5)

    with deployment.serve("ws", **settings):
        started = time.monotonic()
        while deployment.query("SELECT status FROM training_trainingrun WHERE id = %s", run_id)[0][0] == "running":
            assert time.monotonic() - started < 30, "the restarted server did not fail the orphaned run"
            time.sleep(0.25)
        row = deployment.query("SELECT status, error, result_version_id FROM training_trainingrun WHERE id = %s",
                               run_id)[0]
    assert row[0] == "failed" and "stopped sending heartbeats" in row[1] and row[2] is None
    leftovers = list((Path(deployment.env["MEDIA_ROOT"]) / "checkpoints" / "runs").glob(f"*run-{run_id}-*"))
    assert leftovers == []
