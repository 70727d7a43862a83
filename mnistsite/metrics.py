"""The site's Prometheus counters, one line to count at each place something happens.

Served by ``GET /metrics`` (``mnistsite.health.metrics_view``) with what the database and the broker say at
scrape time (runs by state, labels by trust level, queue depth, the shadow process's counts).

Under several server processes (``python -m mnistsite.serve http --workers N``) prometheus_client runs in
its multiprocess mode: ``mnistsite.serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` (a folder per port, emptied
at start) before the workers start, every worker writes its counters to files there, and whichever
worker answers a scrape sums them all. Without that variable (``make run``, management commands,
tests) the counters live in the process. Counting never raises: a metric must not fail a request.
"""
from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client import REGISTRY as PROCESS_REGISTRY

log = logging.getLogger(__name__)

# A process started with the variable pointing at a folder that does not exist yet (a worker or the WebSocket
# server on a fresh machine) makes it, rather than failing as its first counter is created.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

PREDICTIONS = Counter("mnistsite_predictions", "Drawings answered, by model version and outcome "
                      "(answered; unavailable: no model could answer)", ["version", "outcome"])
PREDICTION_SECONDS = Histogram("mnistsite_prediction_seconds", "Time to preprocess and answer one drawing",
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
MODEL_LOADS = Counter("mnistsite_model_loads", "Checkpoints loaded into a server process, by outcome (loaded, "
                      "failed)", ["outcome"])
SHADOW_DRAWINGS = Counter("mnistsite_shadow_drawings", "Drawings handed to the candidates in shadow in this "
                          "process, by outcome (submitted, answered, dropped, failed)", ["outcome"])
POLICY_CHECKS = Counter("mnistsite_policy_checks", "Checks of the retraining policy, by what they did "
                        "(waiting, queued, training, shadow, promoted, kept, failed, paused, disabled, skipped)",
                        ["action"])


def prediction(*, version: object, outcome: str = "answered", seconds: float | None = None, count: int = 1) -> None:
    try:
        PREDICTIONS.labels(version=str(version), outcome=outcome).inc(count)
        if seconds is not None:
            for _ in range(count):
                PREDICTION_SECONDS.observe(seconds)
    except Exception:  # noqa: BLE001
        log.debug("prediction not counted", exc_info=True)


def model_load(*, ok: bool) -> None:
    try:
        MODEL_LOADS.labels(outcome="loaded" if ok else "failed").inc()
    except Exception:  # noqa: BLE001
        log.debug("model load not counted", exc_info=True)


def shadow(outcome: str, count: float = 1) -> None:
    if outcome not in {"submitted", "answered", "dropped", "failed"} or count <= 0:
        return
    try:
        SHADOW_DRAWINGS.labels(outcome=outcome).inc(count)
    except Exception:  # noqa: BLE001
        log.debug("shadow drawings not counted", exc_info=True)


def policy_action(action: str) -> None:
    try:
        POLICY_CHECKS.labels(action=action).inc()
    except Exception:  # noqa: BLE001
        log.debug("policy action not counted", exc_info=True)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def exposition(*collectors: object) -> bytes:
    """The text a scrape gets: this process's counters (all processes' in multiprocess mode) and ``collectors``."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_ProcessCounters())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


class _ProcessCounters:
    """The default registry's metrics (this process's counters), inside a registry of the scrape's own."""

    def collect(self):  # noqa: ANN201
        return PROCESS_REGISTRY.collect()

    def describe(self):  # noqa: ANN201
        return []


def policy_checked(outcome: object) -> object:
    """Count a policy check by its outcome's ``action`` and give the outcome back (``return policy_checked(...)``)."""
    policy_action(getattr(outcome, "action", "unknown"))
    return outcome
