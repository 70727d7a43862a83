"""The review queue: what is in it and in which order, the second opinions of the active version and
the newest candidate, the staff-only JSON API (keys 0-9 and x; s is the client's skip) and the page."""
from __future__ import annotations

import pytest
from django.middleware.csrf import _get_new_csrf_string
from rest_framework.test import APIClient

from classifier.labels import label_record
from classifier.models import Label, ModelVersion, Prediction
from classifier.review import review_next, review_queryset
from tests.support.registry import assert_error

pytestmark = pytest.mark.django_db


def make(pixels: bytes = bytes(784), *, digit: int = 7, confidence: float = 0.9) -> Prediction:
    probabilities = [round((1 - confidence) / 9, 6)] * 10
    probabilities[digit] = confidence
    return Prediction.objects.create(
        image="drawings/test.png", input_pixels=pixels, probabilities=probabilities, digit=digit,
        confidence=confidence, model_version=ModelVersion.objects.active().first(), latency_ms=1.0,
    )


def visitor(prediction: Prediction, value) -> None:
    label_record(prediction=prediction, value=value, by=None, via=Label.Via.LABEL_KEY, giver=f"key:{prediction.pk}")


@pytest.fixture
def queue(staff_user):
    """Drawings in every state; the queue holds disputed, visitor-labelled, unsure and sure, in that order."""
    rows = {
        "sure": make(confidence=0.99),
        "unsure": make(confidence=0.40),
        "disputed": make(confidence=0.95),
        "confirmed": make(confidence=0.30),
        "staff": make(confidence=0.20),
        "not_a_digit": make(confidence=0.10),
    }
    visitor(rows["disputed"], 1)  # the visitor says it is a 1; the model said 7
    visitor(rows["confirmed"], 7)  # the visitor agrees with the model
    label_record(prediction=rows["staff"], value=7, by=staff_user, via=Label.Via.REVIEW)
    label_record(prediction=rows["not_a_digit"], value="x", by=staff_user, via=Label.Via.REVIEW)
    return rows


def test_the_queue_holds_what_wants_a_trusted_label_most_valuable_first(queue):
    order = [queue["disputed"].pk, queue["confirmed"].pk, queue["unsure"].pk, queue["sure"].pk]
    assert list(review_queryset().values_list("pk", flat=True)) == order
    body = review_next(count=10)
    assert [item["id"] for item in body["items"]] == order
    assert body["counts"] == {"left": 4, "disputed": 1, "suggested": 2, "unsure": 2, "reviewed": 2}
    first = body["items"][0]
    assert first["reasons"] == ["visitor_disagrees"]
    assert first["visitor_labels"] == [{"label": 1, "via": "label_key", "client": "",
                                        "at": first["visitor_labels"][0]["at"]}]
    assert (first["suggestion"], first["trust"]) == (1, "visitor")
    assert [t["digit"] for t in first["top3"]][0] == 7 and len(first["top3"]) == 3
    assert first["input"].startswith("data:image/png;base64,")
    assert body["items"][1]["suggestion"] == 7  # a visitor agreed with the model: it waits for staff too
    assert body["items"][2]["reasons"] == ["low_confidence"] and body["items"][2]["suggestion"] is None


def test_pending_visitor_labels_and_visitor_not_a_digit_stay_in_the_queue():
    agreed, waiting = make(confidence=0.9), make(confidence=0.8)
    visitor(agreed, 7)  # agrees with the model, but is not trusted until staff label it
    label_record(prediction=waiting, value="x", by=None, via=Label.Via.SESSION, giver="session:a")
    assert (agreed.label, agreed.label_trust) == (7, "visitor")
    assert waiting.not_a_digit and waiting.label_trust == "visitor"
    assert list(review_queryset().values_list("pk", flat=True)) == [waiting.pk, agreed.pk]


def test_skipped_drawings_are_left_out(queue):
    body = review_next(skip=[queue["disputed"].pk, queue["confirmed"].pk], count=1)
    assert [item["id"] for item in body["items"]] == [queue["unsure"].pk]


@pytest.fixture
def zero_candidate(zero_logreg_checkpoint, mnist_settings):
    """A fresh candidate that answers 0 to everything."""
    from classifier.lifecycle import model_version_upload

    return model_version_upload(data=zero_logreg_checkpoint, name="zero")


def test_drawings_the_active_version_and_the_candidate_disagree_on_come_first(zero_candidate, mnist_test):
    zero = next(i for i in range(100) if int(mnist_test.labels[i]) == 0)
    seven = next(i for i in range(100) if int(mnist_test.labels[i]) == 7)
    agree = make(mnist_test.images[zero].numpy().tobytes(), digit=0, confidence=0.50)
    disagree = make(mnist_test.images[seven].numpy().tobytes(), digit=7, confidence=0.95)
    assert list(review_queryset().values_list("pk", flat=True)) == [agree.pk, disagree.pk]  # by what is stored

    body = review_next(count=2)
    assert [item["id"] for item in body["items"]] == [disagree.pk, agree.pk]
    assert body["models"]["candidate"]["id"] == zero_candidate.pk
    assert body["models"]["active"]["id"] == ModelVersion.objects.active().get().pk
    first, second = body["items"]
    assert first["reasons"] == ["models_disagree"]
    assert first["opinions"]["active"]["digit"] == 7 and first["opinions"]["candidate"]["digit"] == 0
    assert second["opinions"]["active"]["digit"] == second["opinions"]["candidate"]["digit"] == 0

    assert [item["id"] for item in review_next(count=2, window=0)["items"]] == [agree.pk, disagree.pk]


# ------------------------------------------------------------------ the API


def test_staff_label_with_one_key_each(staff_client, staff_user, queue):
    response = staff_client.post(f"/api/review/{queue['unsure'].pk}/label/", {"label": 4}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["label"], body["not_a_digit"]) == (queue["unsure"].pk, 4, False)
    assert body["counts"]["left"] == 3
    label = Label.objects.get(prediction=queue["unsure"])
    assert (label.digit, label.given_by, label.by_staff, label.trusted, label.via) == (4, staff_user, True, True,
                                                                                       "review")

    response = staff_client.post(f"/api/review/{queue['sure'].pk}/label/", {"label": "x"}, format="json")
    assert response.json()["not_a_digit"] is True and response.json()["label"] is None
    response = staff_client.post(f"/api/review/{queue['disputed'].pk}/label/", {"label": 7}, format="json")
    assert response.json()["counts"] == {"left": 1, "disputed": 0, "suggested": 1, "unsure": 1, "reviewed": 5}
    assert Prediction.objects.get(pk=queue["disputed"].pk).label == 7  # staff overrode the visitor
    response = staff_client.post(f"/api/review/{queue['confirmed'].pk}/label/", {"label": 7}, format="json")
    assert response.json()["counts"] == {"left": 0, "disputed": 0, "suggested": 0, "unsure": 0, "reviewed": 6}
    assert Prediction.objects.get(pk=queue["confirmed"].pk).label_trust == "trusted"  # staff confirmed it
    assert staff_client.get("/api/review/").json()["items"] == []


@pytest.mark.parametrize("label", [10, -1, "7", "s", "y", True, None, 2.5, [1]])
def test_a_bad_key_is_400_and_changes_nothing(staff_client, queue, label):
    pk = queue["unsure"].pk
    assert_error(staff_client.post(f"/api/review/{pk}/label/", {"label": label}, format="json"), 400, "invalid_label")
    assert not Label.objects.filter(prediction_id=pk).exists()


def test_malformed_requests_are_400(staff_client, queue):
    pk = queue["unsure"].pk
    assert_error(staff_client.post(f"/api/review/{pk}/label/", {}, format="json"), 400, "invalid_request")
    assert_error(staff_client.post(f"/api/review/{pk}/label/", {"label": 1, "extra": 2}, format="json"),
                 400, "invalid_request")
    assert_error(staff_client.post("/api/review/999999/label/", {"label": 1}, format="json"), 404, "not_found")
    for query in ("skip=a", "skip=1,,x", "count=0", "count=11", "count=two", "skip=-3", "what=1"):
        assert_error(staff_client.get(f"/api/review/?{query}"), 400, "invalid_request")
    assert staff_client.get("/api/review/?skip=&count=1").status_code == 200


def test_only_staff_may_use_the_queue(api_client, token_client, queue):
    pk = queue["unsure"].pk
    assert_error(api_client.get("/api/review/"), 401, "not_authenticated")
    assert_error(api_client.post(f"/api/review/{pk}/label/", {"label": 1}, format="json"), 401, "not_authenticated")
    assert_error(token_client.get("/api/review/"), 403, "permission_denied")
    assert_error(token_client.post(f"/api/review/{pk}/label/", {"label": 1}, format="json"), 403, "permission_denied")
    assert not Label.objects.filter(prediction_id=pk).exists()


def test_a_staff_session_needs_the_csrf_token(staff_user, queue):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    csrf = _get_new_csrf_string()
    client.cookies["csrftoken"] = csrf
    pk = queue["unsure"].pk
    assert_error(client.post(f"/api/review/{pk}/label/", {"label": 1}, format="json"), 403, "permission_denied")
    response = client.post(f"/api/review/{pk}/label/", {"label": 1}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200


# ------------------------------------------------------------------ the page


def test_the_page_is_for_staff_and_linked_for_them(client, staff_user, user, queue):
    assert client.get("/review/").status_code == 302  # to the login page
    client.force_login(user)
    assert client.get("/review/").status_code == 403
    assert 'href="/review/"' not in client.get("/").content.decode()
    client.force_login(staff_user)
    response = client.get("/review/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="count-left">4<' in html and "classifier/review.js" in html
    assert 'data-testid="count-suggested">2<' in html and 'data-testid="train-trust">trusted<' in html
    assert 'href="/review/"' in client.get("/").content.decode()
    assert "csrftoken" in response.cookies
