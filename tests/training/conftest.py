"""Fixtures for training runs (the registry's fixtures are in tests/conftest.py).

Runs execute inline (synchronously, right after the transaction commits) unless a test asks for the
thread executor or a real Celery worker; progress goes to an in-memory channel layer. So these tests
need no Redis even where REDIS_URL is set.
"""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _training_settings(settings):
    settings.TRAINING_EXECUTOR = "inline"
    settings.TRAINING_REAP_SECONDS = 0  # no background reaper threads in tests
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PROMOTION_MARGIN_MNIST = 0.0
    settings.PROMOTION_MARGIN_FIELD = 0.0


# Small, fast runs: logistic regression on the first 6,000 MNIST images, one epoch.
QUICK_RUN = {"arch": "logreg", "epochs": 1, "mnist_limit": 6000, "val_size": 1000}
