"""Hostile or broken requests get the one JSON error shape with a 4xx, never a crash or an HTML page."""
from __future__ import annotations

import pytest
from django.test import Client

from classifier import views
from classifier.models import Prediction
from tests.support.registry import assert_error

pytestmark = pytest.mark.django_db

DEEP = "[" * 5000 + "]" * 5000


def test_deeply_nested_json_is_a_400_and_stores_nothing(api_client):
    response = api_client.post("/api/predict/", DEEP, content_type="application/json")
    error = assert_error(response, 400, "malformed_request")
    assert "nested too deeply" in error["detail"]
    assert not Prediction.objects.exists()


def test_deeply_nested_json_on_a_staff_endpoint_is_a_400_too(staff_client):
    assert_error(staff_client.post("/api/retrain/", DEEP, content_type="application/json"), 400, "malformed_request")


def test_an_unknown_api_url_answers_json_and_a_page_url_answers_html(client, settings):
    settings.DEBUG = False
    response = client.get("/api/no-such-thing/")
    assert response["Content-Type"] == "application/json"
    assert_error(response, 404, "not_found")
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_an_unexpected_failure_under_api_is_a_json_500(monkeypatch, settings):
    settings.DEBUG = False

    def broken() -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "model_status", broken)
    response = Client(raise_request_exception=False).get("/api/model-status/")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == "server_error" and "a bug" not in response.content.decode()
