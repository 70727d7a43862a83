"""Settings that the one-command run depends on."""
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_so_readers_do_not_block_the_writer():
    if connection.vendor != "sqlite":
        pytest.skip("the suite runs on another database")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0].lower() == "wal"


def test_secret_key_is_required_when_debug_is_off():
    env = {"DEBUG": "false", "SECRET_KEY": "", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='mnistsite.settings'; "
                               "django.setup()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def _setting(name: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='mnistsite.settings'; "
                               f"django.setup(); from django.conf import settings; print(settings.{name})"],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "thread"),  # the one-process run: no other service
    ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "process"),  # the production layout: `manage.py shadow`
    ({"REDIS_URL": "redis://127.0.0.1:6379/0", "SHADOW_WORKER": "thread"}, "thread"),
])
def test_where_the_shadow_runs_follows_the_layout(env, expected):
    result = _setting("SHADOW_WORKER", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_an_unknown_shadow_place_is_refused_at_start():
    result = _setting("SHADOW_WORKER", SHADOW_WORKER="elsewhere")
    assert result.returncode != 0 and "SHADOW_WORKER must be process or thread" in result.stderr
