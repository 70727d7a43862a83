"""The Celery app: configured from Django settings (``CELERY_*``), tasks found in the apps' tasks.py.

Start workers with ``python manage.py worker`` (or ``celery -A mnistsite worker -Q training``), and one
beat per deployment with ``make beat`` (``celery -A mnistsite beat``): its schedule, ``CELERY_BEAT_SCHEDULE``
in the settings, sends the retraining policy's check (``training.policy_schedule``, listed in
``CELERY_IMPORTS``) every ``RETRAIN_POLICY_INTERVAL_SECONDS``.
"""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")

app = Celery("mnistsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
