"""The classifier REST API: every endpoint, every error code, permissions, throttling, hot switch, fallback."""
from __future__ import annotations

import base64
import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image
from rest_framework.test import APIClient

from classifier.inference import registry
from classifier.models import ModelVersion, Prediction
from tests.support.drawings import ONE, SEVEN, ZERO, canvas, encode, png_bytes
from tests.support.html import foreign_urls, linked_urls

pytestmark = pytest.mark.django_db

PREDICT = "/api/predict/"


def stored_files() -> set[str]:
    found = set()

    def walk(folder):
        dirs, files = default_storage.listdir(folder)
        found.update(f"{folder}/{f}" for f in files)
        for d in dirs:
            walk(f"{folder}/{d}")

    if default_storage.exists("drawings"):
        walk("drawings")
    return found


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


# ------------------------------------------------------------------ predict


def test_predict_json_data_url(api_client):
    response = api_client.post(PREDICT, {"image": encode(canvas(SEVEN))}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"id", "digit", "confidence", "probabilities", "model_version", "preprocessed", "latency_ms",
                         "label_key"}
    assert body["digit"] == 7
    assert len(body["probabilities"]) == 10
    assert sum(body["probabilities"]) == pytest.approx(1, abs=1e-3)
    assert body["confidence"] == pytest.approx(max(body["probabilities"]), abs=1e-5)
    assert body["model_version"]["name"] == "cnn" and body["model_version"]["arch"] == "cnn"
    assert body["latency_ms"] > 0
    with Image.open(io.BytesIO(base64.b64decode(body["preprocessed"]))) as seen:
        assert seen.size == (28, 28)
    prediction = Prediction.objects.get(pk=body["id"])
    assert prediction.digit == 7 and prediction.source == "api"
    assert len(bytes(prediction.input_pixels)) == 784
    assert default_storage.exists(prediction.image.name)
    assert prediction.model_version.status == "active"


@pytest.mark.parametrize("points,digit", [(ONE, 1), (ZERO, 0)])
def test_predict_plain_base64_and_other_digits(api_client, points, digit):
    response = api_client.post(PREDICT, {"image": encode(canvas(points, mode="RGB"), data_url=False)}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["digit"] == digit


def test_predict_multipart_upload(api_client):
    upload = io.BytesIO(png_bytes(canvas(SEVEN)))
    upload.name = "seven.png"
    response = api_client.post(PREDICT, {"image": upload}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["digit"] == 7


def test_predict_with_a_chosen_model_and_unknown_model(api_client):
    logreg = ModelVersion.objects.get(name="logreg")
    response = api_client.post(PREDICT, {"image": encode(canvas()), "model": logreg.pk}, format="json")
    assert response.status_code == 200
    assert response.json()["model_version"]["id"] == logreg.pk
    assert Prediction.objects.get(pk=response.json()["id"]).model_version == logreg
    assert_error(api_client.post(PREDICT, {"image": encode(canvas()), "model": 9999}, format="json"),
                 404, "model_not_found")


def test_compare_answers_with_every_architecture(api_client):
    response = api_client.post(PREDICT, {"image": encode(canvas()), "compare": True}, format="json")
    assert response.status_code == 200
    compare = response.json()["compare"]
    assert {c["model_version"]["arch"] for c in compare} == {"cnn", "lenet5", "mlp", "logreg"}
    assert compare[0]["model_version"]["id"] == response.json()["model_version"]["id"]
    for answer in compare:
        assert len(answer["probabilities"]) == 10
        assert answer["digit"] == max(range(10), key=answer["probabilities"].__getitem__)
    assert Prediction.objects.count() == 1  # one drawing, one record


# ------------------------------------------------------------------ bad input: clear 4xx, nothing stored


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    canvas(SEVEN, mode="RGB").convert("CMYK").save(buffer, "JPEG")
    return buffer.getvalue()


def _png16() -> bytes:
    gray = canvas(SEVEN, mode="L")
    return png_bytes(gray.point(lambda v: v * 256, mode="I").convert("I;16"))


def test_supported_unusual_images_work(api_client):
    for data in (_cmyk_jpeg(), _png16()):
        response = api_client.post(PREDICT, {"image": encode(data, data_url=False)}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["digit"] == 7


def _animated_gif() -> bytes:
    frames = [canvas(SEVEN, mode="RGB").convert("P"), canvas(ONE, mode="RGB").convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _huge_png(side: int) -> bytes:
    return png_bytes(Image.new("1", (side, side), 1), optimize=True)


BAD_IMAGES = {
    "truncated png": (lambda: png_bytes(canvas())[:300], 400, "invalid_image"),
    "not an image": (lambda: b"hello, this is text", 400, "invalid_image"),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><path d="M0 0L9 9"/></svg>',
            400, "invalid_image"),
    "animated gif": (_animated_gif, 400, "invalid_image"),
    "too many pixels": (lambda: _huge_png(3000), 413, "image_too_large"),
    "decompression bomb": (lambda: _huge_png(15000), 413, "image_too_large"),
    "blank transparent canvas": (lambda: png_bytes(Image.new("RGBA", (280, 280), (0, 0, 0, 0))), 422, "empty_drawing"),
    "blank white canvas": (lambda: png_bytes(Image.new("RGB", (280, 280), "white")), 422, "empty_drawing"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_get_clear_errors_and_store_nothing(api_client, name):
    make, status, code = BAD_IMAGES[name]
    before_rows, before_files = Prediction.objects.count(), stored_files()
    response = api_client.post(PREDICT, {"image": encode(make(), data_url=False)}, format="json")
    assert_error(response, status, code)
    assert Prediction.objects.count() == before_rows
    assert stored_files() == before_files


def test_too_many_bytes_is_413(api_client, settings):
    settings.PREDICT_MAX_IMAGE_BYTES = 2000
    assert_error(api_client.post(PREDICT, {"image": encode(png_bytes(canvas()) + b"\0" * 3000)}, format="json"),
                 413, "image_too_large")
    upload = io.BytesIO(png_bytes(canvas()) + b"\0" * 3000)
    upload.name = "big.png"
    assert_error(api_client.post(PREDICT, {"image": upload}, format="multipart"), 413, "image_too_large")


def test_body_over_the_request_limit_is_413(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    assert_error(api_client.post(PREDICT, {"image": encode(png_bytes(canvas()))}, format="json"),
                 413, "image_too_large")


@pytest.mark.parametrize("body", ["%%%not base64%%%", "data:image/png;base64,@@@@", "", "data:image/png,rawtext"])
def test_malformed_base64_is_400(api_client, body):
    assert_error(api_client.post(PREDICT, {"image": body}, format="json"), 400, "invalid_image")


def test_malformed_json_is_400(api_client):
    response = api_client.post(PREDICT, data='{"image": "abc', content_type="application/json")
    assert_error(response, 400, "malformed_request")


def test_missing_or_wrongly_typed_fields_are_400(api_client):
    assert_error(api_client.post(PREDICT, {}, format="json"), 400, "invalid_request")
    assert_error(api_client.post(PREDICT, {"image": 12}, format="json"), 400, "invalid_request")
    assert_error(api_client.post(PREDICT, {"image": encode(canvas()), "model": "cnn"}, format="json"),
                 400, "invalid_request")


def test_wrong_method_and_media_type(api_client):
    assert_error(api_client.get(PREDICT), 405, "method_not_allowed")
    response = api_client.post(PREDICT, data=b"<xml/>", content_type="application/xml")
    assert_error(response, 415, "unsupported_media_type")


# ------------------------------------------------------------------ batch


def test_batch_predicts_and_stores_each(api_client):
    images = [encode(canvas(p)) for p in (SEVEN, ONE, ZERO)]
    response = api_client.post("/api/predict/batch/", {"images": images}, format="json")
    assert response.status_code == 200, response.content
    assert [r["digit"] for r in response.json()["results"]] == [7, 1, 0]
    assert Prediction.objects.count() == 3


def test_batch_is_all_or_nothing(api_client):
    before = stored_files()
    blank = encode(png_bytes(Image.new("RGBA", (280, 280), (0, 0, 0, 0))))
    error = assert_error(api_client.post("/api/predict/batch/", {"images": [encode(canvas()), blank]}, format="json"),
                         422, "empty_drawing")
    assert error["detail"] == {"index": 1}
    assert Prediction.objects.count() == 0 and stored_files() == before


def test_batch_limit(api_client, settings):
    settings.PREDICT_BATCH_MAX = 2
    images = [encode(canvas())] * 3
    assert_error(api_client.post("/api/predict/batch/", {"images": images}, format="json"), 413, "too_many_images")
    assert_error(api_client.post("/api/predict/batch/", {"images": []}, format="json"), 400, "invalid_request")


# ------------------------------------------------------------------ labels and permissions


def _predict(client) -> int:
    response = client.post(PREDICT, {"image": encode(canvas())}, format="json")
    assert response.status_code == 200
    return response.json()["id"]


def test_the_browser_session_that_predicted_may_label(client):
    """A site visitor: session cookie + CSRF token, as the drawing page sends them."""
    from django.middleware.csrf import _get_new_csrf_string

    csrf = _get_new_csrf_string()
    site = APIClient(enforce_csrf_checks=True)
    site.cookies["csrftoken"] = csrf
    pk = _predict(site)
    prediction = Prediction.objects.get(pk=pk)
    assert prediction.source == "site" and prediction.session_key
    # without the CSRF header the session is not enough
    assert site.post(f"/api/predictions/{pk}/label/", {"label": 3}, format="json").status_code == 403
    response = site.post(f"/api/predictions/{pk}/label/", {"label": 3}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200, response.content
    assert response.json() == {"id": pk, "label": 3, "digit": 7, "correct": False}
    prediction.refresh_from_db()
    assert prediction.label == 3 and prediction.labelled_at is not None


def test_others_may_not_label_but_staff_may(api_client, token_client, staff_client, staff_user):
    pk = _predict(token_client)
    assert Prediction.objects.get(pk=pk).user is not None
    assert_error(api_client.post(f"/api/predictions/{pk}/label/", {"label": 7}, format="json"), 401, "not_authenticated")
    other = APIClient()
    other.cookies["csrftoken"] = "x" * 32
    _predict(other)
    assert other.post(f"/api/predictions/{pk}/label/", {"label": 7}, format="json").status_code == 401
    assert token_client.post(f"/api/predictions/{pk}/label/", {"label": 7}, format="json").status_code == 200
    response = staff_client.post(f"/api/predictions/{pk}/label/", {"label": 1}, format="json")
    assert response.status_code == 200
    prediction = Prediction.objects.get(pk=pk)
    assert prediction.label == 1 and prediction.labelled_by == staff_user


@pytest.mark.parametrize("label", [10, -1, "7", True, None, 3.5])
def test_bad_labels_are_400_and_change_nothing(staff_client, label):
    pk = _predict(staff_client)
    assert_error(staff_client.post(f"/api/predictions/{pk}/label/", {"label": label}, format="json"), 400, "invalid_label")
    assert Prediction.objects.get(pk=pk).label is None


def test_label_unknown_prediction_is_404(staff_client):
    assert_error(staff_client.post("/api/predictions/999/label/", {"label": 1}, format="json"), 404, "not_found")


def test_prediction_list_is_staff_only(api_client, token_client, staff_client):
    _predict(api_client)
    assert_error(api_client.get("/api/predictions/"), 401, "not_authenticated")
    assert_error(token_client.get("/api/predictions/"), 403, "permission_denied")
    response = staff_client.get("/api/predictions/")
    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert response.json()["results"][0]["digit"] == 7


def test_prediction_list_filters(staff_client):
    ids = [_predict(staff_client) for _ in range(3)]
    staff_client.post(f"/api/predictions/{ids[0]}/label/", {"label": 7}, format="json")
    assert staff_client.get("/api/predictions/?labelled=true").json()["count"] == 1
    assert staff_client.get("/api/predictions/?labelled=false").json()["count"] == 2
    assert staff_client.get("/api/predictions/?digit=7").json()["count"] == 3
    assert staff_client.get("/api/predictions/?digit=3").json()["count"] == 0
    assert_error(staff_client.get("/api/predictions/?digit=seven"), 400, "invalid_request")


def test_prediction_list_filters_by_version_source_and_label(staff_client):
    ids = [_predict(staff_client) for _ in range(3)]
    Prediction.objects.filter(pk=ids[0]).update(source=Prediction.Source.SITE, label=1)
    version = Prediction.objects.get(pk=ids[0]).model_version_id

    def count(query: str) -> int:
        response = staff_client.get(f"/api/predictions/?{query}")
        assert response.status_code == 200, response.content
        return response.json()["count"]

    assert count(f"model_version={version}") == 3 and count(f"model_version={version + 1000}") == 0
    assert count("source=site") == 1 and count("source=api") == 2
    assert count("label=1") == 1 and count("label=7") == 0
    assert count("labelled=true&source=api") == 0
    assert count("digit=&label=&model_version=&source=&labelled=") == 3  # empty means no filter


@pytest.mark.parametrize("query", [
    "digit=seven", "digit=²", "digit=٣x", "digit=7.5", "digit=10", "digit=-1", "label=²", "label=12",
    "model_version=³", "model_version=abc", "model_version=0", "model_version=99999999999999999999999",
    "source=%00", "source=robot", "source=API", "labelled=maybe", "labelled=%00",
])
def test_prediction_list_refuses_bad_filter_values(staff_client, query):
    """Values that int() refuses though str.isdigit() accepts (superscripts), NULs, out of range: 400, never 500."""
    error = assert_error(staff_client.get(f"/api/predictions/?{query}"), 400, "invalid_request")
    assert error["message"].startswith(query.split("=")[0] + ":") and error["detail"]


def test_bad_token_is_401(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert_error(api_client.get("/api/predictions/"), 401, "authentication_failed")


def test_stats_counts_accuracy_and_confusion(staff_client, api_client):
    ids = [_predict(staff_client) for _ in range(3)]
    staff_client.post(f"/api/predictions/{ids[0]}/label/", {"label": 7}, format="json")
    staff_client.post(f"/api/predictions/{ids[1]}/label/", {"label": 1}, format="json")
    assert_error(api_client.get("/api/stats/"), 401, "not_authenticated")
    stats = staff_client.get("/api/stats/").json()
    assert (stats["total"], stats["labelled"], stats["correct"]) == (3, 2, 1)
    assert stats["accuracy"] == 0.5
    assert stats["confusion_matrix"][7][7] == 1 and stats["confusion_matrix"][1][7] == 1
    (row,) = stats["per_version"]
    assert row["model_version"]["name"] == "cnn" and row["accuracy"] == 0.5


def test_stats_include_quality_per_day_per_n_drawings_and_the_checks(staff_client, token_client, settings):
    from django.utils import timezone

    settings.QUALITY_BUCKET = 2
    settings.QUALITY_WINDOW = 2
    settings.QUALITY_WARNING_MARGIN = 0.02
    cnn = ModelVersion.objects.active().get()
    cnn.metrics = {**(cnn.metrics or {}), "field_accuracy": 0.99, "field_n": 500}
    cnn.save(update_fields=["metrics"])
    ids = [_predict(staff_client) for _ in range(4)]  # each a seven, read as 7
    for pk, label in zip(ids, (7, 1, 7)):  # the fourth stays unlabelled
        staff_client.post(f"/api/predictions/{pk}/label/", {"label": label}, format="json")

    assert_error(token_client.get("/api/stats/"), 403, "permission_denied")  # signed in, not staff
    stats = staff_client.get("/api/stats/").json()

    day = stats["quality"]
    assert day["days"][-1] == timezone.localdate().isoformat() and len(day["bins"]) == 11
    (series,) = day["versions"]
    assert series["id"] == cnn.pk and series["predictions"][-1] == 4
    assert (series["labelled"][-1], series["correct"][-1]) == (3, 2) and series["accuracy"][-1] == pytest.approx(2 / 3)

    per_n = stats["quality_by_drawings"]
    assert (per_n["bucket"], per_n["total"]) == (2, 3)
    (series,) = per_n["versions"]
    assert [(p["first"], p["last"], p["labelled"], p["correct"], p["full"]) for p in series["points"]] == [
        (1, 2, 2, 1, True), (3, 3, 1, 1, False),
    ]

    check = stats["quality_checks"][0]  # the active version first
    assert check["model_version"]["id"] == cnn.pk and (check["window"], check["n"], check["correct"]) == (2, 2, 1)
    # its last two labels (7 right, 1 wrong): 50% against 99% on the field set
    assert check["state"] == "warning" and check["drop"] == pytest.approx(0.49)


def test_stats_schema_documents_the_quality_fields(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    responses = schema["paths"]["/api/stats/"]["get"]["responses"]
    assert set(responses) >= {"200", "401", "403"}
    components = schema["components"]["schemas"]
    stats = components[responses["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert {"quality", "quality_by_drawings", "quality_checks"} <= set(stats["properties"])
    assert {"position", "action", "version"} <= set(components["QualityDrawingsSwitch"]["properties"])
    assert {"first", "last", "accuracy", "mean_confidence", "full"} <= set(components["QualityBucket"]["properties"])
    state = components["QualityCheck"]["properties"]["state"]
    assert "warning" in components[state["allOf"][0]["$ref"].rsplit("/", 1)[-1]]["enum"]


# ------------------------------------------------------------------ registry endpoints


def test_models_list_and_detail(api_client):
    response = api_client.get("/api/models/")
    assert response.status_code == 200
    results = response.json()["results"]
    assert {m["name"] for m in results} == {"cnn", "lenet5", "mlp", "logreg"}
    cnn = next(m for m in results if m["name"] == "cnn")
    assert cnn["status"] == "active" and cnn["test_accuracy"] >= 0.996
    assert cnn["checkpoint_url"] is None  # only staff see download links
    detail = api_client.get(f"/api/models/{cnn['id']}/")
    assert detail.status_code == 200 and detail.json()["sha256"] == cnn["sha256"]
    assert_error(api_client.get("/api/models/999/"), 404, "not_found")


def test_model_status(api_client):
    _predict(api_client)
    status = api_client.get("/api/model-status/").json()
    assert status["active"]["name"] == "cnn"
    assert status["active"]["test_accuracy"] >= 0.996
    assert len(status["active"]["confusion_matrix"]) == 10
    assert status["loaded"] is True and status["healthy"] is True and status["error"] is None
    assert status["counts"] == {"model_versions": 4, "predictions": 1, "labelled": 0}


def test_model_status_counts_are_read_at_most_every_few_seconds(api_client, settings, monkeypatch):
    from classifier import selectors

    settings.MODEL_STATUS_COUNTS_SECONDS = 60
    monkeypatch.setattr(selectors, "_status_counts", selectors._StatusCounts())  # as a fresh process
    _predict(api_client)
    first = api_client.get("/api/model-status/").json()["counts"]
    _predict(api_client)
    again = api_client.get("/api/model-status/").json()["counts"]
    assert first == again == {"model_versions": 4, "predictions": 1, "labelled": 0}  # not counted again
    settings.MODEL_STATUS_COUNTS_SECONDS = 0
    assert api_client.get("/api/model-status/").json()["counts"]["predictions"] == 2


def test_write_endpoints_refuse_get_and_schema_is_served(api_client):
    assert api_client.get("/api/schema/").status_code == 200
    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    # Every asset from the site itself (drf-spectacular's sidecar), none from a CDN. The page embeds a random
    # CSRF token, so the test reads the page's src/href attributes rather than searching its text for "cdn".
    assert foreign_urls(docs.content.decode()) == []
    assert any("swagger-ui" in url for url in linked_urls(docs.content.decode()))


# ------------------------------------------------------------------ throttling


def test_predict_is_throttled(api_client, monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "3/min"})
    cache.clear()
    for _ in range(3):
        assert api_client.post(PREDICT, {"image": encode(canvas())}, format="json").status_code == 200
    response = api_client.post(PREDICT, {"image": encode(canvas())}, format="json")
    error = assert_error(response, 429, "throttled")
    assert error["detail"]["retry_after_s"] > 0
    assert int(response["Retry-After"]) > 0
    assert Prediction.objects.count() == 3


def test_throttle_off_lifts_it(api_client, monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": None})
    cache.clear()
    for _ in range(5):
        assert api_client.post(PREDICT, {"image": encode(canvas())}, format="json").status_code == 200


# ------------------------------------------------------------------ hot switch and fallback


def _activate(name: str) -> ModelVersion:
    from django.db import transaction
    from django.utils import timezone

    with transaction.atomic():
        ModelVersion.objects.active().update(status="candidate")
        version = ModelVersion.objects.get(name=name)
        version.status, version.activated_at = "active", timezone.now()
        version.save()
    return version


def test_active_version_switch_reaches_the_process_within_a_second(api_client, settings, inference_clock):
    settings.MODEL_REFRESH_SECONDS = 0.5
    assert api_client.post(PREDICT, {"image": encode(canvas())}, format="json").json()["model_version"]["name"] == "cnn"
    in_flight = registry.serving()  # a request that started on cnn
    lenet = _activate("lenet5")
    inference_clock.advance(0.25)  # within the refresh interval the process keeps the version it read
    assert api_client.post(PREDICT, {"image": encode(canvas())}, format="json").json()["model_version"]["name"] == "cnn"
    inference_clock.advance(0.25)  # MODEL_REFRESH_SECONDS since it read the active version
    body = api_client.post(PREDICT, {"image": encode(canvas())}, format="json").json()
    assert body["model_version"]["id"] == lenet.pk
    assert in_flight.ref.name == "cnn"  # the in-flight request still finishes on its own version
    import torch

    assert in_flight.probabilities(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_broken_active_checkpoint_falls_back_to_last_good(api_client, settings):
    settings.MODEL_REFRESH_SECONDS = 0
    assert api_client.post(PREDICT, {"image": encode(canvas())}, format="json").status_code == 200
    broken = _activate("lenet5")
    with default_storage.open(broken.checkpoint.name, "rb") as fh:
        original = fh.read()
    try:
        with open(default_storage.path(broken.checkpoint.name), "wb") as fh:
            fh.write(original[:1000])  # a truncated copy: the sha256 no longer matches
        response = api_client.post(PREDICT, {"image": encode(canvas())}, format="json")
        assert response.status_code == 200
        assert response.json()["model_version"]["name"] == "cnn"  # still served by the last good version
        status = api_client.get("/api/model-status/").json()
        assert status["active"]["name"] == "lenet5"
        assert status["serving"]["name"] == "cnn"
        assert status["loaded"] is False and status["healthy"] is False
        assert "integrity" in status["error"]
    finally:
        with open(default_storage.path(broken.checkpoint.name), "wb") as fh:
            fh.write(original)


def test_broken_active_checkpoint_in_a_fresh_process_serves_another_version(api_client, settings):
    settings.MODEL_REFRESH_SECONDS = 0
    _activate("lenet5")  # lenet5 served once, before cnn came back: it is the version to fall back to
    _activate("cnn")
    registry.clear()  # a fresh process: nothing served yet
    active = ModelVersion.objects.get(name="cnn")
    path = default_storage.path(active.checkpoint.name)
    with open(path, "rb") as fh:
        original = fh.read()
    try:
        with open(path, "wb") as fh:
            fh.write(b"garbage")
        response = api_client.post(PREDICT, {"image": encode(canvas())}, format="json")
        assert response.status_code == 200
        assert response.json()["model_version"]["name"] != "cnn"
    finally:
        with open(path, "wb") as fh:
            fh.write(original)


def test_no_active_version_is_503(api_client):
    ModelVersion.objects.update(status="archived")
    assert_error(api_client.post(PREDICT, {"image": encode(canvas())}, format="json"), 503, "model_unavailable")


def test_random_mnist_digit(api_client, mnist_root, settings):
    settings.MNIST_ROOT = mnist_root
    body = api_client.get("/api/mnist/random/").json()
    assert 0 <= body["index"] < 10_000 and 0 <= body["label"] <= 9
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as image:
        assert image.size == (28, 28)
    assert len(body["prediction"]["probabilities"]) == 10


def test_random_mnist_digit_without_data_is_503(api_client, staff_client, settings, tmp_path):
    settings.MNIST_ROOT = tmp_path
    assert assert_error(api_client.get("/api/mnist/random/"), 503, "mnist_unavailable")["detail"] is None
    error = assert_error(staff_client.get("/api/mnist/random/"), 503, "mnist_unavailable")
    assert "fetch_mnist" in error["detail"]  # staff are told how to fix it


# ------------------------------------------------------------------ live prediction: one record per drawing


def _site_client() -> APIClient:
    site = APIClient()
    site.cookies["csrftoken"] = "c" * 32
    return site


def test_a_growing_drawing_is_recorded_once(django_capture_on_commit_callbacks):
    site = _site_client()
    first = site.post(PREDICT, {"image": encode(canvas(ONE))}, format="json").json()["id"]
    first_file = Prediction.objects.get(pk=first).image.name
    with django_capture_on_commit_callbacks(execute=True):  # the file goes once the removal is committed
        second = site.post(PREDICT, {"image": encode(canvas(SEVEN)), "replaces": first}, format="json")
    assert second.status_code == 200
    assert list(Prediction.objects.values_list("id", flat=True)) == [second.json()["id"]]
    assert not default_storage.exists(first_file)


def test_replaces_never_removes_labelled_or_other_clients_predictions(staff_client):
    site, other = _site_client(), _site_client()
    labelled = site.post(PREDICT, {"image": encode(canvas())}, format="json").json()["id"]
    staff_client.post(f"/api/predictions/{labelled}/label/", {"label": 7}, format="json")
    foreign = other.post(PREDICT, {"image": encode(canvas())}, format="json").json()["id"]
    for pk in (labelled, foreign, 99999):
        assert site.post(PREDICT, {"image": encode(canvas()), "replaces": pk}, format="json").status_code == 200
    assert Prediction.objects.filter(pk__in=[labelled, foreign]).count() == 2
    assert Prediction.objects.count() == 5
