"""/healthz and /readyz: alive without the database; ready only when every shared part answers, naming the
ones that do not, and saying nothing of hosts, paths or exceptions."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.models import ModelVersion
from tests.production.conftest import redis_server  # noqa: F401  (fixture)
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parent.parent


def test_healthz_answers_without_the_database_or_an_allowed_host(client, settings):
    settings.ALLOWED_HOSTS = ["example.org"]  # a balancer probes by address; no database access is allowed here
    response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 200 and response.json() == {"status": "alive"}
    assert response["Cache-Control"] == "no-store"
    assert client.post("/healthz").status_code == 405


@pytest.fixture
def one_process(settings):
    """The one-process layout's parts (CI's environment may name a Redis of its own)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CELERY_BROKER_URL = ""


@pytest.mark.django_db
def test_readyz_when_everything_answers(client, one_process):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert {"database", "storage", "model"} <= set(body["checks"]) and set(body["checks"].values()) == {"ok"}


@pytest.mark.django_db
def test_readyz_without_an_active_model_is_503_naming_it(client, one_process):
    ModelVersion.objects.update(status=ModelVersion.Status.ARCHIVED)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["model"]


@pytest.mark.django_db
def test_readyz_follows_redis_down_and_back(client, settings, redis_server):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": redis_server.url,
                                   "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
    settings.CELERY_BROKER_URL = redis_server.url
    settings.READYZ_TIMEOUT_SECONDS = 0.5

    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["cache"] == response.json()["checks"]["broker"] == "ok"

    redis_server.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["failing"] == ["cache", "broker"]
    assert body["checks"]["database"] == "ok" and body["checks"]["model"] == "ok"
    assert str(redis_server.port) not in response.content.decode()

    redis_server.start()  # the same port again
    response = client.get("/readyz")
    assert response.status_code == 200, response.content


def test_readyz_with_the_database_unreachable_names_it_and_nothing_more():
    """A real process whose PostgreSQL is not there (nothing listens on its port)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG", "TMPDIR"}}
    env.update({"DATABASE_URL": f"postgres://mnistsite:{secrets.token_hex(8)}@127.0.0.1:{port}/site",
                "DJANGO_SETTINGS_MODULE": "mnistsite.settings"})
    code = ("from django.test import Client\n"
            "r = Client().get('/readyz')\n"
            "print(r.status_code, r.content.decode())\n")
    done = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status, body = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "503"
    reply = json.loads(body)
    assert "database" in reply["failing"]
    for secret in (str(port), "127.0.0.1", "mnistsite", "refused", "postgres", env["DATABASE_URL"].split(":")[2]):
        assert secret not in body, secret
    assert "readyz: database is failing" in done.stderr  # the operator's detail goes to the log
