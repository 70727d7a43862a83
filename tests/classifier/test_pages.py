"""The HTML pages through Django's test client: the drawing page and the staff statistics page."""
from __future__ import annotations

import re

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from classifier.models import ModelVersion, Prediction

pytestmark = pytest.mark.django_db

DRAW_HOOKS = [
    "canvas",
    "predict",
    "clear",
    "undo",
    "prediction",
    "probabilities",
    "empty-message",
    "random-digit",
    "compare-toggle",
    "feedback",
    *[f"prob-{digit}" for digit in range(10)],
]


# ---- helpers ----


def make_prediction(version: ModelVersion, *, digit: int, label: int | None = None) -> Prediction:
    probabilities = [0.01] * 10
    probabilities[digit] = 0.91
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 13:15] = 255
    return Prediction.objects.create(
        image=ContentFile(b"\x89PNG not really", name=f"drawing-{digit}.png"),
        input_pixels=pixels.tobytes(),
        probabilities=probabilities,
        digit=digit,
        confidence=0.91,
        model_version=version,
        latency_ms=1.5,
        label=label,
    )


@pytest.fixture
def versions() -> dict[str, ModelVersion]:
    def version(name: str, arch: str) -> ModelVersion:
        return ModelVersion.objects.create(
            name=name, version=1, arch=arch, checkpoint=f"checkpoints/{name}.pt", sha256=name.ljust(64, "0")
        )

    return {"cnn": version("page-cnn", "cnn"), "mlp": version("page-mlp", "mlp")}


@pytest.fixture
def predictions(versions) -> list[Prediction]:
    cnn, mlp = versions["cnn"], versions["mlp"]
    return [
        make_prediction(cnn, digit=7, label=7),
        make_prediction(cnn, digit=1, label=1),
        make_prediction(cnn, digit=3, label=8),
        make_prediction(cnn, digit=4),
        make_prediction(mlp, digit=9, label=4),
    ]


# ---- the drawing page ----


def test_draw_page_renders_every_test_hook(client):
    response = client.get(reverse("pages:draw"))

    assert response.status_code == 200
    html = response.content.decode()
    for hook in DRAW_HOOKS:
        assert f'data-testid="{hook}"' in html, hook
    assert html.count('data-testid="prob-') == 10


def test_draw_page_sets_the_csrf_cookie(client):
    response = client.get(reverse("pages:draw"))

    assert "csrftoken" in response.cookies
    assert response.cookies["csrftoken"].value


def test_draw_page_uses_only_local_assets(client):
    html = client.get(reverse("pages:draw")).content.decode()

    sources = re.findall(r'<(?:script|img|link|iframe)\b[^>]*?\b(?:src|href)="([^"]*)"', html)
    assert any(src.endswith("draw.js") for src in sources)
    assert any(src.endswith("site.css") for src in sources)
    for src in sources:
        assert not re.match(r"^(?:[a-z]+:)?//", src, re.I), src


def test_draw_page_canvas_is_set_up_for_pointer_input(client):
    html = client.get(reverse("pages:draw")).content.decode()

    assert re.search(r'<canvas[^>]*width="280"[^>]*height="280"', html)
    assert re.search(r'<button type="button"[^>]*data-testid="predict"', html)
    for digit in range(10):
        assert f'data-label="{digit}"' in html


def test_static_assets_are_found(client):
    from django.contrib.staticfiles import finders

    for name in ("classifier/draw.js", "site/site.css", "site/favicon.svg", "site/api.js", "site/confusion-matrix.css"):
        assert finders.find(name), name


def test_draw_page_shows_who_is_signed_in(client, staff_user):
    assert "Log in" in client.get(reverse("pages:draw")).content.decode()

    client.force_login(staff_user)
    html = client.get(reverse("pages:draw")).content.decode()

    assert "Signed in as" in html and "staff" in html
    assert "Log out" in html


# ---- the statistics page ----


def test_stats_redirects_anonymous_users_to_the_sites_login(client):
    response = client.get(reverse("pages:stats"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account-login"))
    assert "next=/stats/" in response["Location"]


def test_stats_refuses_users_who_are_not_staff(client, user):
    client.force_login(user)

    response = client.get(reverse("pages:stats"))

    assert response.status_code == 403


def test_stats_with_no_predictions(client, staff_user):
    client.force_login(staff_user)

    response = client.get(reverse("pages:stats"))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="stat-total">0<' in html
    assert 'data-testid="stat-accuracy">–<' in html
    assert "No drawings yet" in html


def test_stats_shows_counts_accuracy_and_the_confusion_matrix(client, staff_user, predictions):
    client.force_login(staff_user)

    response = client.get(reverse("pages:stats"))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="stat-total">5<' in html
    assert 'data-testid="stat-labelled">4<' in html
    assert 'data-testid="stat-correct">2<' in html
    assert 'data-testid="stat-accuracy">50.0%<' in html

    rows = {row["model_version"]["name"]: row for row in response.context["per_version"]}
    assert rows.keys() == {"page-cnn", "page-mlp"}
    assert rows["page-cnn"]["predictions"] == 4 and rows["page-cnn"]["labelled"] == 3
    assert rows["page-cnn"]["accuracy_percent"] == pytest.approx(200 / 3)
    assert rows["page-mlp"]["accuracy_percent"] == 0.0
    assert "page-cnn v1" in html and "66.7%" in html

    def cell(label: int, predicted: int) -> str:
        match = re.search(rf'data-testid="cm-{label}-{predicted}"[^>]*>(\d+)<', html)
        assert match, (label, predicted)
        return match.group(1)

    assert cell(7, 7) == "1" and cell(1, 1) == "1"
    assert cell(8, 3) == "1" and cell(4, 9) == "1"
    assert cell(4, 4) == "0" and cell(3, 8) == "0"
    assert sum(int(cell(t, p)) for t in range(10) for p in range(10)) == 4


def test_stats_gallery_shows_recent_drawings_and_their_inputs(client, staff_user, predictions):
    client.force_login(staff_user)

    response = client.get(reverse("pages:stats"))

    html = response.content.decode()
    assert html.count('data-testid="gallery-item"') == len(predictions)
    for prediction in predictions:
        assert f'src="{prediction.image.url}"' in html
    assert html.count('src="data:image/png;base64,') == len(predictions)
    assert html.count("gallery-item correct") == 2
    assert html.count("gallery-item wrong") == 2
    assert "unlabelled" in html


def test_stats_gallery_input_is_the_stored_28x28_image(client, staff_user, predictions):
    import base64
    import io

    from PIL import Image

    client.force_login(staff_user)

    gallery = client.get(reverse("pages:stats")).context["gallery"]

    data = gallery[0]["input_url"].removeprefix("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.size == (28, 28)
    stored = np.frombuffer(bytes(gallery[0]["prediction"].input_pixels), np.uint8).reshape(28, 28)
    assert np.array_equal(np.asarray(image.convert("L")), stored)
