"""The API schema's shared parts: the one error body and the error responses views declare.

Every error under ``/api/`` has the shape ``mnistsite.errors`` builds, ``{"error": {"code", "message",
"detail"}}``. A view lists the statuses it can answer with ``errors(...)``, which gives each the same
schema and a description of when it happens:

    @extend_schema(request=..., responses={200: ResultSerializer, **errors(400, 401, 403, 404)})
"""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable, stable: e.g. invalid_request, not_authenticated, "
                                           "not_found, throttled, invalid_image, too_many_runs.")
    message = serializers.CharField(help_text="For people: what went wrong and what to do.")
    detail = serializers.JSONField(allow_null=True, help_text="Anything more (per-field messages for "
                                                              "invalid_request, limits, ids); null when nothing.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


WHEN = {
    400: "Invalid request: a field, a query parameter or the body is malformed or out of range "
         "(`invalid_request`, or a code of the operation such as `invalid_image`, `invalid_label`, "
         "`invalid_config`, `malformed_request`).",
    401: "Not authenticated (`not_authenticated`), or the token sent is wrong (`authentication_failed`). "
         "Send `Authorization: Token <key>` (POST /api/token/).",
    403: "Authenticated but not allowed (`permission_denied`), or a session-authenticated write without its "
         "CSRF token.",
    404: "No such object (`not_found`), or a page number past the last page.",
    409: "The request conflicts with the current state (e.g. the version is not in a state that allows it).",
    413: "Too large: the body, an image's bytes or pixels (`image_too_large`), or too many images "
         "(`too_many_images`).",
    415: "Unsupported media type of the request body (`unsupported_media_type`).",
    422: "Well formed, but it cannot be processed (e.g. an image without a drawing: `empty_drawing`).",
    429: "Throttled (`throttled`): `detail.retry_after_s` says when to try again.",
    503: "A backing service or data set is unavailable right now; try again later.",
}


def errors(*statuses: int, **descriptions: str) -> dict[int, OpenApiResponse]:
    """``{status: error response}`` for ``@extend_schema(responses=...)``. ``descriptions`` replaces the
    generic text of a status for this operation: ``errors(404, 409, s409="Already active.")``."""
    return {status: OpenApiResponse(ErrorSerializer, description=descriptions.get(f"s{status}", WHEN[status]))
            for status in statuses}


def blank_query_values_allowed(result, generator, request, public):
    """Postprocessing hook: a list's filters (django-filter) and its ``page`` take ``?name=`` as if the
    parameter were absent, so the schema says ``allowEmptyValue`` for them."""
    for path, _regex, method, callback in generator.endpoints or []:
        view = getattr(callback, "cls", None)
        names = set(getattr(getattr(view, "filterset_class", None), "base_filters", None) or {})
        if getattr(view, "pagination_class", None) is not None and hasattr(view, "paginate_queryset"):
            names.add("page")
        operation = result["paths"].get(path, {}).get(method.lower(), {})
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "query" and parameter.get("name") in names:
                parameter["allowEmptyValue"] = True
    return result
