"""The HTTP side of the one-process run (``make run``): ``mnistsite.handlers.ThreadPoolASGIHandler``.

Every request runs on the handler's own threads, in one call from middleware to view. It must answer
exactly as Django's handlers do (the test client here): the same replies to good and bad drawings,
the same throttling, CSRF and error shapes, the same stored rows; files (streamed by Django) arrive
whole; and each thread keeps its database connection from one request to the next.
"""
from __future__ import annotations

import asyncio
import json
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test import Client
from PIL import Image
from rest_framework.throttling import ScopedRateThrottle

from classifier.models import Prediction
from mnistsite.handlers import ThreadPoolASGIHandler, http_threads
from tests.support.drawings import SEVEN, canvas, encode, png_bytes
from training.events import server_loop

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PREDICT = "/api/predict/"
REPO = Path(__file__).resolve().parent.parent


@contextmanager
def pool(threads: int):
    handler = ThreadPoolASGIHandler(threads=threads)
    try:
        yield handler
    finally:
        for _ in range(threads):  # the pool threads' own database connections
            handler.executor.submit(connections.close_all).result()
        handler.executor.shutdown(wait=True)


@pytest.fixture
def handler(shipped_versions):
    with pool(2) as handler:
        yield handler


class Reply:
    def __init__(self, messages: list[dict]) -> None:
        start = messages[0]
        assert start["type"] == "http.response.start"
        assert all(m["type"] == "http.response.body" for m in messages[1:])
        assert not messages[-1].get("more_body", False)
        self.status_code = start["status"]
        self.headers = [(k.decode().lower(), v.decode()) for k, v in start["headers"]]
        self.content = b"".join(m.get("body", b"") for m in messages[1:])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def json(self):
        return json.loads(self.content)


def asgi(handler, method: str, path: str, body: bytes = b"", *, content_type: str = "application/json",
         headers: dict[str, str] | None = None, query: str = "") -> Reply:
    """One request through the ASGI application, as an ASGI server sends it."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # no disconnect while the answer is made

    async def send(message):
        sent.append(message)

    asyncio.run(handler(scope, receive, send))
    return Reply(sent)


def predict_body(image) -> bytes:
    return json.dumps({"image": image}).encode()


def test_a_drawing_gets_the_same_answer_and_is_stored_the_same(handler):
    body = predict_body(encode(canvas(SEVEN)))
    reply = asgi(handler, "POST", PREDICT, body)
    expected = Client().post(PREDICT, body, content_type="application/json")
    assert reply.status_code == expected.status_code == 200, reply.content
    got, want = reply.json(), expected.json()
    assert set(got) == set(want)
    assert got["digit"] == want["digit"] == 7
    assert got["probabilities"] == want["probabilities"]
    assert got["model_version"] == want["model_version"]
    assert got["preprocessed"] == want["preprocessed"]
    assert reply.header("content-type") == expected["Content-Type"]
    first, second = Prediction.objects.order_by("id")
    assert first.pk == got["id"]
    for field in ("digit", "probabilities", "confidence", "source", "model_version_id", "session_key"):
        assert getattr(first, field) == getattr(second, field), field
    assert bytes(first.input_pixels) == bytes(second.input_pixels)
    assert first.source == "api" and first.image.storage.exists(first.image.name)


def test_a_multipart_upload_is_answered(handler):
    boundary = "----drawing"
    data = png_bytes(canvas(SEVEN))
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"seven.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    reply = asgi(handler, "POST", PREDICT, body, content_type=f"multipart/form-data; boundary={boundary}")
    assert reply.status_code == 200, reply.content
    assert reply.json()["digit"] == 7


BAD = {
    "not an image": (predict_body(encode(b"hello, this is text", data_url=False)), "application/json"),
    "empty canvas": (predict_body(encode(png_bytes(Image.new("RGBA", (280, 280), (0, 0, 0, 0))))), "application/json"),
    "malformed json": (b'{"image": "abc', "application/json"),
    "no image field": (b"{}", "application/json"),
    "wrong media type": (b"<xml/>", "application/xml"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_gets_the_same_error_and_stores_nothing(handler, name):
    body, content_type = BAD[name]
    reply = asgi(handler, "POST", PREDICT, body, content_type=content_type)
    expected = Client().post(PREDICT, body, content_type=content_type)
    assert 400 <= reply.status_code < 500
    assert reply.status_code == expected.status_code
    assert reply.json() == expected.json()
    assert set(reply.json()["error"]) == {"code", "message", "detail"}
    assert Prediction.objects.count() == 0


def test_a_body_over_the_limit_and_unknown_paths_and_methods_get_the_error_shape(handler, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    reply = asgi(handler, "POST", PREDICT, predict_body(encode(canvas(SEVEN))))
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "image_too_large"
    reply = asgi(handler, "GET", PREDICT)
    assert reply.status_code == 405 and reply.json()["error"]["code"] == "method_not_allowed"
    reply = asgi(handler, "GET", "/api/no-such-thing/")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    assert Prediction.objects.count() == 0


def test_predictions_are_throttled_as_under_wsgi(handler, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "3/min"})
    cache.clear()
    body = predict_body(encode(canvas(SEVEN)))
    assert [asgi(handler, "POST", PREDICT, body).status_code for _ in range(3)] == [200, 200, 200]
    reply = asgi(handler, "POST", PREDICT, body)
    assert reply.status_code == 429 and reply.json()["error"]["code"] == "throttled"
    assert int(reply.header("retry-after")) > 0
    assert Prediction.objects.count() == 3


def test_a_signed_in_browser_needs_the_csrf_token(handler, user):
    browser = Client()
    browser.force_login(user)
    session, csrf = browser.cookies[settings.SESSION_COOKIE_NAME].value, "c" * 32
    cookie = f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={csrf}"
    body = predict_body(encode(canvas(SEVEN)))
    refused = asgi(handler, "POST", PREDICT, body, headers={"cookie": cookie})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert Prediction.objects.count() == 0
    reply = asgi(handler, "POST", PREDICT, body, headers={"cookie": cookie, "x-csrftoken": csrf})
    assert reply.status_code == 200, reply.content
    prediction = Prediction.objects.get(pk=reply.json()["id"])
    assert prediction.user == user and prediction.source == "site" and prediction.session_key == session


def test_streamed_files_arrive_whole(handler, django_user_model):
    from django.test import Client

    script = (REPO / "static" / "site" / "api.js").read_bytes()
    reply = asgi(handler, "GET", "/static/site/api.js")
    assert reply.status_code == 200 and reply.content == script
    assert int(reply.header("content-length")) == len(script)
    drawing = asgi(handler, "POST", PREDICT, predict_body(encode(canvas(SEVEN)))).json()
    stored = Prediction.objects.get(pk=drawing["id"]).image
    browser = Client()
    browser.force_login(django_user_model.objects.create_user("curator", is_staff=True))
    cookie = {"cookie": f"sessionid={browser.cookies['sessionid'].value}"}
    reply = asgi(handler, "GET", stored.url, headers=cookie)  # a drawing, to staff (a FileResponse)
    assert reply.status_code == 200 and reply.content == stored.read()


def test_the_thread_keeps_its_database_connection(shipped_versions):
    """Django's ASGIHandler runs each request in a new thread, which opens a new connection every time."""
    body = predict_body(encode(canvas(SEVEN)))

    def connection_of_this_thread():
        return threading.current_thread().name, connections["default"].connection

    with pool(1) as handler:
        seen = []
        for _ in range(4):
            assert asgi(handler, "POST", PREDICT, body).status_code == 200
            seen.append(handler.executor.submit(connection_of_this_thread).result())
    assert {name for name, _ in seen} == {"http_0"}
    assert seen[0][1] is not None and all(conn is seen[0][1] for _, conn in seen)


def test_a_client_gone_before_its_body_arrived_gets_nothing(handler):
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": PREDICT, "headers": [], "query_string": b""}
    asyncio.run(handler(scope, receive, send))
    assert sent == [] and Prediction.objects.count() == 0


def test_a_request_reaches_the_servers_event_loop(shipped_versions):
    """Starting a run from a request hands the in-memory channel layer the server's loop: async_to_sync
    in the request runs on the loop the sockets are on (as under Django's own handler)."""
    seen = {}

    class Recording(ThreadPoolASGIHandler):
        def respond(self, scope, body_file):
            seen["from request"] = server_loop()
            return super().respond(scope, body_file)

    async def call():
        seen["server"] = asyncio.get_running_loop()
        sent = []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            sent.append(message)

        await handler({"type": "http", "method": "GET", "path": "/api/model-status/", "headers": [(b"host", b"127.0.0.1")],
                       "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)},
                      receive, send)
        return sent

    with pool(1) as handler:
        handler.__class__ = Recording
        sent = asyncio.run(call())
    assert sent[0]["status"] == 200
    assert seen["from request"] is seen["server"]


def test_http_threads_default_and_validation(monkeypatch):
    """Two threads where there are two cores or more, one on a single core; HTTP_THREADS wins; nonsense is
    refused at start with the setting's name."""
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert http_threads({}) == 2
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert http_threads({}) == 1
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert http_threads({"HTTP_THREADS": ""}) == 1
    assert http_threads({"HTTP_THREADS": "3"}) == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ImproperlyConfigured, match="HTTP_THREADS"):
            http_threads({"HTTP_THREADS": bad})
