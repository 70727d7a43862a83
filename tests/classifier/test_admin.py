"""The admin for predictions and model versions: pages render real rows, filters and search select
the right rows, only the label is editable on a prediction, status is not editable on a version."""
from __future__ import annotations

import base64
import datetime as dt
import io
import re
from urllib.parse import urlencode

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image, ImageDraw

from classifier.models import ModelVersion, Prediction

pytestmark = pytest.mark.django_db

PREDICTIONS_URL = reverse("admin:classifier_prediction_changelist")
VERSIONS_URL = reverse("admin:classifier_modelversion_changelist")


def prediction_url(prediction: Prediction) -> str:
    return reverse("admin:classifier_prediction_change", args=[prediction.pk])


def version_url(version: ModelVersion) -> str:
    return reverse("admin:classifier_modelversion_change", args=[version.pk])


def listed(response) -> list[int]:
    return sorted(obj.pk for obj in response.context["cl"].result_list)


def drawing_png() -> bytes:
    """A small transparent canvas with a black stroke, like the site sends."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(32, 8), (32, 56)], fill=(0, 0, 0, 255), width=6)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def input_pixels() -> bytes:
    pixels = bytearray(28 * 28)
    for row in range(4, 24):
        pixels[row * 28 + 13 : row * 28 + 16] = b"\xff\xff\xff"
    return bytes(pixels)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def make_version(db):
    counter = iter(range(1, 1000))

    def make(**fields) -> ModelVersion:
        n = next(counter)
        matrix = [[980 if t == p else (t + p) % 3 for p in range(10)] for t in range(10)]
        values = {
            "name": "test-net",
            "version": n,
            "arch": "cnn",
            "checkpoint": ContentFile(b"not really a checkpoint", name=f"test-net-{n}.pt"),
            "sha256": f"{n:064x}",
            "num_parameters": 123456,
            "test_accuracy": 0.9876,
            "per_class_accuracy": [0.99 - d / 1000 for d in range(10)],
            "confusion_matrix": matrix,
            "metrics": {"test_loss": 0.0421, "test_n": 10000, "val_accuracy": 0.9861},
            "preprocessing": "mnist-com-20px/1",
            "training_config": {"epochs": 3, "lr": 0.01, "optimizer": "sgd"},
            "status": ModelVersion.Status.CANDIDATE,
        }
        values.update(fields)
        return ModelVersion.objects.create(**values)

    return make


@pytest.fixture
def version(make_version) -> ModelVersion:
    return make_version()


@pytest.fixture
def make_prediction(version):
    png = drawing_png()
    pixels = input_pixels()

    def make(*, digit: int = 1, label: int | None = None, **fields) -> Prediction:
        probabilities = [0.01] * 10
        probabilities[digit] = 0.91
        values = {
            "image": ContentFile(png, name="drawing.png"),
            "input_pixels": pixels,
            "probabilities": probabilities,
            "digit": digit,
            "confidence": 0.91,
            "model_version": version,
            "latency_ms": 3.5,
            "source": Prediction.Source.SITE,
            "session_key": "",
            "label": label,
        }
        values.update(fields)
        return Prediction.objects.create(**values)

    return make


@pytest.fixture
def three_kinds(make_prediction):
    """One correct, one wrong and one unlabelled prediction."""
    return {
        "correct": make_prediction(digit=1, label=1),
        "wrong": make_prediction(digit=7, label=1),
        "unlabelled": make_prediction(digit=3),
    }


# --- predictions: list ------------------------------------------------------------------------


def test_prediction_changelist_shows_thumbnails_and_columns(admin_client, three_kinds):
    response = admin_client.get(PREDICTIONS_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert listed(response) == sorted(p.pk for p in three_kinds.values())
    for prediction in three_kinds.values():
        assert f'src="{prediction.image.url}"' in html
    assert html.count('class="mnist-input mnist-thumb" src="data:image/png;base64,') == 3
    assert html.count('class="mnist-drawing mnist-thumb"') == 3
    assert "icon-yes.svg" in html and "icon-no.svg" in html and "icon-unknown.svg" in html
    assert "91.0%" in html
    assert "3.5 ms" in html


def test_input_thumbnail_is_the_stored_28x28_input(admin_client, make_prediction):
    make_prediction()
    html = admin_client.get(PREDICTIONS_URL).content.decode()

    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert image.size == (28, 28)
    assert np.array_equal(np.asarray(image.convert("L")).tobytes(), input_pixels())


@pytest.mark.parametrize("kind", ["correct", "wrong", "unlabelled"])
def test_correctness_filter(admin_client, three_kinds, kind):
    response = admin_client.get(PREDICTIONS_URL, {"correctness": kind})

    assert response.status_code == 200
    assert listed(response) == [three_kinds[kind].pk]


def test_digit_and_label_filters(admin_client, three_kinds):
    assert listed(admin_client.get(PREDICTIONS_URL, {"digit": 7})) == [three_kinds["wrong"].pk]
    assert listed(admin_client.get(PREDICTIONS_URL, {"label": 1})) == sorted(
        [three_kinds["correct"].pk, three_kinds["wrong"].pk]
    )
    assert listed(admin_client.get(PREDICTIONS_URL, {"label__isnull": "True"})) == [three_kinds["unlabelled"].pk]


def test_model_version_and_source_filters(admin_client, make_prediction, make_version):
    other = make_version(name="other-net")
    site = make_prediction(source=Prediction.Source.SITE)
    api = make_prediction(source=Prediction.Source.API, model_version=other)

    assert listed(admin_client.get(PREDICTIONS_URL, {"model_version__id__exact": other.pk})) == [api.pk]
    assert listed(admin_client.get(PREDICTIONS_URL, {"source__exact": "site"})) == [site.pk]
    assert listed(admin_client.get(PREDICTIONS_URL, {"source__exact": "api"})) == [api.pk]


def test_created_date_filter_and_hierarchy(admin_client, make_prediction):
    recent = make_prediction()
    old = make_prediction()
    long_ago = timezone.now() - dt.timedelta(days=400)
    Prediction.objects.filter(pk=old.pk).update(created_at=long_ago)

    response = admin_client.get(PREDICTIONS_URL)
    date_filter = next(spec for spec in response.context["cl"].filter_specs if spec.title == "created at")
    choices = date_filter.choices(response.context["cl"])
    past_week = next(choice for choice in choices if choice["display"] == "Past 7 days")
    assert listed(admin_client.get(PREDICTIONS_URL + past_week["query_string"])) == [recent.pk]

    by_year = admin_client.get(PREDICTIONS_URL, {"created_at__year": long_ago.year})
    assert listed(by_year) == [old.pk]


def test_every_filter_choice_renders(admin_client, three_kinds):
    """Each link the filter sidebar offers is a valid lookup (the admin redirects to ?e=1 otherwise)."""
    response = admin_client.get(PREDICTIONS_URL)
    changelist = response.context["cl"]
    query_strings = {
        choice["query_string"] for spec in changelist.filter_specs for choice in spec.choices(changelist)
    }
    assert len(query_strings) > 10
    for query_string in query_strings:
        assert admin_client.get(PREDICTIONS_URL + query_string).status_code == 200, query_string


@pytest.mark.parametrize("field", ["id", "session_key", "username", "client_ip"])
def test_search(admin_client, make_prediction, django_user_model, field):
    alice = django_user_model.objects.create_user("alice")
    target = make_prediction(session_key="s3ss10nkey", client_ip="203.0.113.7", user=alice)
    make_prediction(session_key="othersession", client_ip="198.51.100.1")
    term = {"id": str(target.pk), "session_key": "s3ss10nkey", "username": "alice", "client_ip": "203.0.113.7"}[field]

    response = admin_client.get(PREDICTIONS_URL, {"q": term})

    assert response.status_code == 200
    assert listed(response) == [target.pk]


def test_search_for_text_is_not_an_error(admin_client, make_prediction):
    make_prediction(session_key="abc")
    response = admin_client.get(PREDICTIONS_URL, {"q": "not-an-ip or id"})
    assert response.status_code == 200
    assert listed(response) == []


def test_prediction_changelist_query_count_is_bounded(
    admin_client, make_prediction, make_version, django_user_model, django_assert_max_num_queries
):
    versions = [make_version(name=f"net-{i}") for i in range(3)]
    users = [django_user_model.objects.create_user(f"user{i}") for i in range(3)]
    for i in range(30):
        label = i % 10 if i % 3 else None
        make_prediction(digit=i % 10, label=label, model_version=versions[i % 3], user=users[i % 3])

    with django_assert_max_num_queries(12):  # 9 today: session, user, count, rows, filters, dates
        response = admin_client.get(PREDICTIONS_URL)

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 30


# --- predictions: detail ----------------------------------------------------------------------


def test_prediction_change_page_shows_images_and_chart(admin_client, make_prediction):
    prediction = make_prediction(digit=4, label=9)

    response = admin_client.get(prediction_url(prediction))

    assert response.status_code == 200
    html = response.content.decode()
    assert f'src="{prediction.image.url}"' in html
    assert 'class="mnist-input mnist-large" src="data:image/png;base64,' in html
    assert '<svg class="prob-chart"' in html
    assert html.count('<rect class="prob-bar') == 10
    assert '<rect class="prob-bar prob-bar--predicted"' in html
    assert "<title>4: 91.00%</title>" in html


def test_only_the_label_is_editable(admin_client, make_prediction):
    prediction = make_prediction()

    response = admin_client.get(prediction_url(prediction))

    assert list(response.context["adminform"].form.fields) == ["label"]
    assert '<select name="label"' in response.content.decode()


def test_setting_a_label_records_who_and_when(admin_client, admin_user, make_prediction):
    prediction = make_prediction(digit=7)
    before = timezone.now()

    response = admin_client.post(prediction_url(prediction), {"label": "1", "digit": "1", "_save": "Save"})

    assert response.status_code == 302
    prediction.refresh_from_db()
    assert prediction.label == 1
    assert prediction.digit == 7  # read-only fields ignore posted values
    assert prediction.labelled_by == admin_user
    assert prediction.labelled_at is not None and prediction.labelled_at >= before
    assert prediction.is_correct is False


def test_clearing_a_label_clears_who_and_when(admin_client, admin_user, make_prediction):
    prediction = make_prediction(label=3, labelled_by=admin_user, labelled_at=timezone.now())

    admin_client.post(prediction_url(prediction), {"label": "", "_save": "Save"})

    prediction.refresh_from_db()
    assert (prediction.label, prediction.labelled_by, prediction.labelled_at) == (None, None, None)


def test_saving_an_unchanged_label_keeps_who_and_when(admin_client, django_user_model, make_prediction):
    labeller = django_user_model.objects.create_user("labeller")
    when = timezone.now() - dt.timedelta(days=2)
    prediction = make_prediction(label=3, labelled_by=labeller, labelled_at=when)

    admin_client.post(prediction_url(prediction), {"label": "3", "_save": "Save"})

    prediction.refresh_from_db()
    assert (prediction.labelled_by, prediction.labelled_at) == (labeller, when)


def test_predictions_cannot_be_added(admin_client):
    assert admin_client.get(reverse("admin:classifier_prediction_add")).status_code == 403


def test_non_staff_user_is_redirected_to_login(client, django_user_model, make_prediction):
    prediction = make_prediction()
    client.force_login(django_user_model.objects.create_user("visitor"))

    for url in (PREDICTIONS_URL, prediction_url(prediction), VERSIONS_URL):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("admin:login"))


def test_user_controlled_text_is_escaped(admin_client, make_prediction, make_version):
    evil = make_version(name="<script>alert(1)</script>")
    prediction = make_prediction(model_version=evil, session_key="<b>sess</b>")

    for url in (PREDICTIONS_URL, prediction_url(prediction), version_url(evil)):
        html = admin_client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- model versions ---------------------------------------------------------------------------


def test_version_changelist_renders(admin_client, version):
    response = admin_client.get(VERSIONS_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert version.pk in listed(response)
    assert '<span class="mv-status mv-status--candidate">candidate</span>' in html
    assert "98.76%" in html
    assert "123,456" in html


def test_version_filters_and_search(admin_client, make_version):
    archived = make_version(name="old-mlp", arch="mlp", status=ModelVersion.Status.ARCHIVED, notes="Superseded by cnn.")
    candidate = make_version(name="fresh-cnn", sha256="ab" * 32)

    assert archived.pk in listed(admin_client.get(VERSIONS_URL, {"status__exact": "archived"}))
    assert candidate.pk not in listed(admin_client.get(VERSIONS_URL, {"status__exact": "archived"}))
    by_arch = listed(admin_client.get(VERSIONS_URL, {"arch": "mlp"}))
    assert archived.pk in by_arch and candidate.pk not in by_arch
    assert listed(admin_client.get(VERSIONS_URL, {"q": "fresh-cnn"})) == [candidate.pk]
    assert listed(admin_client.get(VERSIONS_URL, {"q": "ab" * 10})) == [candidate.pk]
    assert listed(admin_client.get(VERSIONS_URL, {"q": "superseded"})) == [archived.pk]


def test_version_change_page_shows_metrics(admin_client, make_version, make_prediction, version):
    child = make_version(name="test-net-retrained", parent=version)
    make_prediction(model_version=child)
    make_prediction(model_version=child)
    make_prediction(model_version=version)

    response = admin_client.get(version_url(child))

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<a href="{version_url(version)}">{version.label}</a>' in html  # parent link
    assert child.sha256 in html
    assert f'<a href="{child.checkpoint.url}" download>' in html
    predictions = PREDICTIONS_URL + "?" + urlencode({"model_version__id__exact": child.pk})
    assert f'<a href="{predictions}">2 predictions</a>' in html
    # per-class accuracy: ten rows with bars; confusion matrix: 10x10 shaded cells
    assert html.count('<span class="mv-bar"') == 10
    assert html.count('<td class="cm-hit') == 10
    assert html.count('<td class="cm-miss') == 90
    assert 'title="true 0, predicted 0: 980' in html
    assert "&quot;optimizer&quot;: &quot;sgd&quot;" in html  # pretty JSON, escaped
    assert "98.61%" in html and "0.0421" in html and "10,000" in html


def test_version_change_page_without_metrics(admin_client, make_version):
    bare = make_version(per_class_accuracy=[], confusion_matrix=[], metrics={}, training_config={}, test_accuracy=None)
    assert admin_client.get(version_url(bare)).status_code == 200


def test_version_status_is_not_editable(admin_client, version):
    response = admin_client.get(version_url(version))
    assert list(response.context["adminform"].form.fields) == ["notes"]
    assert 'name="status"' not in response.content.decode()

    response = admin_client.post(version_url(version), {"status": "active", "notes": "Looks good.", "_save": "Save"})

    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.CANDIDATE
    assert version.notes == "Looks good."


def test_versions_cannot_be_added_or_deleted(admin_client, version):
    assert admin_client.get(reverse("admin:classifier_modelversion_add")).status_code == 403
    assert admin_client.get(reverse("admin:classifier_modelversion_delete", args=[version.pk])).status_code == 403
    assert ModelVersion.objects.filter(pk=version.pk).exists()


def test_shipped_versions_render(admin_client):
    """The versions registered by the migration (real metrics from training) render too."""
    for shipped in ModelVersion.objects.exclude(name="test-net"):
        assert admin_client.get(version_url(shipped)).status_code == 200
