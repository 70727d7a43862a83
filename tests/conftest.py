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
