"""Real services for the integration tests: a Redis server and Celery worker processes on 127.0.0.1.

The worker processes must see the test database that pytest-django created, so these tests use
``django_db(transaction=True)`` (rows are committed, not hidden in a rolled-back transaction) and
give each worker ``DATABASE_URL`` pointing at that database: the ``test_<name>`` database on
PostgreSQL, or the test database *file* on SQLite (settings put SQLite test databases in a file for
this reason). Every wait is bounded.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.processes import free_port, stop  # noqa: F401  (shared with the dashboard tests)

from tests.training.conftest import QUICK_RUN  # noqa: F401  (shared with the training tests)

REPO = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT = 90
REDIS_START_TIMEOUT = 10


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> str:
    """A private redis-server on a free port (no persistence); its URL."""
    import redis

    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [executable, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    while True:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    yield url
    stop(process)


def database_url_for_workers() -> str:
    """The test database as a DATABASE_URL another process can open."""
    from django.db import connection

    config = connection.settings_dict
    vendor = connection.vendor
    if vendor == "sqlite":
        name = str(config["NAME"])
        if connection.creation.is_in_memory_db(name):
            pytest.skip("the SQLite test database is in memory; set TEST_DATABASE_NAME to a file")
        return f"sqlite:///{name}"
    if vendor == "postgresql":
        user = quote(config.get("USER") or "", safe="")
        password = quote(config.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        return f"postgres://{auth}{config.get('HOST') or '127.0.0.1'}:{config.get('PORT') or 5432}/{config['NAME']}"
    pytest.skip(f"no worker database URL for {vendor}")


@pytest.fixture
def celery_worker(redis_server, settings, tmp_path, mnist_root):
    """Start real Celery worker processes (``celery -A mnistsite worker --pool solo``) on the test database.

    This process then queues runs on the same Redis, and its channel layer is Redis too, as a web
    process's would be.
    """
    settings.TRAINING_EXECUTOR = "celery"
    settings.CELERY_BROKER_URL = redis_server
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [redis_server]}}}
    settings.MNIST_ROOT = mnist_root
    settings.TRAINING_REAP_SECONDS = 0
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mnistsite.settings",
            "DATABASE_URL": database_url_for_workers(),
            "REDIS_URL": redis_server,
            "CELERY_BROKER_URL": redis_server,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "MNIST_ROOT": str(mnist_root),
            "TRAINING_HEARTBEAT_SECONDS": "0.5",
            "TRAINING_REAP_SECONDS": "0",
            "TRAINING_TORCH_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("TRAINING_EXECUTOR", None)
        log_path = tmp_path / f"worker-{len(started)}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mnistsite", "worker", "--pool", "solo", "--concurrency", "1",
             "--queues", settings.TRAINING_QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "info"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(process)
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while b" ready." not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                pytest.fail(f"the Celery worker did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.1)
        process.log_path = log_path  # type: ignore[attr-defined]
        return process

    yield start
    for process in started:
        stop(process)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
