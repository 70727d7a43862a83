"""Evaluation of a model for the registry: the MNIST test set and the field set, one function.

The figures come from ``engine.evaluate.evaluate_sets`` (the same function a training run uses), in
the shape a ``ModelVersion`` stores: ``test_accuracy``, ``per_class_accuracy``, ``confusion_matrix``,
``field_accuracy``, ``field_confusion_matrix``...
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from torch import nn

from engine.data import DataError, load_mnist
from engine.evaluate import evaluate_sets
from mnistsite.errors import ApplicationError

from .drawings import Drawings, field_set
from .mnist_source import mnist_ensure


def mnist_test_set():
    """The MNIST test split, or a 503 ``mnist_unavailable`` error that says how to get it."""
    try:
        return load_mnist(mnist_ensure(), "test")
    except DataError as exc:
        raise ApplicationError(
            "mnist_unavailable", "The MNIST test set is not available on this server, so the model cannot be "
            "evaluated. Run `python manage.py fetch_mnist` (with --to-storage on a site with object storage) or set "
            "MNIST_ROOT.", detail=str(exc), status=503,
        ) from None


def model_evaluate(model: nn.Module, *, field: Drawings | None = None, mnist: bool = True) -> dict[str, Any]:
    """Figures on the MNIST test set (unless ``mnist`` is false) and on the field set.

    ``field`` is the field set to use (read it once and pass it when evaluating several models on
    the same drawings); by default today's field set is read.
    """
    field = field_set() if field is None else field
    sets = {}
    if mnist:
        test = mnist_test_set()
        sets["test"] = (test.images, test.labels)
    sets["field"] = (field.images, field.labels)
    metrics = evaluate_sets(model, sets)
    if len(field):
        metrics["field_fingerprint"] = field.fingerprint
    return metrics
