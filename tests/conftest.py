"""Shared fixtures. Tests that need the real MNIST files read them from MNIST_ROOT (CI sets it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = os.environ.get("MNIST_ROOT")
    if not root or not (Path(root) / "MNIST" / "raw").is_dir():
        pytest.skip("MNIST_ROOT is not set to a folder with MNIST/raw/ (run `python manage.py fetch_mnist`)")
    return Path(root)


@pytest.fixture(scope="session")
def mnist_test(mnist_root):
    from engine.data import load_mnist

    return load_mnist(mnist_root, "test")


@pytest.fixture(scope="session")
def mnist_train(mnist_root):
    from engine.data import load_mnist

    return load_mnist(mnist_root, "train")


@pytest.fixture(scope="session")
def shipped_dir() -> Path:
    return REPO / "training" / "shipped"


# Every test session writes media (drawings, copied checkpoints) into its own temporary folder.
import tempfile  # noqa: E402

from django.conf import settings  # noqa: E402

_MEDIA = tempfile.mkdtemp(prefix="mnistsite-test-media-")
settings.MEDIA_ROOT = _MEDIA
# No background reaper in the test process (servers the tests start run their own, as in production).
settings.TRAINING_REAP_SECONDS = 0
# Counts as they are now (a test that checks the status counts' refresh interval sets its own).
settings.MODEL_STATUS_COUNTS_SECONDS = 0
# Nor a retraining policy checking by itself (tests call training.policy.policy_check).
settings.RETRAIN_POLICY_SCHEDULER = "off"
# A fast hasher: Django's default (PBKDF2) costs about 0.3 s per user created. Servers the tests start keep
# the default, so users they log in with a password are created by them (tests/browser).
settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache: throttle counters (every test client is 127.0.0.1) and cached
    counts do not carry over from the tests before it (in CI the cache is a Redis server that outlives them)."""
    from django.core.cache import cache

    try:
        cache.clear()
    except Exception:  # noqa: BLE001 - a test that stopped the cache's server sees what it left
        pass
    yield


@pytest.fixture(autouse=True)
def _fresh_inference_registry():
    """Each test sees the registry as a new server process would."""
    from classifier.inference import registry

    registry.clear()
    yield
    registry.clear()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(username="staff", password="pw-staff-123", is_staff=True)


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def staff_client(staff_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def token_client(user):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


# ------------------------------------------------------------------ the model registry


@pytest.fixture
def shipped_versions(db):
    """The shipped versions (cnn active), as migration 0002 registers them (a no-op when present).

    For transactional tests, which see whatever the transactional test before them left. They all use
    ``serialized_rollback=True``: a plain transactional test's flush recreates the content types, and a
    serialized test after it would then collide with them when it reloads its snapshot.
    """
    import importlib

    from django.apps import apps

    from classifier.models import ModelVersion

    importlib.import_module("classifier.migrations.0002_register_shipped_models").register(apps, None)
    shipped = ModelVersion.objects.filter(notes__startswith="Shipped with the code")
    shipped.update(shipped=True)  # as migration 0005 marks them
    return list(shipped)


@pytest.fixture
def mnist_settings(settings, mnist_root):
    settings.MNIST_ROOT = mnist_root
    return settings




@pytest.fixture
def labelled_drawings(db, mnist_test):
    from classifier.models import ModelVersion, Prediction

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
                label_trust=Prediction.Trust.TRUSTED,  # as from the review queue: they train and judge
            ))
        return Prediction.objects.bulk_create(rows)

    return make


@pytest.fixture
def zero_logreg_checkpoint():
    """A valid logreg checkpoint whose weights are all zero: it answers 0 for everything (about 10%)."""
    import io

    import torch

    from engine.checkpoint import make_checkpoint
    from engine.nets import build_model

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
    from classifier.lifecycle import model_version_activate, model_version_upload

    version = model_version_upload(data=zero_logreg_checkpoint, name="zero")
    return model_version_activate(version=version, by=None, reason="a weak baseline for the test", force=True)


# ------------------------------------------------------------------ clocks

import time  # noqa: E402


class ManualClock:
    """Stands in for the ``time`` module of one module under test: ``monotonic()`` moves only on ``advance()``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def inference_clock(monkeypatch) -> ManualClock:
    """The inference registry's clock, moved by the test: no sleeping against ``MODEL_REFRESH_SECONDS``."""
    from classifier import inference

    clock = ManualClock()
    monkeypatch.setattr(inference, "time", clock)
    return clock
