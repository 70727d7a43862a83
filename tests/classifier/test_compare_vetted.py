"""Each compare answer says whether its version is vetted (active once, or shipped with the code): the
drawing page marks the others, fresh candidates shown to staff only, as candidates."""
from __future__ import annotations

import pytest

from classifier.inference import registry
from classifier.lifecycle import model_version_activate
from classifier.models import ModelVersion
from tests.support.drawings import canvas, encode

pytestmark = pytest.mark.django_db


def _fresh_lenet5() -> ModelVersion:
    shipped = ModelVersion.objects.get(name="lenet5")
    return ModelVersion.objects.create(name="lenet5-quick", version=1, arch="lenet5", checkpoint=shipped.checkpoint.name,
                                       sha256=shipped.sha256, test_accuracy=0.89, status="candidate")


def _compare(client) -> dict[str, dict]:
    response = client.post("/api/predict/", {"image": encode(canvas()), "compare": True}, format="json")
    assert response.status_code == 200
    return {answer["model_version"]["name"]: answer for answer in response.json()["compare"]}


def test_only_fresh_candidates_are_not_vetted(api_client, staff_client):
    registry.clear()
    fresh = _fresh_lenet5()

    staff = _compare(staff_client)
    assert staff["lenet5-quick"]["vetted"] is False
    assert staff["lenet5-quick"]["model_version"]["status"] == "candidate"
    # The shipped lenet5 is a "candidate" in the registry too, but a vetted one.
    assert staff["lenet5"]["model_version"]["status"] == "candidate" and staff["lenet5"]["vetted"] is True
    assert all(answer["vetted"] for name, answer in staff.items() if name != "lenet5-quick")

    public = _compare(api_client)
    assert "lenet5-quick" not in public and all(answer["vetted"] for answer in public.values())

    # Once active it is vetted, even in a process that loaded it as a candidate.
    model_version_activate(version=fresh, by=None, reason="test", force=True)
    registry.active_ref(force=True)
    promoted = _compare(api_client)["lenet5-quick"]
    assert promoted["vetted"] is True and promoted["model_version"]["status"] == "active"
