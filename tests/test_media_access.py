"""Media are private: drawings and checkpoints reach staff only, through the site (mnistsite.media).

Anonymous visitors and signed-in non-staff get 404 for a stored drawing or checkpoint, as for a name that
does not exist; staff get the bytes, streamed from storage, or (behind nginx) an empty answer whose
X-Accel-Redirect names nginx's internal location.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from classifier.models import ModelVersion, Prediction
from tests.support.drawings import SEVEN, canvas, encode

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def drawing(api_client) -> Prediction:
    """A drawing an anonymous visitor sent, stored as the site stores every drawing."""
    response = api_client.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json")
    assert response.status_code == 200, response.content
    return Prediction.objects.get(pk=response.json()["id"])


@pytest.fixture
def checkpoint() -> ModelVersion:
    return ModelVersion.objects.filter(shipped=True).exclude(checkpoint="").first()


@pytest.fixture
def staff_browser(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def user_browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def stored_bytes(name: str) -> bytes:
    with default_storage.open(name, "rb") as file:
        return file.read()


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_anonymous_visitors_get_no_drawing_and_no_checkpoint(client, drawing, checkpoint):
    for url in (drawing.image.url, checkpoint.checkpoint.url):
        response = client.get(url)
        assert response.status_code == 404, url
        assert stored_bytes(url.removeprefix("/media/")) not in body(response)


def test_signed_in_visitors_who_are_not_staff_get_nothing_either(user_browser, drawing, checkpoint):
    for url in (drawing.image.url, checkpoint.checkpoint.url):
        assert user_browser.get(url).status_code == 404, url


def test_a_refusal_looks_like_a_missing_file_so_names_cannot_be_probed(client, staff_browser, checkpoint):
    missing = "/media/checkpoints/" + "0" * 64 + ".pt"
    assert staff_browser.get(missing).status_code == 404
    assert client.get(missing).status_code == client.get(checkpoint.checkpoint.url).status_code == 404


def test_staff_get_the_drawing_shown_inline_and_the_checkpoint_as_a_download(staff_browser, drawing, checkpoint, settings):
    settings.MEDIA_ACCEL_REDIRECT = ""
    response = staff_browser.get(drawing.image.url)
    assert response.status_code == 200
    assert body(response) == stored_bytes(drawing.image.name)
    assert response["Content-Type"] == "image/png" and "attachment" not in response.get("Content-Disposition", "")
    assert "private" in response["Cache-Control"]

    response = staff_browser.get(checkpoint.checkpoint.url)
    assert response.status_code == 200
    assert body(response) == stored_bytes(checkpoint.checkpoint.name)
    assert response["Content-Disposition"].startswith("attachment")
    assert "X-Accel-Redirect" not in response


def test_behind_nginx_staff_get_an_x_accel_redirect_and_no_body(staff_browser, client, checkpoint, drawing, settings):
    settings.MEDIA_ACCEL_REDIRECT = "/internal-media/"
    response = staff_browser.get(checkpoint.checkpoint.url)
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == "/internal-media/" + checkpoint.checkpoint.name
    assert body(response) == b""
    assert response["Content-Disposition"].startswith("attachment")
    response = staff_browser.get(drawing.image.url)
    assert response["X-Accel-Redirect"] == "/internal-media/" + drawing.image.name
    assert response["Content-Type"] == "image/png" and body(response) == b""
    # nobody else is handed the internal location
    refused = client.get(checkpoint.checkpoint.url)
    assert refused.status_code == 404 and "X-Accel-Redirect" not in refused


@pytest.mark.parametrize("name", ["../manage.py", "drawings/../../manage.py", "drawings//x.png", "./drawings"])
def test_names_outside_media_are_refused_even_to_staff(staff_browser, name):
    assert staff_browser.get("/media/" + name).status_code == 404


def test_writing_to_media_is_not_allowed(staff_browser, checkpoint):
    assert staff_browser.post(checkpoint.checkpoint.url).status_code == 405


def test_the_admin_links_staff_follow_are_answered(admin_client, checkpoint, drawing):
    for admin_url, file_url in ((reverse("admin:classifier_modelversion_change", args=[checkpoint.pk]),
                                 checkpoint.checkpoint.url),
                                (reverse("admin:classifier_prediction_change", args=[drawing.pk]), drawing.image.url)):
        page = admin_client.get(admin_url).content.decode()
        assert file_url in page
        assert admin_client.get(file_url).status_code == 200


def test_nginx_has_no_public_media_location_and_an_internal_one_the_example_names():
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    example = (REPO / "deploy" / "mnistsite.env.example").read_text()
    assert not re.search(r"location\s+/media/", conf)
    prefix = re.search(r"^MEDIA_ACCEL_REDIRECT=(\S+)$", example, re.M)[1]
    block = re.search(r"location\s+" + re.escape(prefix) + r"\s*\{([^}]*)\}", conf)
    assert block and re.search(r"^\s*internal;", block[1], re.M)
