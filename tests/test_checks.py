"""The layout's system checks: a loud warning for a silent one-process fallback, an error for a site that
says it has several machines but is configured for one, nothing for a correctly configured production."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from mnistsite.checks import layout_check

REPO = Path(__file__).resolve().parent.parent

ONE_BOX = {
    "REDIS_URL": "",
    "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "TRAINING_EXECUTOR": "thread",
}


def _apply(settings, values):
    for name, value in values.items():
        setattr(settings, name, value)


def test_debug_off_without_redis_warns_naming_each_fallback(settings):
    _apply(settings, {**ONE_BOX, "DEBUG": False, "SITE_LAYOUT": ""})
    [warning] = layout_check()
    assert warning.id == "mnistsite.W001" and warning.level == 30
    for part in ("no REDIS_URL", "local-memory cache", "in-memory channel layer", "thread training executor"):
        assert part in warning.msg


def test_debug_on_or_one_box_said_aloud_does_not_warn(settings):
    _apply(settings, {**ONE_BOX, "DEBUG": True, "SITE_LAYOUT": ""})
    assert layout_check() == []
    _apply(settings, {"DEBUG": False, "SITE_LAYOUT": "single"})
    assert layout_check() == []


@pytest.mark.parametrize("reason", [{"SITE_LAYOUT": "multi"}, {"SITE_LAYOUT": "", "MEDIA_STORAGE": "s3"}])
def test_several_machines_with_one_box_parts_is_an_error(settings, reason):
    _apply(settings, {**ONE_BOX, "DEBUG": False, **reason})
    [error] = layout_check()
    assert error.id == "mnistsite.E001" and error.level == 40
    assert "no REDIS_URL" in error.msg and "thread training executor" in error.msg
    on_sqlite = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert ("SQLite" in error.msg) == on_sqlite


def _check(**env: str) -> subprocess.CompletedProcess:
    keep = {key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG", "TMPDIR"}}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**keep, "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50),
                                            "ALLOWED_HOSTS": "example.org", **env})


def test_manage_check_as_an_operator_runs_it():
    """Real processes, real environments: production is clean, a mismatch refuses (the warning's wording is
    checked in process above)."""
    production = _check(REDIS_URL="redis://127.0.0.1:6379/0", DATABASE_URL="postgres://site@127.0.0.1:5432/site",
                        SITE_LAYOUT="multi")
    assert production.returncode == 0, production.stderr
    assert "mnistsite.W001" not in production.stderr + production.stdout
    assert "mnistsite.E001" not in production.stderr + production.stdout

    mismatch = _check(SITE_LAYOUT="multi", DATABASE_URL="")
    assert mismatch.returncode != 0
    assert "mnistsite.E001" in mismatch.stderr and "SQLite" in mismatch.stderr
