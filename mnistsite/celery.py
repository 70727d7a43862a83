"""The Celery app: configured from Django settings (``CELERY_*``), tasks found in the apps' tasks.py.

Start workers with ``python manage.py worker`` (or ``celery -A mnistsite worker -Q training``), and beat
with ``make beat`` (``celery -A mnistsite beat``). Beat reads its schedule from the database
(django-celery-beat's ``DatabaseScheduler``, through ``mnistsite.beat.PolicyBeatScheduler``): staff see and
change the retraining policy's interval in the admin (Periodic tasks). ``seed_beat_schedule`` creates
that entry after ``migrate`` (``make release``) from ``RETRAIN_POLICY_INTERVAL_SECONDS`` when it is
missing, and leaves it alone when it exists, so a change made in the admin stays.

One beat per deployment is the plan; a second one by mistake is harmless: the scheduler sends an entry
only if no beat sent it within the last part of its interval, and the policy's check itself runs at most
once per interval (``mnistsite.beat.claim``, a Redis key shared by all machines).
"""
from __future__ import annotations

import math
import os
from typing import Any

from celery import Celery
from django.apps import apps as installed_apps
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")

app = Celery("mnistsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

POLICY_ENTRY = "retrain-policy"
POLICY_TASK = "training.policy_check"


def seed_beat_schedule(*, apps: Any = None, using: str = "default", **kwargs: Any) -> bool:
    """``post_migrate``: the policy's periodic task, from the settings, unless it exists; whether it was made.

    ``migrate`` passes its historical ``apps``; ``flush`` (a test database emptied between transactional
    tests) sends ``post_migrate`` without them, and then the installed models are used."""
    apps = installed_apps if apps is None else apps
    try:
        periodic_task = apps.get_model("django_celery_beat", "PeriodicTask")
        interval_schedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    except LookupError:  # django-celery-beat's tables are not migrated yet
        return False
    if periodic_task.objects.using(using).filter(name=POLICY_ENTRY).exists():
        return False
    seconds = max(1, math.ceil(settings.RETRAIN_POLICY_INTERVAL_SECONDS))
    every, _ = interval_schedule.objects.using(using).get_or_create(every=seconds, period="seconds")
    _, created = periodic_task.objects.using(using).get_or_create(
        name=POLICY_ENTRY,
        defaults={"task": POLICY_TASK, "interval": every, "queue": settings.TRAINING_QUEUE,
                  "expire_seconds": seconds,
                  "description": "The retraining policy's check (training.policy); one is sent per interval."},
    )
    return created
