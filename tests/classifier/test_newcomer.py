"""What a first visit runs into: links that lead only where the visitor may go, the favicon, a server
without MNIST (short for visitors, the fix for staff; the page is in tests/browser/test_layout.py),
throttled answers, rounded confidences."""
from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.templatetags.static import static
from rest_framework.throttling import ScopedRateThrottle

from classifier.models import Prediction
from tests.support.drawings import SEVEN, canvas, encode

pytestmark = pytest.mark.django_db

PREDICT = "/api/predict/"
RANDOM = "/api/mnist/random/"
MNIST_MISSING = "The MNIST test set is not available on this server."


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    return error


def assert_rounded(answer: dict) -> None:
    """Probabilities have at most six decimals, and the confidence is the answer's own probability."""
    probabilities = answer["probabilities"]
    assert all(p == round(p, 6) for p in probabilities), probabilities
    assert answer["confidence"] == probabilities[answer["digit"]] == max(probabilities)


# ------------------------------------------------------------------ links


def test_only_staff_see_the_stats_link(client, user, staff_user):
    for who in (None, user):
        if who:
            client.force_login(who)
        html = client.get("/").content.decode()
        assert 'href="/stats/"' not in html and ">Stats<" not in html
        assert 'href="/admin/"' not in html

    client.force_login(staff_user)
    html = client.get("/").content.decode()
    assert 'href="/stats/"' in html and 'href="/admin/"' in html


def test_inactive_staff_get_no_stats_link(client, staff_user):
    client.force_login(staff_user)
    staff_user.is_active = False
    staff_user.save()

    assert 'href="/stats/"' not in client.get("/").content.decode()


def test_favicon_ico_leads_to_the_site_icon(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"] == static("site/favicon.svg")
    assert finders.find("site/favicon.svg")


# ------------------------------------------------------------------ MNIST missing


def test_without_mnist_visitors_get_the_short_message_only(api_client, user, settings, tmp_path):
    settings.MNIST_ROOT = tmp_path

    error = error_of(api_client.get(RANDOM), 503, "mnist_unavailable")
    assert error["message"] == MNIST_MISSING
    assert error["detail"] is None

    api_client.force_authenticate(user)
    assert error_of(api_client.get(RANDOM), 503, "mnist_unavailable")["detail"] is None


def test_without_mnist_staff_are_told_how_to_fix_it(staff_client, settings, tmp_path):
    settings.MNIST_ROOT = tmp_path

    error = error_of(staff_client.get(RANDOM), 503, "mnist_unavailable")

    assert error["message"] == MNIST_MISSING
    assert "python manage.py fetch_mnist" in error["detail"] and "MNIST_ROOT" in error["detail"]
    assert str(tmp_path) in error["detail"]  # where it looked


# ------------------------------------------------------------------ throttling


def test_throttled_answers_say_too_many_requests(api_client, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "1/min"})
    cache.clear()
    assert api_client.post(PREDICT, {"image": encode(canvas())}, format="json").status_code == 200

    response = api_client.post(PREDICT, {"image": encode(canvas())}, format="json")

    error_of(response, 429, "throttled")
    assert response.reason_phrase == "Too Many Requests"
    cache.clear()


# ------------------------------------------------------------------ rounding


def test_confidence_is_rounded_like_the_probabilities(api_client):
    response = api_client.post(PREDICT, {"image": encode(canvas(SEVEN)), "compare": True}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert_rounded(body)
    stored = Prediction.objects.get(pk=body["id"])
    assert stored.confidence == body["confidence"] and stored.probabilities == body["probabilities"]
    assert len(body["compare"]) >= 2
    for answer in body["compare"]:
        assert_rounded(answer)
    assert body["compare"][0]["confidence"] == body["confidence"]


def test_the_batch_answers_are_rounded_too(api_client):
    response = api_client.post("/api/predict/batch/", {"images": [encode(canvas(SEVEN))] * 2}, format="json")

    assert response.status_code == 200, response.content
    for answer in response.json()["results"]:
        assert_rounded(answer)


def test_the_random_mnist_answer_is_rounded(api_client, mnist_settings):
    body = api_client.get(RANDOM).json()

    assert_rounded(body["prediction"])
