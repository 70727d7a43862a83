"""Logs operators can search: JSON lines with the request id the response returned, run ids in a run's lines,
X-Request-ID believed only from a trusted proxy, Sentry untouched without a DSN."""
from __future__ import annotations

import gzip
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sentry_sdk

from mnistsite import logs
from mnistsite.apps import init_sentry
from tests.production.conftest import deployment, redis_server  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent


def test_a_request_under_log_format_json_logs_its_request_id(deployment):  # noqa: F811
    with deployment.serve("http", "--workers", "1", LOG_FORMAT="json") as base:
        try:
            urllib.request.urlopen(f"{base}/api/no-such-endpoint/", timeout=30)
            pytest.fail("expected a 404")
        except urllib.error.HTTPError as error:
            assert error.code == 404
            request_id = error.headers["X-Request-ID"]
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as response:
            other_id = response.headers["X-Request-ID"]
        with urllib.request.urlopen(f"{base}/readyz", timeout=60) as response:  # loads the model in this request
            ready_id = response.headers["X-Request-ID"]
    assert request_id and other_id and request_id != other_id
    lines = [line for path in deployment.logs for line in path.read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    mine = [entry for entry in entries if entry["request_id"] == request_id]
    assert mine, lines
    assert any("no-such-endpoint" in entry["message"] and entry["level"] == "WARNING" for entry in mine), mine
    assert {"time", "level", "logger", "message", "request_id", "run_id", "version_id"} <= set(mine[0])
    [loaded] = [entry for entry in entries if entry["message"].startswith("loaded model version")]
    assert loaded["request_id"] == ready_id and isinstance(loaded["version_id"], int), loaded


@pytest.mark.django_db
def test_request_id_is_believed_only_from_a_trusted_proxy(client, settings):
    settings.TRUSTED_PROXIES = []
    response = client.get("/healthz", HTTP_X_REQUEST_ID="chosen-by-the-client")
    assert response["X-Request-ID"] != "chosen-by-the-client" and len(response["X-Request-ID"]) == 32

    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]  # the test client's REMOTE_ADDR
    assert client.get("/healthz", HTTP_X_REQUEST_ID="from-nginx-42")["X-Request-ID"] == "from-nginx-42"
    # even from the proxy, something that is not an id is replaced
    assert client.get("/healthz", HTTP_X_REQUEST_ID="a b\nc")["X-Request-ID"] != "a b\nc"


def test_json_lines_carry_run_and_version_ids():
    record = logging.LogRecord("training.execution", logging.INFO, __file__, 1, "epoch %d done", (3,), None)
    with logs.bind(run_id=12, version_id=5):
        logs.ContextFilter().filter(record)
        line = logs.JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "epoch 3 done" and entry["run_id"] == 12 and entry["version_id"] == 5
    assert entry["request_id"] is None
    assert logs.run_id.get() is None  # the block's ids end with it


def test_sentry_is_not_initialised_without_a_dsn(settings):
    settings.SENTRY_DSN = ""
    assert init_sentry() is False
    assert not sentry_sdk.is_initialized()


def test_with_a_dsn_errors_are_sent_to_sentry(tmp_path):
    """A real process with SENTRY_DSN pointing at a local receiver: an error log line arrives as an event."""
    received: list[tuple[str, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append((self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG", "TMPDIR"}}
        env.update({"SENTRY_DSN": f"http://publickey@127.0.0.1:{server.server_address[1]}/42",
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "DJANGO_SETTINGS_MODULE": "mnistsite.settings"})
        code = ("import logging, sentry_sdk\n"
                "logging.getLogger('mnistsite.test').error('something broke for the operator to see')\n"
                "sentry_sdk.flush(timeout=10)\n")
        done = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
    assert [path for path, _ in received] == ["/api/42/envelope/"], received
    body = received[0][1]
    body = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
    assert b"something broke for the operator to see" in body
