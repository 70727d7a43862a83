"""The sample drawings in docs/examples/ (used by the README's curl examples) are recognized."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
from rest_framework.test import APIClient

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name, digit", [("seven", 7), ("three", 3), ("zero", 0)])
def test_the_readme_flow_with_a_sample_drawing(name, digit):
    client = APIClient()  # as curl: no session, no cookies
    image = base64.b64encode((EXAMPLES / f"{name}.png").read_bytes()).decode()
    body = client.post("/api/predict/", {"image": image}, format="json").json()
    assert body["digit"] == digit and body["confidence"] > 0.5
    labelled = client.post(f"/api/predictions/{body['id']}/label/", {"label": digit, "label_key": body["label_key"]},
                           format="json")
    assert labelled.status_code == 200 and labelled.json()["correct"] is True


def test_a_multipart_upload_of_a_sample_works_too():
    client = APIClient()
    with (EXAMPLES / "seven.png").open("rb") as fh:
        body = client.post("/api/predict/", {"image": fh}, format="multipart").json()
    assert body["digit"] == 7
