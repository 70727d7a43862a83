"""The Celery app: configured from Django settings (``CELERY_*``), tasks found in the apps' tasks.py.

Start workers with ``python manage.py worker`` (or ``celery -A mnistsite worker -Q training``).
"""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")

app = Celery("mnistsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
