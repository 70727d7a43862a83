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
    from training.engine.data import load_mnist

    return load_mnist(mnist_root, "test")


@pytest.fixture(scope="session")
def mnist_train(mnist_root):
    from training.engine.data import load_mnist

    return load_mnist(mnist_root, "train")


@pytest.fixture(scope="session")
def shipped_dir() -> Path:
    return REPO / "training" / "shipped"


# Every test session writes media (drawings, copied checkpoints) into its own temporary folder.
import tempfile  # noqa: E402

from django.conf import settings  # noqa: E402

_MEDIA = tempfile.mkdtemp(prefix="mnistsite-test-media-")
settings.MEDIA_ROOT = _MEDIA


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
