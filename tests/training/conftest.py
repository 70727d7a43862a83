"""Fixtures for training runs and the model lifecycle.

Runs execute inline (synchronously, right after the transaction commits) unless a test asks for the
thread executor or a real Celery worker; progress goes to an in-memory channel layer. So these tests
need no Redis even where REDIS_URL is set.
"""
from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from classifier.models import ModelVersion, Prediction


@pytest.fixture(autouse=True)
def _training_settings(settings):
    settings.TRAINING_EXECUTOR = "inline"
    settings.TRAINING_REAP_SECONDS = 0  # no background reaper threads in tests
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PROMOTION_MARGIN_MNIST = 0.0
    settings.PROMOTION_MARGIN_FIELD = 0.0


@pytest.fixture
def shipped_versions(db) -> list[ModelVersion]:
    """The shipped versions (cnn active), as migration 0002 registers them (a no-op when present).

    For transactional tests, which see whatever the transactional test before them left. They all use
    ``serialized_rollback=True``: a plain transactional test's flush recreates the content types, and a
    serialized test after it would then collide with them when it reloads its snapshot.
    """
    import importlib

    from django.apps import apps

    importlib.import_module("classifier.migrations.0002_register_shipped_models").register(apps, None)
    return list(ModelVersion.objects.filter(notes__startswith="Shipped with the code"))


@pytest.fixture
def mnist_settings(settings, mnist_root):
    settings.MNIST_ROOT = mnist_root
    return settings


# Small, fast runs: logistic regression on the first 6,000 MNIST images, one epoch.
QUICK_RUN = {"arch": "logreg", "epochs": 1, "mnist_limit": 6000, "val_size": 1000}


@pytest.fixture
def labelled_drawings(db, mnist_test):
    """Labelled predictions whose inputs are MNIST test digits (about a fifth land in the field set)."""

    def make(count: int = 40, *, start: int = 0) -> list[Prediction]:
        active = ModelVersion.objects.active().first() or ModelVersion.objects.first()
        rows = []
        for i in range(start, start + count):
            pixels = mnist_test.images[i].numpy().tobytes()
            label = int(mnist_test.labels[i])
            rows.append(Prediction(
                image=f"drawings/test/{i}.png", input_pixels=pixels, probabilities=[0.1] * 10,
                digit=(label + 1) % 10, confidence=0.1, model_version=active, latency_ms=1.0, label=label,
            ))
        return Prediction.objects.bulk_create(rows)

    return make


@pytest.fixture
def zero_logreg_checkpoint():
    """A valid logreg checkpoint whose weights are all zero: it answers 0 for everything (about 10%)."""
    import io

    import torch

    from training.engine.checkpoint import make_checkpoint
    from training.engine.nets import build_model

    model = build_model("logreg")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    checkpoint = make_checkpoint(model=model, arch="logreg", config={}, metrics={"test_accuracy": 0.98})
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


@pytest.fixture
def weak_active(db, zero_logreg_checkpoint, mnist_settings):
    """A deliberately weak version (all-zero logreg) made active, so a real run can beat it."""
    from classifier import lifecycle

    version = lifecycle.model_version_upload(data=zero_logreg_checkpoint, name="zero")
    return lifecycle.model_version_activate(version=version, by=None, reason="a weak baseline for the test")


def fake_version(name: str = "fake", **fields) -> ModelVersion:
    values = {"version": 1, "arch": "logreg", "checkpoint": ContentFile(b"x", name=f"{name}.pt"), "sha256": "0" * 64,
              "test_accuracy": 0.9, "status": ModelVersion.Status.CANDIDATE}
    values.update(fields)
    return ModelVersion.objects.create(name=name, **values)
