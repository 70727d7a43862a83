"""Django's HTTP handling for an ASGI server, in one hop to a dedicated thread pool.

Django's own ``ASGIHandler`` runs the project's synchronous middleware and DRF views under ASGI by
handing each piece to a thread and back: every built-in middleware's ``process_request`` and
``process_response``, then the view, each ``sync_to_async`` — about fifteen hand-offs a request —
and every request in a thread of its own (``ThreadSensitiveContext``), so it also opens a new
database connection every time. Under a single-process server that costs more than the
prediction.

``ThreadPoolASGIHandler`` reads the request body on the event loop, then runs the whole request —
``request_started``, the middleware chain, the view, ``response.close()`` — synchronously in one
call on a small pool of long-lived threads, exactly as a WSGI server runs it (same middleware, same
views, each thread keeping its database connection), and sends the response from the event loop.
WebSockets stay with Channels on the same loop.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from tempfile import SpooledTemporaryFile
from typing import Any

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import ImproperlyConfigured, RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpResponse, HttpResponseBase
from django.urls import set_script_prefix


def http_threads(environ: Mapping[str, str] = os.environ) -> int:
    """How many threads run HTTP requests in an ASGI process: ``HTTP_THREADS``, else two where the machine
    has two cores or more, else one. A request's work is partly outside the GIL (decoding the PNG, the
    network's forward pass, the database and the file), so a second thread lets some of it overlap on a
    second core: measured on 2 cores (``bench/http_threads.py``, two runs), concurrency 16 got a median
    1.04-1.07x the throughput of one thread, concurrency 1 the same latency."""
    value = environ.get("HTTP_THREADS", "").strip()
    if not value:
        return min(2, os.cpu_count() or 1)
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ImproperlyConfigured(f"HTTP_THREADS must be a whole number of at least 1, not {value!r}")
    return threads


class ThreadPoolASGIHandler(ASGIHandler):
    """An ASGI application for HTTP: each request in one call on one of ``threads`` threads."""

    def __init__(self, *, threads: int = 1) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)  # the chain as under WSGI: no per-middleware hand-offs
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        # Through asgiref, not a bare executor call: code in the request that uses async_to_sync (the
        # training events find the server's loop that way, for the in-memory channel layer) reaches
        # this event loop, as under Django's own handler.
        respond = sync_to_async(self.respond, thread_sensitive=False, executor=self.executor)
        response = await respond(scope, body_file)
        try:
            await self.send_response(response, send)
        except asyncio.CancelledError:
            pass  # the client went away while the answer was being sent (as Django's handler does)

    def respond(self, scope: dict[str, Any], body_file: SpooledTemporaryFile) -> HttpResponseBase:
        """On a pool thread: the request from start to ``close()``, as a WSGI server would run it.

        A streaming response is read to the end here (Django's ``ASGIHandler`` reads a synchronous
        one whole too), so the response that goes back to the event loop holds only bytes.
        """
        try:
            set_script_prefix(get_script_prefix(scope))
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, response = self.create_request(scope, body_file)
            if request is not None:
                response = self.get_response(request)
        finally:
            body_file.close()
        response._handler_class = self.__class__
        try:
            if not response.streaming:
                return response
            answer = HttpResponse(b"".join(response.streaming_content), status=response.status_code,
                                  reason=response.reason_phrase)
            answer.headers, answer.cookies = response.headers, response.cookies
            return answer
        finally:
            response.close()  # request_finished: this thread's database connections checked, as under WSGI
