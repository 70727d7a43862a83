"""Production settings: what a production start needs, what it refuses, and Django's deploy checks.

Each settings case runs in a fresh interpreter (settings are read once, at import), with an environment
built from deploy/mnistsite.env.example: what the production steps tell an operator to set.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mnistsite import serve
from mnistsite.settings import DEVELOPMENT_SECRET_KEY, secret_key_problem

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "mnistsite.env.example"


def example_env() -> dict[str, str]:
    values = {}
    for line in EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


PLACEHOLDER = example_env()["SECRET_KEY"]


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The example's environment with a fresh key, and local paths instead of the example's servers."""
    env = {**example_env(), "SECRET_KEY": secrets.token_urlsafe(50),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "MEDIA_ROOT": str(tmp_path / "media"),
           "STATIC_ROOT": str(tmp_path / "static"), "MNIST_ROOT": str(tmp_path / "datasets")}
    env.update(overrides)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DJANGO_SETTINGS_MODULE": "mnistsite.settings", **env}


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def settings_of(env: dict[str, str], *names: str) -> subprocess.CompletedProcess:
    code = ("import django; django.setup(); from django.conf import settings; "
            f"print(*[repr(getattr(settings, n, None)) for n in {list(names)!r}], sep='\\n')")
    return run(["-c", code], env)


def test_the_production_settings_pass_django_deploy_checks_without_a_warning(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout + result.stderr


def test_behind_the_tls_proxy_cookies_are_secure_and_hsts_is_sent(tmp_path):
    result = settings_of(production_env(tmp_path), "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
                         "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_PROXY_SSL_HEADER", "DEBUG")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:7] == [
        "True", "True", "True", "31536000", "True", "('HTTP_X_FORWARDED_PROTO', 'https')", "False"]


def test_the_hsts_lifetime_comes_from_the_environment(tmp_path):
    result = settings_of(production_env(tmp_path, SECURE_HSTS_SECONDS="3600"), "SECURE_HSTS_SECONDS")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3600"


@pytest.mark.parametrize("key", [PLACEHOLDER, DEVELOPMENT_SECRET_KEY, "", "django-insecure-" + "x1y2z3" * 10,
                                 "short-key-1234", "ab" * 40, "change-me-" + secrets.token_urlsafe(40)])
def test_known_bad_and_weak_secret_keys_are_refused(key):
    assert secret_key_problem(key) is not None


@pytest.mark.parametrize("key", [secrets.token_urlsafe(32), secrets.token_urlsafe(50), secrets.token_hex(32)])
def test_random_keys_are_accepted(key):
    assert secret_key_problem(key) is None


def test_the_placeholder_key_of_the_example_stops_the_site_from_starting(tmp_path):
    result = run(["manage.py", "check"], production_env(tmp_path, SECRET_KEY=PLACEHOLDER))
    assert result.returncode != 0
    assert "SECRET_KEY is a published placeholder or development key" in result.stderr


def test_a_short_key_stops_the_site_from_starting(tmp_path):
    result = run(["manage.py", "check"], production_env(tmp_path, SECRET_KEY="0123456789abcdef"))
    assert result.returncode != 0 and "SECRET_KEY is too weak" in result.stderr


def test_debug_on_keeps_working_with_no_secret_key_for_the_quick_start(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DJANGO_SETTINGS_MODULE": "mnistsite.settings"}
    result = settings_of(env, "DEBUG", "SECRET_KEY", "SESSION_COOKIE_SECURE")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["True", repr(DEVELOPMENT_SECRET_KEY), "False"]


# ---------------------------------------------------------------- the production entry points


@pytest.mark.parametrize("role", ["http", "ws"])
@pytest.mark.parametrize("debug", [None, "true", ""])
def test_serve_http_and_ws_refuse_to_start_unless_debug_is_explicitly_off(tmp_path, role, debug):
    env = production_env(tmp_path)
    env.pop("DEBUG")
    if debug is not None:
        env["DEBUG"] = debug
    result = run(["-m", "mnistsite.serve", role, "--port", "1"], env)  # port 1: it must not get as far as binding
    assert result.returncode != 0
    assert f"python -m mnistsite.serve {role} is a production entry point and needs DEBUG=false" in result.stderr


def test_serve_http_with_the_placeholder_key_refuses_once_before_starting_any_worker(tmp_path):
    result = run(["-m", "mnistsite.serve", "http", "--port", "1"], production_env(tmp_path, SECRET_KEY=PLACEHOLDER))
    assert result.returncode != 0
    assert "python -m mnistsite.serve http: SECRET_KEY is a published placeholder" in result.stderr
    assert "granian" not in result.stderr.lower()  # refused by the launcher, not by each server worker


def test_serve_site_the_quick_start_needs_no_environment(monkeypatch):
    started = []
    monkeypatch.delenv("DEBUG", raising=False)
    monkeypatch.setattr(serve.os, "execv", lambda path, argv: started.append(argv))
    serve.main(["site", "--port", "8123"])
    assert started and "mnistsite.asgi:application" in started[0]


def test_serve_http_starts_with_debug_off(monkeypatch, db, tmp_path):
    started = []
    monkeypatch.setenv("DEBUG", "false")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # serve sets it for its workers: restored after
    monkeypatch.setattr(serve.os, "execv", lambda path, argv: started.append(argv))
    serve.main(["http", "--port", "8123"])
    assert started and "mnistsite.wsgi:application" in started[0]


def test_the_worker_command_refuses_to_start_unless_debug_is_explicitly_off(settings, monkeypatch):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    monkeypatch.delenv("DEBUG", raising=False)
    monkeypatch.setattr(os, "execv", lambda *args: pytest.fail("the worker must not start"))
    with pytest.raises(CommandError, match="manage.py worker is a production entry point and needs DEBUG=false"):
        call_command("worker")
