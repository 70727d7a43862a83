"""Compare shows proven versions to everyone; fresh candidates only to staff, marked as candidates."""
from __future__ import annotations

import pytest
from django.utils import timezone

from classifier.models import ModelVersion
from tests.support.drawings import canvas, encode

pytestmark = pytest.mark.django_db


def _copy_of(name: str, new_name: str, **fields) -> ModelVersion:
    """Another version of a shipped architecture, on the same (loadable) checkpoint file."""
    shipped = ModelVersion.objects.get(name=name)
    return ModelVersion.objects.create(name=new_name, version=1, arch=shipped.arch, checkpoint=shipped.checkpoint.name,
                                       sha256=shipped.sha256, **fields)


def _compare(client) -> dict[str, list[tuple[str, str]]]:
    body = client.post("/api/predict/", {"image": encode(canvas()), "compare": True}, format="json").json()
    shown: dict[str, list[tuple[str, str]]] = {}
    for answer in body["compare"]:
        ref = answer["model_version"]
        shown.setdefault(ref["arch"], []).append((ref["name"], ref["status"]))
    return shown


def test_a_fresh_weak_candidate_does_not_replace_the_shipped_version_in_public(api_client, staff_client):
    _copy_of("lenet5", "lenet5-quick", test_accuracy=0.89, status="candidate")  # a 2-epoch test run

    public = _compare(api_client)
    assert public["lenet5"] == [("lenet5", "candidate")]  # the shipped one (vetted: shipped with the code)
    assert set(public) == {"cnn", "lenet5", "mlp", "logreg"}

    staff = _compare(staff_client)
    assert ("lenet5-quick", "candidate") in staff["lenet5"] and ("lenet5", "candidate") in staff["lenet5"]


def test_each_architecture_shows_its_best_vetted_version(api_client):
    _copy_of("mlp", "mlp-proven", test_accuracy=0.995, status="candidate", activated_at=timezone.now())
    _copy_of("mlp", "mlp-archived", test_accuracy=0.999, status="archived", activated_at=timezone.now())
    assert _compare(api_client)["mlp"] == [("mlp-proven", "candidate")]
