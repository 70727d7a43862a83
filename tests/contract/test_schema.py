"""The schema's promises that the contract test relies on, checked in-process (fast, no servers): what
the schemathesis run (test_schema_contract.py) would find if one of them regressed."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema():
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def component(schema, name):
    return schema["components"]["schemas"][name]


def body_schema(schema, path, method="post", media="application/json"):
    content = schema["paths"][path][method]["requestBody"]["content"][media]["schema"]
    return component(schema, content["$ref"].rsplit("/", 1)[-1])


def test_every_error_status_has_the_error_body(schema):
    statuses = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    statuses.add(int(status))
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/Error"), (method, path, status)
    assert {400, 401, 403, 404, 409, 413, 429} <= statuses
    error = component(schema, "ErrorDetail")
    assert set(error["required"]) == {"code", "message", "detail"}


def test_protected_operations_document_401_and_403(schema):
    for path in ("/api/predictions/", "/api/stats/", "/api/runs/", "/api/policy/", "/api/review/"):
        assert {"401", "403"} <= set(schema["paths"][path]["get"]["responses"]), path
    # Lists answer 404 for a page past the last.
    for path in ("/api/models/", "/api/predictions/", "/api/runs/", "/api/models/events/"):
        assert "404" in schema["paths"][path]["get"]["responses"], path


def test_request_bodies_are_closed_where_unknown_fields_are_refused(schema):
    for name in ("Reason", "RetrainRequest", "ReviewLabelRequest", "TokenRequest", "PolicyUpdate"):
        assert component(schema, name)["additionalProperties"] is False, name
    retrain = component(schema, "RetrainRequest")
    assert {"required": ["arch"], "properties": {"arch": {"type": "string"}}} in retrain["anyOf"]


def test_inputs_carry_their_real_constraints(schema, settings):
    image = body_schema(schema, "/api/predict/")["properties"]["image"]
    assert image == {"type": "string", "minLength": 1, "description": image["description"]}
    images = body_schema(schema, "/api/predict/batch/")["properties"]["images"]
    assert (images["minItems"], images["maxItems"]) == (1, settings.PREDICT_BATCH_MAX)
    label = body_schema(schema, "/api/predictions/{id}/label/")["properties"]["label"]
    assert (label["type"], label["minimum"], label["maximum"]) == ("integer", 0, 9)
    review = body_schema(schema, "/api/review/{id}/label/")["properties"]["label"]
    assert {"type": "string", "enum": ["x"]} in review["oneOf"]


def test_batch_limit_in_the_schema_follows_the_setting(settings):
    settings.PREDICT_BATCH_MAX = 5
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    assert body_schema(schema, "/api/predict/batch/")["properties"]["images"]["maxItems"] == 5


def test_nullable_fields_say_so(schema):
    assert component(schema, "ModelVersion")["properties"]["parent"]["nullable"] is True


@pytest.mark.parametrize("body", [{"label": 3, "label_key": 12345}, {"label": 3, "label_key": ["k"]}])
def test_label_key_must_be_a_string(body):
    from classifier.serializers import LabelRequestSerializer

    serializer = LabelRequestSerializer(data=body)
    assert not serializer.is_valid()
    assert "label_key" in serializer.errors


@pytest.mark.parametrize("skip, ids", [("", []), ("1", [1]), ("3,10,999999999999999999", [3, 10, 999999999999999999])])
def test_review_skip_accepts_what_its_pattern_says(skip, ids):
    from classifier.serializers import ReviewQueryParamsSerializer

    serializer = ReviewQueryParamsSerializer(data={"skip": skip})
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["skip"] == ids


@pytest.mark.parametrize("skip", ["0", "01", "1,,2", "1,", " 1", "1\n", "-3", "+3", "1_0", "a", "1234567890123456789",
                                  ",".join(["1"] * 501)])
def test_review_skip_refuses_what_its_pattern_refuses(skip):
    from classifier.serializers import ReviewQueryParamsSerializer

    assert not ReviewQueryParamsSerializer(data={"skip": skip}).is_valid()


@pytest.mark.parametrize("body, wrong", [({"reason": 0}, "reason"), ({"reason": ["x"]}, "reason"),
                                         ({"reason": "ok", "force": 0}, "force"),
                                         ({"reason": "ok", "force": "true"}, "force")])
def test_json_values_must_have_the_fields_json_type(body, wrong):
    """DRF alone would take 0 for "0" and "true" for true; the schema says string and boolean."""
    from classifier.serializers import ActivateRequestSerializer

    serializer = ActivateRequestSerializer(data=body)
    assert not serializer.is_valid()
    assert set(serializer.errors) == {wrong}


def test_run_request_numbers_must_be_json_numbers():
    from training.serializers import RetrainRequestSerializer

    assert not RetrainRequestSerializer(data={"arch": "mlp", "epochs": "1"}).is_valid()
    assert not RetrainRequestSerializer(data={"arch": "mlp", "epochs": True}).is_valid()
    assert not RetrainRequestSerializer(data={"arch": "mlp", "lr": "0.1"}).is_valid()
    assert RetrainRequestSerializer(data={"arch": "mlp", "epochs": 1, "lr": 1, "augment": None}).is_valid()


def test_list_filters_and_page_say_an_empty_value_is_allowed(schema):
    def query(path):
        return {p["name"]: p for p in schema["paths"][path]["get"]["parameters"] if p["in"] == "query"}

    predictions = query("/api/predictions/")
    for name in ("digit", "label", "model_version", "source", "labelled", "page"):
        assert predictions[name]["allowEmptyValue"] is True, name
    assert query("/api/runs/")["status"]["allowEmptyValue"] is True
    assert "allowEmptyValue" not in query("/api/review/")["count"]
