"""One error type for services, one JSON error shape for clients.

Services raise ``ApplicationError(code, message, detail, status)``; DRF's exception handler below turns
it, and DRF's own exceptions, into ``{"error": {"code", "message", "detail"}}`` with a 4xx/5xx status.
The project's 404 and 500 handlers answer in the same shape under ``/api/``.
"""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


class ApplicationError(Exception):
    def __init__(self, code: str, message: str, detail: Any = None, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


_DRF_CODES: dict[type[exceptions.APIException], tuple[str, str]] = {
    exceptions.ParseError: ("malformed_request", "The request body could not be parsed."),
    exceptions.NotAuthenticated: ("not_authenticated", "Authentication credentials were not provided."),
    exceptions.AuthenticationFailed: ("authentication_failed", "Incorrect authentication credentials."),
    exceptions.PermissionDenied: ("permission_denied", "You do not have permission to perform this action."),
    exceptions.NotFound: ("not_found", "Not found."),
    exceptions.MethodNotAllowed: ("method_not_allowed", "Method not allowed."),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "Unsupported media type in the request."),
    exceptions.NotAcceptable: ("not_acceptable", "Cannot satisfy the request's Accept header."),
    exceptions.Throttled: ("throttled", "Too many requests."),
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.detail), status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("image_too_large", "The request body is too large.",
                       {"max_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}),
            status=413,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let Django log it and answer 500
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        response.data = error_body("invalid_request", _first_message(detail) or "Invalid input.", detail)
        return response
    code, message = _DRF_CODES.get(type(exc), (getattr(exc, "default_code", "error"), str(exc.detail)))
    detail = exc.detail if not isinstance(exc.detail, str) or str(exc.detail) != message else None
    if isinstance(exc, exceptions.Throttled):
        detail = {"retry_after_s": exc.wait}
        message = f"Too many requests; try again in {int(exc.wait or 1)} s." if exc.wait else message
        response.reason_phrase = "Too Many Requests"
    elif isinstance(exc, exceptions.ParseError):
        detail = str(exc.detail)
    response.data = error_body(code, message, detail)
    return response


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 for a URL no view answers: the error shape under /api/, Django's page elsewhere."""
    if _wants_json(request):
        return JsonResponse(error_body("not_found", "Not found.", {"path": request.path}), status=404)
    return defaults.page_not_found(request, exception)


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The last URL pattern under /api/: a path no endpoint answers gets the error shape, whatever the method,
    even with DEBUG on (Django then answers an unmatched URL with its debug page, not ``handler404``).

    An endpoint's path without its final slash is redirected there for GET and HEAD (as APPEND_SLASH would);
    any other method gets the error shape naming the path meant (a redirect would drop the body, and Django
    itself would answer a 500 with DEBUG on)."""
    path = request.path_info
    if not path.endswith("/") and _is_endpoint(path + "/"):
        if request.method in ("GET", "HEAD"):
            return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
        meant = request.path + "/"
        return JsonResponse(error_body("not_found", f"Not found: API paths end in a slash ({meant}).",
                                       {"path": request.path, "did_you_mean": meant}), status=404)
    return JsonResponse(error_body("not_found", "Not found.", {"path": request.path}), status=404)


def _is_endpoint(path: str) -> bool:
    try:
        return resolve(path).url_name != "api-not-found"
    except Resolver404:
        return False


def server_error(request: HttpRequest) -> HttpResponse:
    """500 (a bug, logged by Django): the error shape under /api/, Django's page elsewhere."""
    if _wants_json(request):
        return JsonResponse(error_body("server_error", "The server failed to answer this request; it has been "
                                                       "logged."), status=500)
    return defaults.server_error(request)


def _first_message(detail: Any) -> str | None:
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            if inner:
                return inner if key == "non_field_errors" else f"{key}: {inner}"
    elif isinstance(detail, list):
        for value in detail:
            inner = _first_message(value)
            if inner:
                return inner
    elif detail:
        return str(detail)
    return None

