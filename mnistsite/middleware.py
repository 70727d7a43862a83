"""Middleware of the project."""
from __future__ import annotations

import re
import uuid
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from mnistsite import clients, health, logs


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise's static files, without forcing every request through a thread under ASGI.

    WhiteNoise's middleware is synchronous only, so under an ASGI server Django would hop each request
    into a thread and back for it. Here an async server gets an async middleware: static files are
    found and served as WhiteNoise does (the file work in a thread), everything else goes on at once.
    Under WSGI it is WhiteNoise's middleware as it is.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, **kwargs: Any) -> None:
        super().__init__(get_response, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Every request gets an id: the ``X-Request-ID`` a trusted proxy (``TRUSTED_PROXIES``) sent, else a new
    one. It is returned in the ``X-Request-ID`` response header and carried by every log line written while
    the request runs (``mnistsite.logs``)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        if not (given and _REQUEST_ID.match(given) and clients.is_trusted_proxy(request.META.get("REMOTE_ADDR"))):
            given = uuid.uuid4().hex
        request.request_id = given
        # Set, not bound to this call: Django logs a 4xx/5xx response (django.request) after the middleware
        # returned; the id is cleared when the response is closed (request_finished, mnistsite.apps).
        logs.request_id.set(given)
        response = self.get_response(request)
        response["X-Request-ID"] = given
        return response


class OperationsMiddleware:
    """``/healthz``, ``/readyz`` and ``/metrics`` (``mnistsite.health``), answered before host validation,
    sessions and CSRF: a load balancer probes by address, and a probe must not make a session."""

    ROUTES = {"/healthz": health.healthz, "/readyz": health.readyz, "/metrics": health.metrics_view}

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        view = self.ROUTES.get(request.path_info.rstrip("/") or "/")
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse({"error": {"code": "method_not_allowed", "message": "Only GET is allowed here.",
                                               "detail": None}}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        response = view(request)
        response["Cache-Control"] = "no-store"
        return response
