"""Rows and checks shared by the registry, lifecycle and training tests."""
from __future__ import annotations

from django.core.files.base import ContentFile

from classifier.models import ModelVersion


def fake_version(name: str = "fake", **fields) -> ModelVersion:
    values = {"version": 1, "arch": "logreg", "checkpoint": ContentFile(b"x", name=f"{name}.pt"), "sha256": "0" * 64,
              "test_accuracy": 0.9, "status": ModelVersion.Status.CANDIDATE}
    values.update(fields)
    return ModelVersion.objects.create(name=name, **values)


def assert_error(response, status: int, code: str) -> dict:
    """The response is the project's one error shape with ``status`` and ``code``."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]
