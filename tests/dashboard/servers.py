"""The real ASGI server (``make run``'s: Granian serving ``mnistsite.asgi``) in a subprocess on 127.0.0.1,
for tests that watch training through real sockets. Every wait is bounded; only processes started here are stopped."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port, stop, wait_for_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60
# What must never appear in the server's log while sockets come and go.
LOG_PROBLEMS = ("Traceback", "ERROR", "Exception inside application")


@dataclass
class Site:
    url: str  # http://127.0.0.1:<port>
    process: subprocess.Popen
    log_path: Path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_problems(self) -> list[str]:
        return [line for line in self.log().splitlines() if any(problem in line for problem in LOG_PROBLEMS)]


def site_env(**overrides: str) -> dict[str, str]:
    """The environment of a served site: this one's, without anything that picks an executor or a broker."""
    env = {key: value for key, value in os.environ.items()
           if key not in {"TRAINING_EXECUTOR", "CELERY_BROKER_URL", "REDIS_URL", "DATABASE_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "mnistsite.settings", "DEBUG": "true", "PYTHONUNBUFFERED": "1",
                "PREDICT_THROTTLE": "off", "TRAINING_REAP_SECONDS": "0"})
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True,
                          capture_output=True, text=True, timeout=timeout)


@contextmanager
def daphne(*, env: dict[str, str], log_path: Path) -> Iterator[Site]:
    """Serve the site as `make run` does (one process, HTTP and WebSockets) until the block ends."""
    port = free_port()
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mnistsite.serve", "site", "--port", str(port)],  # what `make run` runs
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    site = Site(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        wait_for_port(port, process, timeout=START_TIMEOUT_S, name="daphne", log=site.log)
        yield site
    finally:
        stop(process)
