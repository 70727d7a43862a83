"""The production layout, run as an operator runs it: DEBUG off, Redis as channel layer, cache and
broker, the servers started through ``python -m mnistsite.serve`` (what ``make serve`` runs), a
database of their own (PostgreSQL when the suite runs on it, else an SQLite file).

These tests use no test database of pytest's: they talk to the servers over HTTP and WebSockets and
look at the served database through ``manage.py shell``. Every wait is bounded and everything runs
on 127.0.0.1; only processes started here are stopped.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tests.support.processes import free_port, stop, wait_for_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90
LOG_PROBLEMS = ("Traceback", "Exception inside application", "MaxConnectionsError", "TimeoutError")


@dataclass
class RedisServer:
    """A private redis-server that a test may stop and start again on the same port."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--maxclients", "10000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=10)
            self.process = None


def on_postgresql() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


# The full production layout (sockets by the thousand, Redis outages) is checked where it runs: on
# PostgreSQL (CI's second pass). The one-process layout's checks run on either database.
needs_postgresql = pytest.mark.skipif(not on_postgresql(), reason="the production layout runs on PostgreSQL "
                                                                  "(set DATABASE_URL to a PostgreSQL server)")


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(folder=tmp_path)
    server.start()
    yield server
    server.stop()


def _own_database_url(tmp_path: Path) -> tuple[str, callable]:
    """A fresh database for the served site, next to the suite's own: PostgreSQL if the suite runs on it."""
    suite = os.environ.get("DATABASE_URL", "")
    if suite.startswith(("postgres://", "postgresql://")):
        import psycopg

        parts = urlsplit(suite)
        name = f"mnistsite_prod_{uuid.uuid4().hex[:10]}"
        admin = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return urlunsplit(parts._replace(path=f"/{name}")), drop
    return f"sqlite:///{tmp_path / 'site.sqlite3'}", lambda: None


@dataclass
class Deployment:
    env: dict[str, str]
    folder: Path

    def manage(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "--no-imports", "-c", code).strip()

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Read the served database directly (cheaper than a Django process per look)."""
        url = self.env["DATABASE_URL"]
        if url.startswith("sqlite:///"):
            import sqlite3

            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                return conn.execute(sql.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(url) as conn:
            return conn.execute(sql, params).fetchall()

    def staff_token(self) -> str:
        return self.shell(
            "from django.contrib.auth import get_user_model\n"
            "from rest_framework.authtoken.models import Token\n"
            "user = get_user_model().objects.create_user('operator', is_staff=True)\n"
            "print(Token.objects.create(user=user).key)"
        ).splitlines()[-1]

    @contextmanager
    def serve(self, role: str, *extra: str, **env: str) -> Iterator[str]:
        """``python -m mnistsite.serve ROLE`` on a free port until the block ends; yields its base URL."""
        port = free_port()
        log_path = self.folder / f"{role}-{port}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mnistsite.serve", role, "--port", str(port), *extra],
                cwd=REPO, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT,
            )
        self.logs.append(log_path)
        try:
            wait_for_port(port, process, timeout=START_TIMEOUT_S, name=role, log=lambda: log_path.read_text())
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process, timeout=20)

    logs: list[Path] = field(default_factory=list)

    def log_problems(self) -> list[str]:
        return [line for path in self.logs for line in path.read_text(errors="replace").splitlines()
                if any(problem in line for problem in LOG_PROBLEMS)]


@pytest.fixture
def deployment(tmp_path, redis_server) -> Iterator[Deployment]:
    """Settings as production has them, a migrated database of its own, media in a temp folder."""
    database_url, drop = _own_database_url(tmp_path)
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "MNIST_ROOT", "PYTHONPATH", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep}
    env.update({
        "DJANGO_SETTINGS_MODULE": "mnistsite.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "PYTHONUNBUFFERED": "1",
        "WEB_WORKERS": "2",
    })
    (tmp_path / "static").mkdir()
    site = Deployment(env=env, folder=tmp_path)
    site.manage("migrate", "--noinput", "-v", "0")
    try:
        yield site
    finally:
        drop()
