"""Reads: statistics, recent predictions, model status, the lifecycle audit log."""
from __future__ import annotations

import base64
import random
import threading
import time
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Count, F, Q, QuerySet

from mnistsite.errors import ApplicationError
from engine.data import DataError, load_mnist

from .inference import registry
from .models import LifecycleEvent, ModelVersion, Prediction
from engine.preprocessing import OUTPUT_SIZE, to_png_bytes


def input_data_url(pixels: bytes | memoryview | None) -> str | None:
    """A prediction's stored 28x28 input (784 bytes, ink = 255) as a PNG ``data:`` URL (~300 bytes)."""
    raw = bytes(pixels) if pixels is not None else b""
    if len(raw) != OUTPUT_SIZE * OUTPUT_SIZE:
        return None
    image = np.frombuffer(raw, dtype=np.uint8).reshape(OUTPUT_SIZE, OUTPUT_SIZE).astype(np.float32) / 255.0
    return "data:image/png;base64," + base64.b64encode(to_png_bytes(image)).decode("ascii")


def prediction_stats() -> dict[str, Any]:
    """Counts, accuracy on labelled drawings (overall and per model version) and the confusion matrix."""
    totals = Prediction.objects.aggregate(
        total=Count("id"),
        labelled=Count("id", filter=Q(label__isnull=False)),
        correct=Count("id", filter=Q(label=F("digit"))),
    )
    per_version_rows = (
        Prediction.objects.values("model_version")
        .annotate(
            predictions=Count("id"),
            labelled=Count("id", filter=Q(label__isnull=False)),
            correct=Count("id", filter=Q(label=F("digit"))),
        )
        .order_by("model_version")
    )
    versions = ModelVersion.objects.in_bulk([row["model_version"] for row in per_version_rows])
    per_version = [
        {
            "model_version": versions[row["model_version"]].as_ref(),
            "predictions": row["predictions"],
            "labelled": row["labelled"],
            "correct": row["correct"],
            "accuracy": row["correct"] / row["labelled"] if row["labelled"] else None,
        }
        for row in per_version_rows
    ]
    confusion = [[0] * 10 for _ in range(10)]
    for row in Prediction.objects.labelled().values("label", "digit").annotate(n=Count("id")):
        confusion[row["label"]][row["digit"]] = row["n"]
    return {
        "total": totals["total"],
        "labelled": totals["labelled"],
        "correct": totals["correct"],
        "accuracy": totals["correct"] / totals["labelled"] if totals["labelled"] else None,
        "per_version": per_version,
        "confusion_matrix": confusion,
    }


def recent_predictions(*, limit: int = 24):
    return Prediction.objects.select_related("model_version").order_by("-created_at", "-id")[:limit]


def model_status(*, staff: bool = False) -> dict[str, Any]:
    """The active version, what serves, whether it is healthy, counts; ``staff`` adds failure details."""
    state = registry.status(staff=staff)
    active = ModelVersion.objects.active().first()
    state["active"] = (
        {
            **active.as_ref(),
            "per_class_accuracy": active.per_class_accuracy,
            "confusion_matrix": active.confusion_matrix,
            "metrics": active.metrics,
            "num_parameters": active.num_parameters,
            "activated_at": active.activated_at,
        }
        if active
        else None
    )
    state["counts"] = _status_counts.get()
    return state


class _StatusCounts:
    """The counts ``model_status`` shows, read at most every MODEL_STATUS_COUNTS_SECONDS per process:
    the endpoint is public, and counting every prediction on each call grows with the table."""

    def __init__(self) -> None:
        self._value: dict[str, int] | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> dict[str, int]:
        with self._lock:
            if self._value is None or time.monotonic() - self._at >= settings.MODEL_STATUS_COUNTS_SECONDS:
                self._value = {
                    "model_versions": ModelVersion.objects.count(),
                    "predictions": Prediction.objects.count(),
                    "labelled": Prediction.objects.labelled().count(),
                }
                self._at = time.monotonic()
            return dict(self._value)


_status_counts = _StatusCounts()


_mnist_test_cache: dict[str, Any] = {}


def mnist_random_sample(*, index: int | None = None, staff: bool = False) -> dict[str, Any]:
    """A random MNIST test image (base64 PNG), its label, and the serving model's answer.

    Without the data, a 503 whose detail tells ``staff`` what is missing and how to fetch it; others get
    the short message alone (the detail names server paths).
    """
    root = str(settings.MNIST_ROOT)
    test = _mnist_test_cache.get(root)
    if test is None:
        try:
            test = load_mnist(root, "test")
        except DataError as exc:
            raise ApplicationError("mnist_unavailable", "The MNIST test set is not available on this server.",
                                   detail=str(exc) if staff else None, status=503) from None
        _mnist_test_cache[root] = test
    if index is None:
        index = random.randrange(len(test))
    image = test.images[index].float().div(255)
    model = registry.serving()
    probabilities = [round(p, 6) for p in model.probabilities(image.view(1, 1, 28, 28))[0].tolist()]
    digit = max(range(10), key=probabilities.__getitem__)
    return {
        "index": index,
        "label": int(test.labels[index]),
        "image": base64.b64encode(to_png_bytes(image)).decode("ascii"),
        "prediction": {"digit": digit, "confidence": probabilities[digit], "probabilities": probabilities,
                       "model_version": model.ref.as_dict()},
    }


def lifecycle_events(*, version: ModelVersion | None = None) -> QuerySet[LifecycleEvent]:
    """The audit log, newest first; with ``version``, the events that moved it (to or from)."""
    qs = LifecycleEvent.objects.select_related("from_version", "to_version", "by")
    if version is not None:
        qs = qs.filter(Q(to_version=version) | Q(from_version=version))
    return qs


def lifecycle_event_dict(event: LifecycleEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "action": event.action,
        "from_version": event.from_version.as_ref() if event.from_version else None,
        "to_version": event.to_version.as_ref() if event.to_version else None,
        "by": event.by.get_username() if event.by else None,
        "actor": event.actor or None,  # "policy" for automatic actions
        "run": event.run_id,
        "reason": event.reason,
        "at": event.at.isoformat() if event.at else None,
    }
