"""What a process serves when the active checkpoint cannot be loaded, and what it tells whom."""
from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from classifier.inference import registry
from classifier.models import ModelVersion
from tests.support.drawings import canvas, encode
from tests.support.registry import assert_error

pytestmark = pytest.mark.django_db

PREDICT = "/api/predict/"


@pytest.fixture
def broken_cnn(settings):
    """The active shipped cnn with its checkpoint file gone, in a process that has served nothing yet."""
    settings.MODEL_REFRESH_SECONDS = 0
    cnn = ModelVersion.objects.get(name="cnn")
    path = default_storage.path(cnn.checkpoint.name)
    with open(path, "rb") as fh:
        original = fh.read()
    default_storage.delete(cnn.checkpoint.name)
    registry.clear()
    yield cnn
    with open(path, "wb") as fh:
        fh.write(original)


def _answer(api_client):
    return api_client.post(PREDICT, {"image": encode(canvas())}, format="json")


def test_a_cold_process_falls_back_to_the_most_recently_active_version_never_a_candidate(api_client, broken_cnn):
    now = timezone.now()
    # mlp was active long ago, lenet5 more recently; logreg is a candidate nobody ever promoted
    ModelVersion.objects.filter(name="mlp").update(activated_at=now - dt.timedelta(days=2))
    ModelVersion.objects.filter(name="lenet5").update(activated_at=now - dt.timedelta(days=1))
    assert ModelVersion.objects.get(name="logreg").activated_at is None
    response = _answer(api_client)
    assert response.status_code == 200 and response.json()["model_version"]["name"] == "lenet5"


def test_with_no_previously_active_version_to_fall_back_to_predict_is_503(api_client, broken_cnn):
    ModelVersion.objects.exclude(pk=broken_cnn.pk).update(activated_at=None)  # only candidates besides cnn
    error = assert_error(_answer(api_client), 503, "model_unavailable")
    assert "was active before" in error["message"]


def test_model_status_names_the_failure_but_shows_paths_to_staff_only(api_client, staff_client, broken_cnn):
    public = api_client.get("/api/model-status/").json()
    assert public["healthy"] is False and public["error"] == "model cnn v1 cannot be loaded: its checkpoint file " \
                                                              "cannot be read"
    assert "error_detail" not in public and "/" not in public["error"]
    staff = staff_client.get("/api/model-status/").json()
    assert broken_cnn.checkpoint.name in staff["error_detail"]
    predict_error = assert_error(_answer(api_client), 503, "model_unavailable")
    assert default_storage.location not in str(predict_error)
