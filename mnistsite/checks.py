"""System checks of the layout, and the start-time check that the database is migrated.

The settings fall back to the one-process layout when no Redis is configured: training runs in a thread
of the serving process, the cache is local memory, the channel layer is in memory. That is right for
``make run`` and wrong for a site on several machines, where each machine would then train, cache and
publish on its own. So:

- ``mnistsite.W001`` (Warning): DEBUG is off and some part fell back to its one-process form; each is
  named. ``SITE_LAYOUT=single`` says that is intended and silences it.
- ``mnistsite.E001`` (Error, ``manage.py check`` and every management command refuse to go on): the
  settings say the site runs on several machines (``SITE_LAYOUT=multi``, or object storage configured:
  ``MEDIA_STORAGE=s3``) but something only works on one (no REDIS_URL, an SQLite database, the thread
  executor, local-memory cache or in-memory channel layer).

``require_migrated()`` is called at start by the production entry points (``python -m mnistsite.serve
http|ws``, ``manage.py worker``, ``manage.py shadow``): migrations are a release step (``make release``),
so a process started against a database that lacks some refuses to serve instead of failing request by
request.
"""
from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor


def single_box_fallbacks() -> list[str]:
    """The parts of the settings that only work inside one process or on one machine."""
    found = []
    if not getattr(settings, "REDIS_URL", ""):
        found.append("no REDIS_URL")
    if settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        found.append("local-memory cache (each process caches, counts throttles and sees the shadow on its own)")
    if settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer":
        found.append("in-memory channel layer (progress reaches only sockets of the process that trains)")
    if getattr(settings, "TRAINING_EXECUTOR", "") == "thread":
        found.append("thread training executor (runs train inside the serving process)")
    return found


def several_machines() -> str | None:
    """Why the settings say the site has several machines, or None."""
    if getattr(settings, "SITE_LAYOUT", "single") == "multi":
        return "SITE_LAYOUT=multi"
    if getattr(settings, "MEDIA_STORAGE", "local") not in ("", "local"):
        return f"MEDIA_STORAGE={settings.MEDIA_STORAGE}"
    return None


@register(Tags.compatibility, deploy=False)
def layout_check(app_configs: Any = None, **kwargs: Any) -> list:
    reason = several_machines()
    if reason is not None:
        mismatched = single_box_fallbacks()
        if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
            mismatched.append("an SQLite database (one file on one machine)")
        if mismatched:
            return [Error(
                f"The settings say the site runs on several machines ({reason}) but these parts only work on "
                f"one: {'; '.join(mismatched)}.",
                hint="Set REDIS_URL (cache, channel layer and Celery broker) and DATABASE_URL to PostgreSQL, "
                     "and leave TRAINING_EXECUTOR unset (or celery).",
                id="mnistsite.E001",
            )]
        return []
    if not settings.DEBUG and getattr(settings, "SITE_LAYOUT", "") != "single":
        fallbacks = single_box_fallbacks()
        if fallbacks:
            return [Warning(
                "DEBUG is off but the site runs in its one-process layout: " + "; ".join(fallbacks) + ". "
                "That is right for one process on one machine only.",
                hint="For the production layout set REDIS_URL (docs/operations/running.md); if one process on "
                     "one machine is intended, say so with SITE_LAYOUT=single.",
                id="mnistsite.W001",
            )]
    return []


def unapplied_migrations(database: str = "default") -> list[str]:
    """``app.migration`` names the database still lacks, in the order they would be applied."""
    connection = connections[database]
    executor = MigrationExecutor(connection)
    targets = executor.loader.graph.leaf_nodes()
    plan = executor.migration_plan(targets)
    return [f"{migration.app_label}.{migration.name}" for migration, backwards in plan if not backwards]


def require_migrated(stream: Any = None) -> None:
    """Exit (status 1) with the list of missing migrations unless the database has them all."""
    stream = stream or sys.stderr
    try:
        missing = unapplied_migrations()
    except DatabaseError as exc:  # unreachable, wrong password...: say so in one line, not a traceback
        print(f"Cannot read the database's migrations ({type(exc).__name__}: {str(exc).strip().splitlines()[0]}). "
              "Refusing to start.", file=stream)
        raise SystemExit(1) from None
    if not missing:
        return
    shown = "\n".join(f"  {name}" for name in missing[:20]) + (
        f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
    print(f"The database lacks {len(missing)} migration{'s' if len(missing) != 1 else ''}:\n{shown}\n"
          "Refusing to start: run `make release` (python manage.py migrate) first.", file=stream)
    raise SystemExit(1)
