"""Liveness, readiness and metrics: what process managers, load balancers and Prometheus ask a server.

- ``GET /healthz``: the process is alive and answers; touches nothing else (no database). 200 always.
- ``GET /readyz``: this process can serve now: the database answers, the cache and the broker answer
  (when Redis is configured), the storage can be listed, and the model that answers predictions is
  loaded. 200 ``{"status": "ready", "checks": {...}}`` or 503 ``{"status": "unavailable", ..., "failing":
  [names]}``. Only part names and ``ok``/``failing`` are said: no host, path or exception text (those
  go to the server's log).
- ``GET /metrics``: Prometheus text (``mnistsite.metrics``), to a request with ``Authorization: Bearer
  $METRICS_TOKEN`` or from an address in ``METRICS_ALLOWED_NETWORKS`` (the client's address as
  ``mnistsite.clients`` reads it); with neither setting, 404.

They are answered by ``mnistsite.middleware.OperationsMiddleware`` before host validation, sessions and
CSRF, so a balancer's probe by IP address gets an answer too.
"""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator

import redis
from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import connections
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from classifier.inference import registry
from classifier.models import Prediction
from classifier.shadow import HEARTBEAT_KEY
from mnistsite import metrics
from mnistsite.clients import client_address, in_networks
from training.models import RetrainPolicyEvent, TrainingRun

log = logging.getLogger(__name__)

OK, FAILING = "ok", "failing"


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "alive"})


# ----------------------------------------------------------------------------- readiness


def _redis_configured(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def check_database() -> None:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        connection.close()  # the next request opens a fresh one instead of reusing a broken one
        raise


def check_cache() -> None:
    key = "mnistsite:readyz"
    value = str(time.time())
    cache.set(key, value, timeout=30)
    if cache.get(key) != value:
        raise RuntimeError("the cache did not return what was just stored")


def check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    timeout = settings.READYZ_TIMEOUT_SECONDS
    if _redis_configured(url):
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return
    with Connection(url, connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1)


def check_storage() -> None:
    default_storage.listdir("")


def check_model() -> None:
    registry.serving()  # loads the active version once per process; raises when no model can answer


def readiness_checks() -> dict[str, Callable[[], None]]:
    """The parts /readyz asks, by name: the cache and broker only when they are shared services."""
    checks: dict[str, Callable[[], None]] = {"database": check_database}
    if not settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        checks["cache"] = check_cache
    if settings.CELERY_BROKER_URL:
        checks["broker"] = check_broker
    checks["storage"] = check_storage
    checks["model"] = check_model
    return checks


def readiness() -> dict[str, str]:
    results = {}
    for name, check in readiness_checks().items():
        try:
            check()
        except Exception as exc:  # noqa: BLE001 (any failure means not ready; the log says which)
            log.warning("readyz: %s is failing: %s: %s", name, type(exc).__name__, exc)
            results[name] = FAILING
        else:
            results[name] = OK
    return results


def readyz(request: HttpRequest) -> JsonResponse:
    results = readiness()
    failing = [name for name, result in results.items() if result != OK]
    body = {"status": "unavailable" if failing else "ready", "checks": results}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)


# ----------------------------------------------------------------------------- metrics


def metrics_allowed(request: HttpRequest) -> bool | None:
    """True: may scrape; False: may not; None: /metrics is not enabled (no token and no networks set)."""
    token = settings.METRICS_TOKEN
    networks = settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return None
    given = request.META.get("HTTP_AUTHORIZATION", "")
    if token and given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode()):
        return True
    return bool(networks) and in_networks(client_address(request), networks)


def metrics_view(request: HttpRequest) -> HttpResponse:
    allowed = metrics_allowed(request)
    if allowed is None:
        return JsonResponse({"error": {"code": "not_found", "message": "Not found.", "detail": None}}, status=404)
    if not allowed and not settings.METRICS_TOKEN:
        return JsonResponse({"error": {"code": "permission_denied", "message": "Not from an allowed network.",
                                       "detail": None}}, status=403)
    if not allowed:
        response = JsonResponse({"error": {"code": "not_authenticated", "message": "A metrics token is needed.",
                                           "detail": None}}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(DatabaseCollector()), content_type=CONTENT_TYPE_LATEST)


class DatabaseCollector:
    """What the shared services say at scrape time: the same from every server process and machine."""

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        errors = GaugeMetricFamily("mnistsite_scrape_errors", "Parts of this scrape that could not be read "
                                   "(1), by part", labels=["part"])
        for part, read in (("runs", self._runs), ("labels", self._labels), ("policy", self._policy),
                           ("queue", self._queue), ("shadow", self._shadow)):
            try:
                yield from read()
                errors.add_metric([part], 0)
            except Exception as exc:  # noqa: BLE001 (a scrape reports what it can)
                log.warning("metrics: %s not read: %s: %s", part, type(exc).__name__, exc)
                errors.add_metric([part], 1)
        yield errors

    def _runs(self) -> Iterator[GaugeMetricFamily]:
        runs = GaugeMetricFamily("mnistsite_training_runs", "Training runs by status and trigger",
                                 labels=["status", "trigger"])
        for row in TrainingRun.objects.order_by().values("status", "trigger").annotate(n=Count("pk")):
            runs.add_metric([row["status"], row["trigger"]], row["n"])
        yield runs

    def _labels(self) -> Iterator[GaugeMetricFamily]:
        labels = GaugeMetricFamily("mnistsite_labelled_drawings", "Drawings with a usable label, by how far the "
                                   "label is trusted", labels=["trust"])
        if any(field.name == "label_trust" for field in Prediction._meta.get_fields()):
            rows = Prediction.objects.labelled().order_by().values("label_trust").annotate(n=Count("pk"))
            for row in rows:
                labels.add_metric([row["label_trust"] or "none"], row["n"])
        else:
            labels.add_metric(["any"], Prediction.objects.labelled().count())
        yield labels

    def _policy(self) -> Iterator[GaugeMetricFamily]:
        events = GaugeMetricFamily("mnistsite_policy_events", "The retraining policy's audit log, by action",
                                   labels=["action"])
        for row in RetrainPolicyEvent.objects.order_by().values("action").annotate(n=Count("pk")):
            events.add_metric([row["action"]], row["n"])
        yield events

    def _queue(self) -> Iterator[GaugeMetricFamily]:
        url = settings.CELERY_BROKER_URL
        if not _redis_configured(url):
            return
        depth = GaugeMetricFamily("mnistsite_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        timeout = settings.READYZ_TIMEOUT_SECONDS
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            for queue in dict.fromkeys((settings.TRAINING_QUEUE, settings.TRAINING_GPU_QUEUE)):
                # kombu's Redis transport keeps a queue's priorities in lists "name" and "name\x06\x16N"
                names = [queue] + [f"{queue}\x06\x16{priority}" for priority in (3, 6, 9)]
                depth.add_metric([queue], sum(client.llen(name) for name in names))
        finally:
            client.close()
        yield depth

    def _shadow(self) -> Iterator[GaugeMetricFamily]:
        beat = cache.get(HEARTBEAT_KEY)
        if not beat:
            return
        shadow = GaugeMetricFamily("mnistsite_shadow_process_drawings", "Drawings the shadow process (manage.py "
                                   "shadow) handled since it started, by outcome", labels=["outcome"])
        for outcome in ("submitted", "answered", "dropped", "failed"):
            if outcome in beat:
                shadow.add_metric([outcome], float(beat[outcome]))
        yield shadow
        looks = GaugeMetricFamily("mnistsite_shadow_process_looks", "Looks for new drawings the shadow process "
                                  "took, or skipped while the CPUs were busy (SHADOW_MAX_BUSY), since it started",
                                  labels=["outcome"])
        looks.add_metric(["looked"], float(beat.get("looks", 0)))
        looks.add_metric(["skipped"], float(beat.get("skipped", 0)))
        yield looks
