"""/metrics: Prometheus text that moves when the site works, closed unless a token or network says otherwise,
and summed over Granian's worker processes (prometheus_client's multiprocess mode)."""
from __future__ import annotations

import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from classifier.models import Prediction
from classifier.shadow import ShadowPoller
from tests.production.conftest import deployment, redis_server  # noqa: F401  (fixtures)
from tests.support.drawings import SEVEN, canvas, encode
from tests.support.http import post_json

TOKEN = "metrics-token-for-tests-1234567890"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_closed_unless_configured(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
def test_token_or_allowed_network_required(client, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    response = client.get("/metrics")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")

    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 403
    # a client cannot claim an allowed address through X-Forwarded-For unless it is a trusted proxy
    settings.TRUSTED_PROXIES = []
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403


@pytest.mark.django_db
def test_counters_move_after_a_prediction(client, api_client, settings):
    settings.METRICS_TOKEN = TOKEN
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    before = client.get("/metrics", **auth).content.decode()
    reply = api_client.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json")
    assert reply.status_code == 200, reply.content
    version = str(reply.json()["model_version"]["id"])
    after = client.get("/metrics", **auth).content.decode()

    assert value(after, "mnistsite_predictions_total", version=version, outcome="answered") == \
        value(before, "mnistsite_predictions_total", version=version, outcome="answered") + 1
    assert value(after, "mnistsite_prediction_seconds_count") == value(before, "mnistsite_prediction_seconds_count") + 1
    # read from the database at scrape time
    assert ("mnistsite_labelled_drawings" in after and "mnistsite_training_runs" in after
            and "mnistsite_policy_events" in after)
    assert value(after, "mnistsite_scrape_errors", part="runs") == 0
    assert value(after, "mnistsite_scrape_errors", part="labels") == 0


@pytest.mark.django_db
def test_labels_by_trust_and_runs_by_state(client, settings, staff_user):
    settings.METRICS_TOKEN = TOKEN
    api = client
    api.force_login(staff_user)
    reply = api.post("/api/predict/", {"image": encode(canvas(SEVEN))}, content_type="application/json")
    assert reply.status_code == 200, reply.content
    labelled = api.post(f"/api/predictions/{reply.json()['id']}/label/", {"label": 7},
                        content_type="application/json")
    assert labelled.status_code == 200, labelled.content
    trust = Prediction.objects.get(pk=reply.json()["id"]).label_trust
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert value(text, "mnistsite_labelled_drawings", trust=trust or "none") >= 1


@pytest.mark.django_db
def test_the_shadow_process_counts_come_from_its_heartbeat(client, settings):
    """The shadow process (manage.py shadow) serves no HTTP: its counts reach /metrics through the cache."""
    settings.METRICS_TOKEN = TOKEN
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    ShadowPoller(batch_max=8).heartbeat(skipped=3)
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert value(text, "mnistsite_shadow_process_looks", outcome="skipped") == 3
    assert value(text, "mnistsite_shadow_process_drawings", outcome="answered") == 0
    assert value(text, "mnistsite_scrape_errors", part="shadow") == 0


def _scrape(base: str) -> str:
    request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def test_two_granian_workers_are_summed(deployment, tmp_path):  # noqa: F811
    """``python -m mnistsite.serve http --workers 2``: whichever worker answers the scrape counts both's predictions."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"stale")  # a previous server's file: emptied at start
    predictions = 0
    with deployment.serve("http", "--workers", "2", METRICS_TOKEN=TOKEN, PREDICT_THROTTLE="off",
                          PROMETHEUS_MULTIPROC_DIR=str(folder)) as base:
        assert not (folder / "counter_999999.db").exists()
        image = encode(canvas(SEVEN))
        replies: list = []
        writers: set[str] = set()
        # A connection each, several at once, in rounds of 24 until both workers have answered (the kernel
        # hands connections to whichever worker accepts first; on a busy machine one may take a whole round).
        for _ in range(10):
            with ThreadPoolExecutor(8) as pool:
                replies += pool.map(lambda _: post_json(f"{base}/api/predict/", {"image": image}), range(24))
            predictions += 24
            writers = {path.name.rsplit("_", 1)[1] for path in folder.glob("counter_*.db")}
            if len(writers) == 2:
                break
        assert all(status == 200 for status, _ in replies), replies
        versions = {str(reply["model_version"]["id"]) for _, reply in replies}
        totals = []
        for _ in range(6):
            text = _scrape(base)
            totals.append(sum(value(text, "mnistsite_predictions_total", version=v, outcome="answered")
                              for v in versions))
    assert len(writers) == 2, f"both workers should have answered predictions: {writers}"
    assert totals == [predictions] * 6, totals


def test_a_process_whose_metrics_folder_does_not_exist_yet_starts(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "not" / "there"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "DJANGO_SETTINGS_MODULE": "mnistsite.settings"}
    done = subprocess.run([sys.executable, "-c", "import mnistsite.metrics as m; m.prediction(version=1, seconds=0.01)"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert folder.is_dir() and any(folder.iterdir())  # the counters were written there
