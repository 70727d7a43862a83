"""An API client without a session labels its own prediction with the label key from the predict reply."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from classifier.models import Prediction
from tests.support.drawings import SEVEN, canvas, encode
from tests.support.registry import assert_error

pytestmark = pytest.mark.django_db


def _predict(client: APIClient) -> dict:
    response = client.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json")
    assert response.status_code == 200
    return response.json()


def test_the_label_key_lets_a_sessionless_client_label_its_prediction():
    client = APIClient()
    body = _predict(client)
    key = body["label_key"]
    assert len(key) >= 32
    stored = Prediction.objects.get(pk=body["id"])
    assert key not in stored.label_key_digest and len(stored.label_key_digest) == 64  # only a digest is kept

    denied = APIClient().post(f"/api/predictions/{body['id']}/label/", {"label": 7}, format="json")
    assert denied.status_code in (401, 403)
    wrong = APIClient().post(f"/api/predictions/{body['id']}/label/", {"label": 7, "label_key": "x" * 32},
                             format="json")
    assert wrong.status_code in (401, 403)

    labelled = APIClient().post(f"/api/predictions/{body['id']}/label/", {"label": 7, "label_key": key},
                                format="json")
    assert labelled.status_code == 200 and labelled.json() == {"id": body["id"], "label": 7,
                                                               "digit": body["digit"], "correct": body["digit"] == 7}
    assert Prediction.objects.get(pk=body["id"]).label == 7


def test_a_key_opens_its_own_prediction_only():
    client = APIClient()
    first, second = _predict(client), _predict(client)
    response = client.post(f"/api/predictions/{second['id']}/label/", {"label": 1, "label_key": first["label_key"]},
                           format="json")
    assert response.status_code in (401, 403)
    assert Prediction.objects.get(pk=second["id"]).label is None


def test_batch_answers_carry_a_key_each():
    client = APIClient()
    image = encode(canvas(SEVEN))
    results = client.post("/api/predict/batch/", {"images": [image, image]}, format="json").json()["results"]
    keys = [r["label_key"] for r in results]
    assert len(set(keys)) == 2
    ok = client.post(f"/api/predictions/{results[1]['id']}/label/", {"label": 7, "label_key": keys[1]},
                     format="json")
    assert ok.status_code == 200
    assert_error(client.post(f"/api/predictions/{results[0]['id']}/label/", {"label": 11, "label_key": keys[0]},
                             format="json"), 400, "invalid_label")
